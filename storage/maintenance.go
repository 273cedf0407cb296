package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// purgeChunk is how many records one purge transaction deletes, so that a
// large purge never holds back the request path for long.
const purgeChunk = 256

// Purge deletes delivered and spooled records whose last update is older than
// Retention, and hourly buckets older than HourlyRetention. It returns the
// number of deliveries deleted.
func (s *Store) Purge(now time.Time) (int, error) {
	cutoff := now.Add(-s.opts.Retention)
	total := 0
	for {
		var ids []expiring
		err := s.read(func() error {
			pfx := []byte{pfxExpire}
			end := []byte{pfxExpire, 0xff}
			return s.scanIndex(pfx, end, func(_ *badger.Txn, k []byte) (bool, error) {
				if len(k) != 1+8+idLen {
					return false, fmt.Errorf("bad expiry key %x", k)
				}
				upd := parseTS(k[1:9])
				if !upd.Before(cutoff) {
					return false, nil
				}
				var i id
				copy(i[:], k[9:])
				ids = append(ids, expiring{id: i, updated: upd})
				return len(ids) < purgeChunk, nil
			})
		})
		if err != nil {
			return total, fmt.Errorf("purge: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		res, err := s.submitLazy(&purgeOp{ids: ids, cutoff: cutoff})
		if err != nil {
			return total, fmt.Errorf("purge: %w", err)
		}
		total += res.(int)
		if len(ids) < purgeChunk {
			break
		}
	}
	if err := s.purgeHourly(now.Add(-s.opts.HourlyRetention)); err != nil {
		return total, fmt.Errorf("purge: %w", err)
	}
	return total, nil
}

type expiring struct {
	id      id
	updated time.Time
}

type purgeOp struct {
	ids    []expiring
	cutoff time.Time
}

func (o *purgeOp) apply(w *wtx) (any, error) {
	n := 0
	for _, e := range o.ids {
		d, err := w.record(e.id)
		if errors.Is(err, ErrNotFound) {
			w.del(expireKey(e.updated, e.id)) // stale index entry
			continue
		}
		if err != nil {
			return nil, err
		}
		finished := d.State == StateDelivered || d.State == StateSpooled
		current := finished && d.Updated.Equal(e.updated)
		if current && !d.Updated.Before(o.cutoff) {
			continue // cannot happen (the scan stops at the cutoff), but keep it indexed
		}
		w.del(expireKey(e.updated, e.id))
		if !current {
			continue // the record moved on since (a Retry): the entry was stale
		}
		w.del(deliveryKey(e.id))
		w.del(dinKey(d.DIN, e.id))
		if d.HasPayload {
			w.del(payloadKey(e.id))
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
