package storage

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

const (
	defaultListLimit = 50
	maxListLimit     = 1000
	// listScanBudget bounds the index entries one List call examines, so that
	// a rare DIN/state among millions of records cannot make one call slow.
	// When it runs out, List returns what it found and a cursor to go on.
	listScanBudget = 20000
	cursorV1       = 1
)

func encodeCursor(i id) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{cursorV1}, i[:]...))
}

func decodeCursor(c string) (id, error) {
	var i id
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 1+idLen || b[0] != cursorV1 {
		return i, ErrBadCursor
	}
	copy(i[:], b[1:])
	return i, nil
}

// List returns deliveries newest first. A non-empty nextCursor means there
// may be more: pass it back in Filter.Cursor. A page can hold fewer than
// Limit items and still have a cursor when the scan budget ran out.
func (s *Store) List(f Filter) (items []Delivery, nextCursor string, err error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListLimit)
	if f.State != "" && !f.State.Valid() {
		return nil, "", fmt.Errorf("list: unknown state %q", f.State)
	}
	if f.DIN != "" {
		if err := CheckDIN(f.DIN); err != nil {
			return nil, "", fmt.Errorf("list: %w", err)
		}
	}
	var after *id // exclusive upper bound from the cursor
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("list: %w", err)
		}
		after = &c
	}

	// Records are keyed by id, and ids sort by creation time; the DIN and the
	// state are filters on the decoded record (the scan budget bounds them).
	prefix := []byte{pfxDelivery}
	var sinceNs, untilNs int64
	if !f.Since.IsZero() {
		sinceNs = f.Since.UnixNano()
	}
	if !f.Until.IsZero() {
		untilNs = f.Until.UnixNano()
	}
	// Seek to the newest key allowed: before the cursor, or before Until.
	seek := append(append([]byte(nil), prefix...), 0xff)
	if after != nil {
		seek = append(append([]byte(nil), prefix...), after[:]...)
	} else if untilNs != 0 {
		var t [8]byte
		binary.BigEndian.PutUint64(t[:], uint64(max(untilNs, 0)))
		seek = append(append([]byte(nil), prefix...), t[:]...)
	}

	fresh := s.freshListed(f, after) // before Badger: see freshreads.go
	err = s.read(func() error {
		return s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true, PrefetchValues: false})
			defer it.Close()
			budget := listScanBudget
			var last id
			for it.Seek(seek); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()
				if len(k) != len(prefix)+idLen {
					return fmt.Errorf("bad record key %x", k)
				}
				var i id
				copy(i[:], k[len(prefix):])
				if after != nil && i == *after {
					continue
				}
				ns := int64(binary.BigEndian.Uint64(i[:8]))
				if untilNs != 0 && ns >= untilNs {
					continue
				}
				if sinceNs != 0 && ns < sinceNs {
					return nil
				}
				if budget == 0 {
					nextCursor = encodeCursor(last)
					return nil
				}
				budget--
				last = i
				d, match, err := listMatch(item, i, f)
				if err != nil {
					return err
				}
				if !match {
					continue
				}
				items = append(items, d)
				if len(items) == limit {
					nextCursor = encodeCursor(i)
					return nil
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, "", fmt.Errorf("list: %w", err)
	}
	items, nextCursor = mergeList(items, nextCursor, fresh, limit)
	return items, nextCursor, nil
}

// listMatch decodes the record of an item and applies the filter.
func listMatch(item *badger.Item, i id, f Filter) (Delivery, bool, error) {
	d, err := itemRecord(item, i)
	if err != nil {
		return Delivery{}, false, err
	}
	if (f.DIN != "" && d.DIN != f.DIN) || (f.State != "" && d.State != f.State) {
		return Delivery{}, false, nil
	}
	return d, true, nil
}
