package storage

import (
	"encoding/binary"
	"fmt"
)

// A journal entry is one new delivery: its id, its record as written at
// enqueue (codec.go) and its payload, sealed as a whole when the store is
// encrypted:
//
//	version(1) id(16) uvarint(len(record)) record payload
const journalFrameV1 = 1

// journaled is one delivery as the journal holds it.
type journaled struct {
	id      id
	rec     Delivery
	payload []byte
}

func (j *journal) frame(e journaled) []byte {
	rec := encodeRecord(&e.rec)
	b := make([]byte, 0, 1+idLen+binary.MaxVarintLen64+len(rec)+len(e.payload))
	b = append(b, journalFrameV1)
	b = append(b, e.id[:]...)
	b = binary.AppendUvarint(b, uint64(len(rec)))
	b = append(b, rec...)
	b = append(b, e.payload...)
	if j.seal == nil {
		return b
	}
	return j.seal.seal(make([]byte, 0, len(b)+32), b)
}

func (j *journal) unframe(b []byte) (journaled, error) {
	var e journaled
	if j.seal != nil {
		var err error
		if b, err = j.seal.open(b); err != nil {
			return e, err
		}
	}
	if len(b) < 1+idLen || b[0] != journalFrameV1 {
		return e, fmt.Errorf("%w: unknown layout", errJournalEntry)
	}
	copy(e.id[:], b[1:1+idLen])
	b = b[1+idLen:]
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return e, fmt.Errorf("%w: bad record length", errJournalEntry)
	}
	rec, err := decodeRecord(e.id, b[k:k+int(n)])
	if err != nil {
		return e, fmt.Errorf("%w: %v", errJournalEntry, err)
	}
	e.rec = rec
	e.payload = b[k+int(n):]
	return e, nil
}
