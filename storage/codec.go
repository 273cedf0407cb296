package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Records are encoded in a small binary form (varints, length-prefixed
// strings) rather than JSON: a delivered record is kept for the retention
// period, and a third of the size means a third of the disk and compaction.
// The first byte is a format version so that the layout can evolve.
const recordV1 = 1

// maxAttempts bounds a record: only the most recent attempts are kept.
const maxAttempts = 100

// maxErrorText bounds LastError / attempt errors (they are short reasons).
const maxErrorText = 256

var errCorrupt = errors.New("corrupt record")

type encoder struct{ b []byte }

func (e *encoder) byte(v byte)      { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }

// time encodes zero as 0 so that zero times survive a round trip.
func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.varint(0)
		return
	}
	e.varint(t.UnixNano())
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads the length of a list whose items take a byte at least: a
// corrupt count larger than the bytes left fails rather than allocate.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil || uint64(len(d.b)) < n {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) time() time.Time {
	ns := d.varint()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// norm drops the monotonic reading and location so that a record compares
// equal to its decoded copy.
func norm(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.Unix(0, t.UnixNano()).UTC()
}

func clip(s string) string {
	if len(s) <= maxErrorText {
		return s
	}
	// Cut on a rune boundary so the text stays valid UTF-8.
	cut := maxErrorText
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}

var stateCodes = map[State]byte{StatePending: 1, StateDelivered: 2, StateSpooled: 3, StateFailed: 4, StateHeld: 5, StateCancelled: 6}
var codeStates = map[byte]State{1: StatePending, 2: StateDelivered, 3: StateSpooled, 4: StateFailed, 5: StateHeld, 6: StateCancelled}

func encodeRecord(d *Delivery) []byte {
	e := encoder{b: make([]byte, 0, 96+len(d.DIN)+len(d.ContentType)+len(d.SpoolFile)+len(d.LastError)+24*len(d.Attempts))}
	e.byte(recordV1)
	e.byte(stateCodes[d.State])
	e.str(d.DIN)
	e.time(d.Created)
	e.time(d.Updated)
	e.time(d.NextAttempt)
	e.str(d.ContentType)
	e.uvarint(uint64(d.Size))
	if d.HasPayload {
		e.byte(1)
	} else {
		e.byte(0)
	}
	e.str(d.SpoolFile)
	e.str(d.LastError)
	e.uvarint(uint64(len(d.Attempts)))
	for _, a := range d.Attempts {
		e.time(a.At)
		e.uvarint(uint64(a.Status))
		e.str(a.Error)
		e.varint(int64(a.Duration))
	}
	return e.b
}

func decodeRecord(i id, b []byte) (Delivery, error) {
	d := decoder{b: b}
	if v := d.byte(); v != recordV1 && d.err == nil {
		return Delivery{}, fmt.Errorf("delivery %s: unknown record version %d", i, v)
	}
	r := Delivery{ID: i.String()}
	st, ok := codeStates[d.byte()]
	if !ok {
		d.fail()
	}
	r.State = st
	r.DIN = d.str()
	r.Created = d.time()
	r.Updated = d.time()
	r.NextAttempt = d.time()
	r.ContentType = d.str()
	r.Size = int(d.uvarint())
	r.HasPayload = d.byte() == 1
	r.SpoolFile = d.str()
	r.LastError = d.str()
	n := d.uvarint()
	if n > maxAttempts {
		d.fail()
	}
	if d.err == nil && n > 0 {
		r.Attempts = make([]Attempt, 0, n)
		for range n {
			var a Attempt
			a.At = d.time()
			a.Status = int(d.uvarint())
			a.Error = d.str()
			a.Duration = time.Duration(d.varint())
			r.Attempts = append(r.Attempts, a)
		}
	}
	if d.err != nil {
		return Delivery{}, fmt.Errorf("delivery %s: %w", i, d.err)
	}
	return r, nil
}

// dinCounters is what is kept per DIN, in memory and under the s/ key.
type dinCounters struct {
	Pending, Delivered, Failed, Spooled int64
	LastSuccess                         time.Time
	LastError                           time.Time
	LastErrorText                       string
	Held, Cancelled                     int64 // encoded last: older stores lack them
}

func (c *dinCounters) add(st State, n int64) {
	switch st {
	case StatePending:
		c.Pending += n
	case StateDelivered:
		c.Delivered += n
	case StateFailed:
		c.Failed += n
	case StateSpooled:
		c.Spooled += n
	case StateHeld:
		c.Held += n
	case StateCancelled:
		c.Cancelled += n
	}
}

func (c *dinCounters) isZero() bool { return *c == dinCounters{} }

// maxCountersLen bounds an encoded dinCounters (for transaction sizing).
const maxCountersLen = 1 + 4*binary.MaxVarintLen64 + 2*binary.MaxVarintLen64 + binary.MaxVarintLen64 + maxErrorText + 2*binary.MaxVarintLen64

func encodeCounters(c *dinCounters) []byte {
	e := encoder{}
	e.byte(recordV1)
	e.varint(c.Pending)
	e.varint(c.Delivered)
	e.varint(c.Failed)
	e.varint(c.Spooled)
	e.time(c.LastSuccess)
	e.time(c.LastError)
	e.str(c.LastErrorText)
	e.varint(c.Held)
	e.varint(c.Cancelled)
	return e.b
}

func decodeCounters(b []byte) (dinCounters, error) {
	d := decoder{b: b}
	if d.byte() != recordV1 {
		d.fail()
	}
	var c dinCounters
	c.Pending = d.varint()
	c.Delivered = d.varint()
	c.Failed = d.varint()
	c.Spooled = d.varint()
	c.LastSuccess = d.time()
	c.LastError = d.time()
	c.LastErrorText = d.str()
	if len(d.b) > 0 { // written since only_accepted
		c.Held = d.varint()
		c.Cancelled = d.varint()
	}
	return c, d.err
}

// hourCounts is one hourly bucket's value.
type hourCounts struct {
	Attempts, Successes, Delivered, Failed, Spooled int64
}

func (h *hourCounts) addAll(o hourCounts) {
	h.Attempts += o.Attempts
	h.Successes += o.Successes
	h.Delivered += o.Delivered
	h.Failed += o.Failed
	h.Spooled += o.Spooled
}

const maxHourLen = 1 + 5*binary.MaxVarintLen64

func encodeHour(h hourCounts) []byte {
	e := encoder{}
	e.byte(recordV1)
	e.varint(h.Attempts)
	e.varint(h.Successes)
	e.varint(h.Delivered)
	e.varint(h.Failed)
	e.varint(h.Spooled)
	return e.b
}

func decodeHour(b []byte) (hourCounts, error) {
	d := decoder{b: b}
	if d.byte() != recordV1 {
		d.fail()
	}
	var h hourCounts
	h.Attempts = d.varint()
	h.Successes = d.varint()
	h.Delivered = d.varint()
	h.Failed = d.varint()
	h.Spooled = d.varint()
	return h, d.err
}
