package storage

import (
	"fmt"
	"sort"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Stats returns per-DIN counts by state, last success and last error, from
// counters kept in memory (and persisted with every commit), plus the oldest
// pending delivery: the creation time of the delivery at the head of the due
// index, i.e. of the pending delivery whose next attempt is earliest. It
// costs one index seek per DIN with pending deliveries.
func (s *Store) Stats() (map[string]DINStats, error) {
	out := make(map[string]DINStats)
	err := s.read(func() error {
		s.countersMu.Lock()
		for din, c := range s.counters {
			out[din] = DINStats{
				Pending:       int(c.Pending),
				Delivered:     int(c.Delivered),
				Failed:        int(c.Failed),
				Spooled:       int(c.Spooled),
				Held:          int(c.Held),
				Cancelled:     int(c.Cancelled),
				LastSuccess:   c.LastSuccess,
				LastError:     c.LastError,
				LastErrorText: c.LastErrorText,
			}
		}
		if s.fresh != nil {
			for din, n := range s.fresh.counts() {
				st := out[din]
				st.Pending += n
				out[din] = st
			}
		}
		s.countersMu.Unlock()
		for din, st := range out {
			if st.Pending == 0 {
				continue
			}
			_, first, found, err := s.firstDue(din)
			if err != nil {
				return err
			}
			if found {
				st.OldestPending = first.time()
			}
			st.OldestPending = s.freshOldest(din, st.OldestPending)
			out[din] = st
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	return out, nil
}

// Hourly returns the hourly buckets from the hour holding since onwards,
// ordered by hour then DIN.
func (s *Store) Hourly(since time.Time) ([]HourBucket, error) {
	var out []HourBucket
	err := s.read(func() error {
		return s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxHour}, PrefetchValues: true, PrefetchSize: 100})
			defer it.Close()
			start := ts(since.UTC().Truncate(time.Hour))
			for it.Seek(append([]byte{pfxHour}, start[:]...)); it.Valid(); it.Next() {
				hour, din, ok := parseHourKey(it.Item().Key())
				if !ok {
					return fmt.Errorf("bad hourly key %x", it.Item().Key())
				}
				var h hourCounts
				err := it.Item().Value(func(v []byte) error {
					var err error
					h, err = decodeHour(v)
					return err
				})
				if err != nil {
					return fmt.Errorf("hourly bucket %s %s: %w", din, hour, err)
				}
				out = append(out, HourBucket{
					Hour: hour, DIN: din,
					Attempts: int(h.Attempts), Successes: int(h.Successes),
					Delivered: int(h.Delivered), Failed: int(h.Failed), Spooled: int(h.Spooled),
				})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("hourly: %w", err)
	}
	sort.SliceStable(out, func(a, b int) bool {
		if !out[a].Hour.Equal(out[b].Hour) {
			return out[a].Hour.Before(out[b].Hour)
		}
		return out[a].DIN < out[b].DIN
	})
	return out, nil
}
