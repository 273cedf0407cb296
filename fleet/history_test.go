package fleet_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/natstest"
	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

// fakeLocal is an edge's own store's counts.
type fakeLocal struct {
	stats  map[string]storage.DINStats
	hourly []storage.HourBucket
}

func (l fakeLocal) Stats() (map[string]storage.DINStats, error) { return l.stats, nil }
func (l fakeLocal) Hourly(time.Time) ([]storage.HourBucket, error) {
	return l.hourly, nil
}

// deliveryID makes an id as the store does: creation time, then random.
func deliveryID(t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixNano()))
	rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

// Each edge's records and counts, read on any edge: every record carries
// its node, node= and din= filter, pages follow the cursor, counts are the
// sum of the edges'.
func TestHistoryIsFleetWide(t *testing.T) {
	c := natstest.Start(t, 3)
	a := join(t, c.URLs(), "edge-a", 3)
	b := join(t, c.URLs(), "edge-b", 3)
	t0 := time.Now().Add(-time.Hour).UTC()
	var ids []string
	for i := range 5 {
		f, din := a, "1001"
		if i%2 == 1 {
			f, din = b, "1002"
		}
		d := storage.Delivery{ID: deliveryID(t0.Add(time.Duration(i) * time.Minute)), DIN: din, State: storage.StatePending, Created: t0}
		ids = append(ids, d.ID)
		f.Records().Record(d)
		d.State = storage.StateDelivered
		d.Attempts = []storage.Attempt{{At: t0, Status: 200}}
		f.Records().Record(d) // the newer record of the same delivery wins
	}
	h := b.History()
	var all []storage.Delivery
	testutil.WaitFor(t, "all five records in the fleet's history", 30*time.Second, func() bool {
		all, _, _ = h.List(storage.Filter{})
		return len(all) == 5 && all[0].State == storage.StateDelivered && all[4].State == storage.StateDelivered
	})
	for i, d := range all {
		if want := ids[4-i]; d.ID != want {
			t.Errorf("item %d: %s, want %s (newest first)", i, d.ID, want)
		}
		if (d.DIN == "1001") != (d.Node == "edge-a") {
			t.Errorf("%s of %s carries node %q", d.ID, d.DIN, d.Node)
		}
	}
	if got, _, err := h.List(storage.Filter{Node: "edge-b"}); err != nil || len(got) != 2 {
		t.Errorf("node=edge-b: %d items, %v; want 2", len(got), err)
	}
	if got, _, err := h.List(storage.Filter{DIN: "1001", Node: "edge-b"}); err != nil || len(got) != 0 {
		t.Errorf("din=1001 node=edge-b: %d items, %v; want 0", len(got), err)
	}
	page, cursor, err := h.List(storage.Filter{Limit: 3})
	if err != nil || len(page) != 3 || cursor == "" {
		t.Fatalf("page 1: %d items, cursor %q, %v", len(page), cursor, err)
	}
	rest, cursor, err := h.List(storage.Filter{Limit: 3, Cursor: cursor})
	if err != nil || len(rest) != 2 || cursor != "" || rest[0].ID != ids[1] {
		t.Fatalf("page 2: %+v, cursor %q, %v", rest, cursor, err)
	}
	if got, _, _ := h.List(storage.Filter{Since: t0.Add(150 * time.Second)}); len(got) != 2 {
		t.Errorf("since: %d items, want 2", len(got))
	}
	if d, err := a.History().Get(ids[1]); err != nil || d.Node != "edge-b" || len(d.Attempts) != 1 {
		t.Errorf("Get on edge A of edge B's delivery: %+v %v", d, err)
	}
	if _, err := a.History().Get(deliveryID(t0)); err != storage.ErrNotFound {
		t.Errorf("Get of an unknown id: %v", err)
	}

	hour := t0.Truncate(time.Hour)
	a.SetLocal(fakeLocal{
		stats:  map[string]storage.DINStats{"1001": {Pending: 2, Delivered: 5, OldestPending: t0.Add(time.Minute)}},
		hourly: []storage.HourBucket{{Hour: hour, DIN: "1001", Attempts: 3, Delivered: 2}},
	})
	b.SetLocal(fakeLocal{
		stats:  map[string]storage.DINStats{"1001": {Pending: 1, Failed: 1, OldestPending: t0}, "1002": {Delivered: 7}},
		hourly: []storage.HourBucket{{Hour: hour, DIN: "1001", Attempts: 4, Failed: 1}},
	})
	for _, f := range []interface{ PublishSnapshot(context.Context) error }{a, b} {
		if err := f.PublishSnapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Reads may lag the writes by a moment (a replica catching up).
	var stats map[string]storage.DINStats
	var buckets []storage.HourBucket
	testutil.WaitFor(t, "both snapshots read back", 10*time.Second, func() bool {
		s1, e1 := a.History().Stats()
		b1, e2 := b.History().Hourly(hour)
		stats, buckets = s1, b1
		return e1 == nil && e2 == nil && stats["1001"].Pending == 3 && stats["1002"].Delivered == 7 && len(buckets) == 1 && buckets[0].Attempts == 7
	})
	if s := stats["1001"]; s.Pending != 3 || s.Delivered != 5 || s.Failed != 1 || !s.OldestPending.Equal(t0) {
		t.Errorf("1001: %+v", s)
	}
	if buckets[0].Delivered != 2 || buckets[0].Failed != 1 {
		t.Errorf("hourly: %+v", buckets)
	}
}
