package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// purgeChunk is how many records one purge transaction deletes, so that a
// large purge never holds back the request path for long.
const purgeChunk = 256

// Purge deletes delivered and spooled records whose last update is older than
// Retention, notification log records older than Retention, and hourly
// buckets older than HourlyRetention. It returns the
// number of deliveries deleted.
//
// It walks the records from the oldest. A record is updated after its id was
// made, and ids begin with their time, so the walk ends at the first id made
// after the cutoff; what it passes on the way are the old records still
// pending or failed, which are few.
func (s *Store) Purge(now time.Time) (int, error) {
	cutoff := now.Add(-s.opts.Retention)
	var end [8]byte
	binary.BigEndian.PutUint64(end[:], uint64(max(cutoff.UnixNano(), 0)))
	endKey := append([]byte{pfxDelivery}, end[:]...)
	from := []byte{pfxDelivery}
	total := 0
	for from != nil {
		ids, next, err := s.expired(from, endKey, cutoff)
		if err != nil {
			return total, fmt.Errorf("purge: %w", err)
		}
		if len(ids) > 0 {
			res, err := s.submitLazy(&purgeOp{ids: ids, cutoff: cutoff})
			if err != nil {
				return total, fmt.Errorf("purge: %w", err)
			}
			total += res.(int)
		}
		from = next
	}
	if err := s.purgeHourly(now.Add(-s.opts.HourlyRetention)); err != nil {
		return total, fmt.Errorf("purge: %w", err)
	}
	if err := s.purgeNotifications(cutoff); err != nil {
		return total, fmt.Errorf("purge: %w", err)
	}
	return total, nil
}

// expired returns up to purgeChunk finished records in [from, end) last
// updated before cutoff, and the key to go on from (nil when done).
func (s *Store) expired(from, end []byte, cutoff time.Time) (ids []id, next []byte, err error) {
	err = s.read(func() error {
		return s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxDelivery}})
			defer it.Close()
			n := 0
			for it.Seek(from); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()
				if bytes.Compare(k, end) >= 0 {
					return nil
				}
				if len(ids) == purgeChunk || n == s.opts.purgeScan {
					next = item.KeyCopy(nil)
					return nil
				}
				n++
				if len(k) != 1+idLen {
					return fmt.Errorf("bad record key %x", k)
				}
				var i id
				copy(i[:], k[1:])
				d, err := itemRecord(item, i)
				if err != nil {
					return err
				}
				if expiredBy(d, cutoff) {
					ids = append(ids, i)
				}
			}
			return nil
		})
	})
	return ids, next, err
}

// expiredBy: delivered, spooled and cancelled records go once they were
// last updated before cutoff; pending, held and failed ones are kept,
// whatever their age.
func expiredBy(d Delivery, cutoff time.Time) bool {
	done := d.State == StateDelivered || d.State == StateSpooled || d.State == StateCancelled
	return done && d.Updated.Before(cutoff)
}

type purgeOp struct {
	ids    []id
	cutoff time.Time
}

func (o *purgeOp) apply(w *wtx) (any, error) {
	n := 0
	for _, i := range o.ids {
		d, err := w.record(i)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !expiredBy(d, o.cutoff) {
			continue // retried since the scan
		}
		w.del(deliveryKey(i))
		if d.HasPayload {
			w.del(payloadKey(i))
		}
		w.countState(d.DIN, d.State, -1)
		n++
	}
	return n, nil
}

func (s *Store) purgeHourly(cutoff time.Time) error {
	for {
		var keys [][]byte
		err := s.read(func() error {
			return s.db.View(func(txn *badger.Txn) error {
				it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxHour}})
				defer it.Close()
				for it.Rewind(); it.Valid() && len(keys) < purgeChunk; it.Next() {
					hour, _, ok := parseHourKey(it.Item().Key())
					if !ok || !hour.Add(time.Hour).Before(cutoff) {
						break
					}
					keys = append(keys, it.Item().KeyCopy(nil))
				}
				return nil
			})
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		if _, err := s.submitLazy(&deleteKeysOp{keys: keys}); err != nil {
			return err
		}
		if len(keys) < purgeChunk {
			return nil
		}
	}
}

type deleteKeysOp struct{ keys [][]byte }

func (o *deleteKeysOp) apply(w *wtx) (any, error) {
	for _, k := range o.keys {
		w.del(k)
	}
	return nil, nil
}

// RunMaintenance runs a maintenance pass now and then every `every` (default
// 10 minutes) until ctx is done or the store is closed: Purge, value-log
// garbage collection, and file modes.
//
// Badger reclaims LSM space itself: compaction drops deleted keys and their
// tombstones (once they reach the bottom level, which for a small store is
// the level L0 compacts into). Values at or above ValueThreshold live in the
// value log, which only shrinks through RunValueLogGC.
func (s *Store) RunMaintenance(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.maintain(ctx); errors.Is(err, ErrClosed) {
			return
		} else if err != nil {
			s.log.Warn("store maintenance failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Store) maintain(ctx context.Context) error {
	n, err := s.Purge(s.opts.Clock())
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("purged old delivery records", "count", n, "retention", s.opts.Retention.String())
	}
	if err := s.gcValueLog(ctx); err != nil {
		return err
	}
	s.tightenPerms()
	return nil
}

// gcValueLog rewrites value-log files that are at least half garbage, until
// Badger finds none (ErrNoRewrite), bounded per pass.
func (s *Store) gcValueLog(ctx context.Context) error {
	// A rewrite writes a new value-log file before it frees the old one,
	// outside the committer, so it needs the room first.
	if err := s.space.write(s.opts.ValueLogFileSize); err != nil {
		s.log.Warn("value log gc skipped", "error", err)
		return nil
	}
	for range 64 {
		if ctx.Err() != nil {
			return nil
		}
		var gcErr error
		err := s.read(func() error {
			gcErr = s.db.RunValueLogGC(0.5)
			return nil
		})
		if err != nil {
			return err
		}
		switch {
		case gcErr == nil:
			continue
		case errors.Is(gcErr, badger.ErrNoRewrite), errors.Is(gcErr, badger.ErrRejected):
			return nil
		default:
			return fmt.Errorf("value log gc: %w", gcErr)
		}
	}
	return nil
}
