package storage

import (
	"errors"
	"fmt"
	"sort"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Get returns the record of a delivery (never its payload).
func (s *Store) Get(id string) (Delivery, error) {
	i, ok := parseID(id)
	if !ok {
		return Delivery{}, fmt.Errorf("get %q: %w", id, ErrNotFound)
	}
	var d Delivery
	err := s.read(func() error {
		if s.fresh != nil {
			var ok bool
			if d, ok = s.fresh.get(i); ok {
				return nil
			}
		}
		return s.db.View(func(txn *badger.Txn) error {
			var err error
			d, err = getRecord(txn, i)
			return err
		})
	})
	if err != nil {
		return Delivery{}, fmt.Errorf("get %s: %w", id, err)
	}
	return d, nil
}

func getRecord(txn *badger.Txn, i id) (Delivery, error) {
	item, err := txn.Get(deliveryKey(i))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Delivery{}, ErrNotFound
	}
	if err != nil {
		return Delivery{}, err
	}
	return itemRecord(item, i)
}

// itemRecord decodes the record an iterator or Get found.
func itemRecord(item *badger.Item, i id) (Delivery, error) {
	var d Delivery
	err := item.Value(func(v []byte) error {
		var err error
		d, err = decodeRecord(i, v)
		return err
	})
	return d, err
}

// Payload returns the payload of a delivery; ErrNotFound once it is deleted.
func (s *Store) Payload(id string) ([]byte, error) {
	i, ok := parseID(id)
	if !ok {
		return nil, fmt.Errorf("payload %q: %w", id, ErrNotFound)
	}
	var p []byte
	err := s.read(func() error {
		if s.fresh != nil {
			var ok bool
			if p, ok = s.fresh.payload(i); ok {
				return nil
			}
		}
		return s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(payloadKey(i))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
			p, err = item.ValueCopy(nil)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("payload %s: %w", id, err)
	}
	return p, nil
}

// Due returns up to limit pending deliveries of din whose next attempt is at
// or before now, earliest first. It reads the due index from a remembered
// position (hints.go), so its cost is O(limit), not O(deleted entries).
func (s *Store) Due(din string, now time.Time, limit int) ([]Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	var fresh, out []Delivery
	err := s.read(func() error {
		if s.fresh != nil {
			fresh = s.fresh.due(din, now, limit)
			if !s.storedPending(din) {
				return nil
			}
		}
		prefix := dinPrefix(pfxDue, din)
		return s.scanIndex(prefix, dueEnd(din), func(txn *badger.Txn, k []byte) (bool, error) {
			next, i, ok := parseDueKey(k, len(prefix))
			if !ok {
				return false, fmt.Errorf("bad due key %x", k)
			}
			if next.After(now) {
				return false, nil
			}
			d, err := getRecord(txn, i)
			if errors.Is(err, ErrNotFound) {
				s.log.Warn("due index points to a missing delivery", "id", i.String(), "din", din)
				return true, nil
			}
			if err != nil {
				return false, err
			}
			out = append(out, d)
			return len(out) < limit, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("due %s: %w", din, err)
	}
	return mergeDue(fresh, out, limit), nil
}

// firstDue returns the next attempt time and id at the head of din's due index.
func (s *Store) firstDue(din string) (time.Time, id, bool, error) {
	var (
		next  time.Time
		first id
		found bool
	)
	prefix := dinPrefix(pfxDue, din)
	err := s.scanIndex(prefix, dueEnd(din), func(_ *badger.Txn, k []byte) (bool, error) {
		var ok bool
		next, first, ok = parseDueKey(k, len(prefix))
		if !ok {
			return false, fmt.Errorf("bad due key %x", k)
		}
		found = true
		return false, nil
	})
	return next, first, found, err
}

// NextDue returns the earliest next attempt among din's pending deliveries.
func (s *Store) NextDue(din string) (time.Time, bool) {
	var (
		next  time.Time
		found bool
	)
	var stored time.Time
	var inStore bool
	err := s.read(func() error {
		if s.fresh != nil {
			next, _, found = s.fresh.first(din)
			if !s.storedPending(din) {
				return nil
			}
		}
		var err error
		stored, _, inStore, err = s.firstDue(din)
		return err
	})
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			s.log.Warn("reading the due index failed", "din", din, "error", err)
		}
		return next, found
	}
	if inStore && (!found || stored.Before(next)) {
		next, found = stored, true
	}
	return next, found
}

// PendingDINs returns the DINs that have pending deliveries, sorted.
func (s *Store) PendingDINs() ([]string, error) {
	if err := s.read(func() error { return nil }); err != nil {
		return nil, err
	}
	s.countersMu.Lock()
	var dins []string
	for din, c := range s.counters {
		if c.Pending > 0 {
			dins = append(dins, din)
		}
	}
	if s.fresh != nil {
		for din := range s.fresh.counts() {
			if c := s.counters[din]; c == nil || c.Pending <= 0 {
				dins = append(dins, din)
			}
		}
	}
	s.countersMu.Unlock()
	sort.Strings(dins)
	return dins, nil
}
