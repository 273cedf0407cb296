package report

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// fakeSource is an in-memory Source with the store's semantics for what the
// report uses: List newest first with an opaque cursor, Retry only of failed
// (or spooled with payload) deliveries.
type fakeSource struct {
	mu       sync.Mutex
	dins     []string
	recs     map[string]*storage.Delivery
	counters map[string]storage.DINStats
	buckets  []storage.HourBucket
	retried  []string
	circuits map[string]time.Time   // open circuits by DIN
	delayed  map[string]uint64      // rate waits by DIN
	bulk     []storage.Filter       // the filters of RetryMatching calls
	err      error                  // returned by every call when set
	budget   int                    // records one List examines, as the store's scan budget (0: all)
	notes    []storage.Notification // newest first
	noteQs   []storage.NotificationFilter
}

// Notifications returns the notes f matches (outcome and path only), and
// remembers f.
func (s *fakeSource) Notifications(f storage.NotificationFilter) ([]storage.Notification, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noteQs = append(s.noteQs, f)
	if s.err != nil {
		return nil, "", s.err
	}
	var out []storage.Notification
	for _, n := range s.notes {
		if (f.Outcome == "" || n.Outcome == f.Outcome) && (f.Path == "" || n.Path == f.Path) {
			out = append(out, n)
		}
	}
	return out, "", nil
}

func (s *fakeSource) CircuitOpen(din string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	since, ok := s.circuits[din]
	return since, ok
}

func (s *fakeSource) RateDelayed(din string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delayed[din]
}

func newFakeSource(dins ...string) *fakeSource {
	return &fakeSource{dins: dins, recs: map[string]*storage.Delivery{}, counters: map[string]storage.DINStats{}}
}

// add stores a delivery created at t; ids sort by creation like the store's.
func (s *fakeSource) add(d storage.Delivery) storage.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.ID == "" {
		d.ID = fmt.Sprintf("%016x%016x", d.Created.UnixNano(), len(s.recs)+1)
	}
	if d.Updated.IsZero() {
		d.Updated = d.Created
	}
	c := d
	s.recs[d.ID] = &c
	return d
}

func (s *fakeSource) DINs() []string { return s.dins }

func (s *fakeSource) Stats() (map[string]storage.DINStats, error) {
	if s.err != nil {
		return nil, s.err
	}
	return s.counters, nil
}

func (s *fakeSource) Hourly(since time.Time) ([]storage.HourBucket, error) {
	if s.err != nil {
		return nil, s.err
	}
	var out []storage.HourBucket
	for _, b := range s.buckets {
		if !b.Hour.Before(since.Truncate(time.Hour)) {
			out = append(out, b)
		}
	}
	return out, nil
}

func (s *fakeSource) List(f storage.Filter) ([]storage.Delivery, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, "", s.err
	}
	ids := make([]string, 0, len(s.recs))
	for id := range s.recs {
		ids = append(ids, id)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	if f.Cursor != "" {
		if len(f.Cursor) < 2 || f.Cursor[0] != 'c' {
			return nil, "", storage.ErrBadCursor
		}
		i := slices.IndexFunc(ids, func(id string) bool { return id < f.Cursor[1:] })
		if i < 0 {
			ids = nil
		} else {
			ids = ids[i:]
		}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	var out []storage.Delivery
	for n, id := range ids {
		if s.budget > 0 && n == s.budget {
			return out, "c" + ids[n-1], nil
		}
		d := s.recs[id]
		if f.DIN != "" && d.DIN != f.DIN || f.State != "" && d.State != f.State || f.Node != "" && d.Node != f.Node ||
			!f.Since.IsZero() && d.Created.Before(f.Since) || !f.Until.IsZero() && !d.Created.Before(f.Until) {
			continue
		}
		if len(out) == limit {
			return out, "c" + out[len(out)-1].ID, nil
		}
		out = append(out, *d)
	}
	return out, "", nil
}

func (s *fakeSource) Get(id string) (storage.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return storage.Delivery{}, s.err
	}
	d, ok := s.recs[id]
	if !ok {
		return storage.Delivery{}, fmt.Errorf("get %s: %w", id, storage.ErrNotFound)
	}
	return *d, nil
}

func (s *fakeSource) Retry(id string, now time.Time) (storage.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return storage.Delivery{}, s.err
	}
	d, ok := s.recs[id]
	if !ok {
		return storage.Delivery{}, fmt.Errorf("retry %s: %w", id, storage.ErrNotFound)
	}
	if !d.Retryable() {
		return storage.Delivery{}, fmt.Errorf("retry %s: delivery is %s: %w", id, d.State, storage.ErrConflict)
	}
	d.State, d.NextAttempt, d.Updated = storage.StatePending, now, now
	s.retried = append(s.retried, id)
	return *d, nil
}

// RetryMatching pages through List two at a time, as the engine does in
// larger pages.
func (s *fakeSource) RetryMatching(ctx context.Context, f storage.Filter, now time.Time) (int, error) {
	f.Limit, f.Cursor = 2, ""
	s.bulk = append(s.bulk, f)
	n := 0
	for {
		page, next, err := s.List(f)
		if err != nil {
			return n, err
		}
		for _, d := range page {
			if d.Retryable() {
				if _, err := s.Retry(d.ID, now); err != nil {
					return n, err
				}
				n++
			}
		}
		if next == "" {
			return n, nil
		}
		f.Cursor = next
	}
}

var errBroken = errors.New("disk on fire")

// demoSource is a realistic day of three destinations, for rendering tests
// and the look of the page.
func demoSource(now time.Time) *fakeSource {
	s := newFakeSource("1001", "1002", "1003")
	hour := now.Truncate(time.Hour)
	for i := 0; i < 24; i++ {
		h := hour.Add(-time.Duration(23-i) * time.Hour)
		n := 6 + (i*7)%11
		s.buckets = append(s.buckets,
			storage.HourBucket{Hour: h, DIN: "1001", Attempts: n, Successes: n, Delivered: n},
			storage.HourBucket{Hour: h, DIN: "1002", Attempts: n/2 + 2, Successes: n / 2, Delivered: n / 2, Spooled: boolInt(i == 9)})
		if i >= 20 {
			s.buckets = append(s.buckets, storage.HourBucket{Hour: h, DIN: "1003", Attempts: 4, Failed: 1})
		} else {
			s.buckets = append(s.buckets, storage.HourBucket{Hour: h, DIN: "1003", Attempts: 3, Successes: 3, Delivered: 3})
		}
	}
	s.counters["1001"] = storage.DINStats{Delivered: 2210, LastSuccess: now.Add(-2 * time.Minute)}
	s.counters["1002"] = storage.DINStats{Delivered: 1093, Spooled: 1,
		LastSuccess: now.Add(-5 * time.Minute), LastError: now.Add(-9 * time.Minute), LastErrorText: "HTTP 503 Service Unavailable"}
	s.counters["1003"] = storage.DINStats{Pending: 2, Delivered: 540, Failed: 6, OldestPending: now.Add(-3*time.Hour - 12*time.Minute),
		LastSuccess: now.Add(-4 * time.Hour), LastError: now.Add(-3 * time.Minute), LastErrorText: "dial tcp 198.51.100.7:443: connect: connection refused"}

	attempt := func(at time.Time, status int, msg string) storage.Attempt {
		return storage.Attempt{At: at, Status: status, Error: msg, Duration: 87 * time.Millisecond}
	}
	for i := 0; i < 30; i++ {
		created := now.Add(-time.Duration(i*7+1) * time.Minute)
		d := storage.Delivery{DIN: "1001", State: storage.StateDelivered, Created: created, Updated: created.Add(time.Second),
			ContentType: "application/x-www-form-urlencoded", Size: 312,
			Attempts: []storage.Attempt{attempt(created, 200, "")}}
		switch i % 5 {
		case 1:
			d.DIN = "1002"
		case 3:
			d.DIN = "1003"
			d.State = storage.StateFailed
			d.HasPayload = true
			d.Attempts = []storage.Attempt{attempt(created, 0, "dial tcp 198.51.100.7:443: connect: connection refused"),
				attempt(created.Add(10*time.Second), 502, "HTTP 502 Bad Gateway"), attempt(created.Add(time.Minute), 0, "timeout after 15s")}
			d.LastError = "retry schedule exhausted after 3 attempts"
		case 4:
			if i < 10 {
				d.DIN = "1003"
				d.State = storage.StatePending
				d.HasPayload = true
				d.NextAttempt = now.Add(4 * time.Minute)
				d.Attempts = []storage.Attempt{attempt(created, 0, "dial tcp 198.51.100.7:443: connect: connection refused")}
			}
		}
		s.add(d)
	}
	return s
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
