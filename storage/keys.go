package storage

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// Key layout. Every key starts with one prefix byte; DINs are length-prefixed
// so that "10" is never a prefix of "100"; times are 8 bytes big-endian so
// that byte order is time order; ids are 16 raw bytes (8 bytes creation time
// in ns, 8 random bytes), so byte order is creation order.
//
//	d id                      → delivery record (codec.go), no payload
//	p id                      → payload
//	q len din next_attempt id → nothing: the due index, pending deliveries only
//	o id                      → nothing: the held index (only_accepted), held deliveries only
//	s len din                 → persisted per-DIN counters (codec.go)
//	h hour len din            → hourly bucket (codec.go)
//	r key                     → dedupe record: 8-byte expiry (ns, 0 = none) + value
//	m name                    → store metadata (schema version)
//
// and, in the notification log's own database (notificationdb.go):
//
//	n id                      → notification log record (notificationcodec.go)
//
// The retained history is the d records alone, which are written in id order,
// so Badger's flushes and compactions touch only their newest end. Schema 1
// also kept a per-DIN index (i) and an expiry index (x) of every record; each
// memtable flush then spanned both indexes, and every compaction into the
// base level rewrote their whole history (docs/performance-history.md, section 2). Lists
// filter the records instead, and Purge walks them from the oldest.
const (
	pfxDelivery = 'd'
	pfxPayload  = 'p'
	pfxDue      = 'q'
	pfxHeld     = 'o'
	pfxStats    = 's'
	pfxHour     = 'h'
	pfxDedupe   = 'r'
	pfxMeta     = 'm'
	// pfxNotification is the notification log (its own database; the
	// queue's held it before, and Open moves what it still holds).
	pfxNotification = 'n'
)

// schema1Indexes are the prefixes of schema 1's indexes, dropped when a
// schema 1 store is opened.
var schema1Indexes = [][]byte{{'i'}, {'x'}}

const idLen = 16

// A DIN must fit its one-byte length prefix (CheckDIN bounds it).
const _ = uint8(MaxDINLen)

type id [idLen]byte

func (i id) String() string { return hex.EncodeToString(i[:]) }

// time is the creation time encoded in the id.
func (i id) time() time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(i[:8]))).UTC()
}

func parseID(s string) (id, bool) {
	var i id
	if len(s) != 2*idLen {
		return i, false
	}
	if _, err := hex.Decode(i[:], []byte(s)); err != nil {
		return i, false
	}
	return i, true
}

// newID makes an id whose time part is ns; the random half keeps ids
// unguessable and unique even if two stores ever merged.
func newID(ns int64) id {
	var i id
	binary.BigEndian.PutUint64(i[:8], uint64(ns))
	_, _ = rand.Read(i[8:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return i
}

// ts encodes t so that byte order is time order, negative times included.
func ts(t time.Time) [8]byte {
	var b [8]byte
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	binary.BigEndian.PutUint64(b[:], uint64(ns)^(1<<63))
	return b
}

func parseTS(b []byte) time.Time {
	ns := int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
	return time.Unix(0, ns).UTC()
}

// dinPrefix is pfx, len(din), din.
func dinPrefix(pfx byte, din string) []byte {
	k := make([]byte, 0, 2+len(din)+8+idLen)
	k = append(k, pfx, byte(len(din)))
	return append(k, din...)
}

// readDIN parses len+din at b, returning the DIN and the rest.
func readDIN(b []byte) (string, []byte, bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, false
	}
	n := int(b[0])
	return string(b[1 : 1+n]), b[1+n:], true
}

func deliveryKey(i id) []byte { return append([]byte{pfxDelivery}, i[:]...) }
func payloadKey(i id) []byte  { return append([]byte{pfxPayload}, i[:]...) }

func heldKey(i id) []byte { return append([]byte{pfxHeld}, i[:]...) }

func dueKey(din string, next time.Time, i id) []byte {
	t := ts(next)
	return append(append(dinPrefix(pfxDue, din), t[:]...), i[:]...)
}

// parseDueKey returns the next-attempt time and id of a due key whose DIN
// prefix is plen bytes long.
func parseDueKey(k []byte, plen int) (time.Time, id, bool) {
	var i id
	if len(k) != plen+8+idLen {
		return time.Time{}, i, false
	}
	copy(i[:], k[plen+8:])
	return parseTS(k[plen : plen+8]), i, true
}

// dueEnd sorts after every due key of the DIN.
func dueEnd(din string) []byte {
	return append(dinPrefix(pfxDue, din), bytes.Repeat([]byte{0xff}, 8+idLen+1)...)
}

func statsKey(din string) []byte { return dinPrefix(pfxStats, din) }

// hourKey orders buckets by hour, then DIN.
func hourKey(hour time.Time, din string) []byte {
	t := ts(hour)
	k := append([]byte{pfxHour}, t[:]...)
	return append(k, append([]byte{byte(len(din))}, din...)...)
}

func parseHourKey(k []byte) (time.Time, string, bool) {
	if len(k) < 1+8+1 || k[0] != pfxHour {
		return time.Time{}, "", false
	}
	din, rest, ok := readDIN(k[9:])
	if !ok || len(rest) != 0 {
		return time.Time{}, "", false
	}
	return parseTS(k[1:9]), din, true
}

func dedupeKey(key []byte) []byte { return append([]byte{pfxDedupe}, key...) }

func metaKey(name string) []byte { return append([]byte{pfxMeta}, name...) }
