package storage

import (
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Held deliveries (secondary_post's only_accepted) are written, synced,
// before the script runs, like pending ones, but wait outside the due index
// until the script has answered: Release makes them pending, Cancel drops
// their payload. Neither needs a synced commit of its own: a held delivery
// whose answer was lost in a crash is released when the store is next
// opened by the engine (HeldIDs), so at-least-once wins over "accepted only".

// Release makes held deliveries pending, due at now (zero: the store's
// clock). Those no longer held, or gone, are skipped. It returns the
// deliveries it made pending.
func (s *Store) Release(ids []string, now time.Time) ([]Delivery, error) {
	return s.resolveHeld("release", ids, &resolveHeldOp{release: true, now: norm(now)})
}

// Cancel marks held deliveries cancelled, with reason as their last error,
// and deletes their payload; the record stays for the retention period.
// Those no longer held, or gone, are skipped.
func (s *Store) Cancel(ids []string, reason string) ([]Delivery, error) {
	return s.resolveHeld("cancel", ids, &resolveHeldOp{reason: clip(reason)})
}

func (s *Store) resolveHeld(verb string, ids []string, o *resolveHeldOp) ([]Delivery, error) {
	for _, str := range ids {
		if i, ok := parseID(str); ok {
			o.ids = append(o.ids, i)
		}
	}
	if len(o.ids) == 0 {
		return nil, nil
	}
	res, err := s.submitLazy(o)
	if err != nil {
		return nil, fmt.Errorf("%s %d held deliveries: %w", verb, len(o.ids), err)
	}
	return res.([]Delivery), nil
}

type resolveHeldOp struct {
	ids     []id
	release bool
	now     time.Time
	reason  string
}

func (o *resolveHeldOp) apply(w *wtx) (any, error) {
	var out []Delivery
	now := o.now
	if now.IsZero() {
		now = w.s.now()
	}
	for _, i := range o.ids {
		d, err := w.record(i)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if d.State != StateHeld {
			continue
		}
		w.del(heldKey(i))
		w.countState(d.DIN, StateHeld, -1)
		d.Updated = now
		if o.release {
			d.State, d.NextAttempt = StatePending, now
			w.insertDue(d.DIN, now, i)
		} else {
			d.State, d.HasPayload, d.LastError = StateCancelled, false, o.reason
			w.del(payloadKey(i))
		}
		w.countState(d.DIN, d.State, 1)
		w.set(deliveryKey(i), encodeRecord(&d))
		out = append(out, d)
	}
	return out, nil
}

// HeldIDs lists up to limit held deliveries, oldest first.
func (s *Store) HeldIDs(limit int) ([]string, error) {
	var out []string
	err := s.read(func() error {
		return s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxHeld}})
			defer it.Close()
			for it.Rewind(); it.Valid() && len(out) < limit; it.Next() {
				k := it.Item().Key()
				if len(k) != 1+idLen {
					return fmt.Errorf("bad held key %x", k)
				}
				var i id
				copy(i[:], k[1:])
				out = append(out, i.String())
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("held deliveries: %w", err)
	}
	return out, nil
}
