package storage

import (
	"sort"
	"time"
)

// The store's reads see the fresh table (fresh.go) beside Badger: a delivery
// in the journal is pending, due since its creation, from its Enqueue on.
// The table is read first, Badger second: a delivery that moves into Badger
// in between is seen twice (each merge keeps one) rather than not at all.

// mergeDue merges two due lists (each earliest first) into one of at most
// limit, earliest first, each delivery once (Badger's record wins: it is
// the newer).
func mergeDue(fresh, stored []Delivery, limit int) []Delivery {
	if len(fresh) == 0 {
		return stored
	}
	seen := make(map[string]bool, len(stored))
	for _, d := range stored {
		seen[d.ID] = true
	}
	out := make([]Delivery, 0, min(limit, len(fresh)+len(stored)))
	out = append(out, stored...)
	for _, d := range fresh {
		if !seen[d.ID] {
			out = append(out, d)
		}
	}
	sort.SliceStable(out, func(a, b int) bool {
		if !out[a].NextAttempt.Equal(out[b].NextAttempt) {
			return out[a].NextAttempt.Before(out[b].NextAttempt)
		}
		return out[a].ID < out[b].ID
	})
	if len(out) > limit {
		clear(out[limit:])
		out = out[:limit]
	}
	return out
}

// storedPending reports whether Badger holds pending deliveries of din, so
// that a Due or NextDue with nothing to find there skips its index scan.
func (s *Store) storedPending(din string) bool {
	s.countersMu.Lock()
	defer s.countersMu.Unlock()
	c := s.counters[din]
	return c != nil && c.Pending > 0
}

// freshListed returns the fresh deliveries that f selects, newest first:
// those created in f's time range, older than the cursor (after).
func (s *Store) freshListed(f Filter, after *id) []Delivery {
	if s.fresh == nil || f.State != "" && f.State != StatePending {
		return nil
	}
	out := s.fresh.matching(func(d *Delivery) bool {
		if f.DIN != "" && d.DIN != f.DIN {
			return false
		}
		if !f.Since.IsZero() && d.Created.Before(f.Since) {
			return false
		}
		if !f.Until.IsZero() && !d.Created.Before(f.Until) {
			return false
		}
		return after == nil || d.ID < after.String()
	})
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	return out
}

// mergeList merges the fresh deliveries into a page of Badger's (both newest
// first). storedNext is Badger's cursor: the fresh ones older than it belong
// to later pages.
func mergeList(stored []Delivery, storedNext string, fresh []Delivery, limit int) ([]Delivery, string) {
	if len(fresh) == 0 {
		return stored, storedNext
	}
	var bound string
	if storedNext != "" {
		c, err := decodeCursor(storedNext)
		if err == nil {
			bound = c.String()
		}
	}
	seen := make(map[string]bool, len(stored))
	for _, d := range stored {
		seen[d.ID] = true
	}
	out := append([]Delivery(nil), stored...)
	for _, d := range fresh {
		if !seen[d.ID] && (bound == "" || d.ID > bound) {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	if len(out) > limit {
		out = out[:limit]
		last, _ := parseID(out[limit-1].ID)
		return out, encodeCursor(last)
	}
	return out, storedNext
}

// freshOldest is the creation time of din's oldest fresh delivery, merged
// into Stats' oldest pending.
func (s *Store) freshOldest(din string, stored time.Time) time.Time {
	if s.fresh == nil {
		return stored
	}
	_, created, ok := s.fresh.first(din)
	if ok && (stored.IsZero() || created.Before(stored)) {
		return created
	}
	return stored
}
