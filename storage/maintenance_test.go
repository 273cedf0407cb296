package storage

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

func TestPurgeRetention(t *testing.T) {
	clk := newTestClock()
	s := openQueue(t, Options{Clock: clk.Now, Retention: 48 * time.Hour})
	t0 := clk.Now()
	del := enqueueOne(t, s, "1", "d")
	spo := enqueueOne(t, s, "1", "s")
	fai := enqueueOne(t, s, "1", "f")
	pen := enqueueOne(t, s, "1", "p")
	mustComplete(t, s, del.ID, Attempt{At: t0, Status: 200}, Outcome{State: StateDelivered})
	mustComplete(t, s, spo.ID, Attempt{At: t0, Status: 500}, Outcome{State: StateSpooled, SpoolFile: "x"})
	mustComplete(t, s, fai.ID, Attempt{At: t0, Status: 500}, Outcome{State: StateFailed})
	clk.Add(time.Hour)
	late := enqueueOne(t, s, "1", "late")
	mustComplete(t, s, late.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})

	if n, err := s.Purge(t0.Add(47 * time.Hour)); err != nil || n != 0 {
		t.Fatalf("Purge before retention = %d, %v", n, err)
	}
	n, err := s.Purge(t0.Add(48*time.Hour + time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("Purge after retention = %d, %v; want 2", n, err)
	}
	for _, d := range []Delivery{del, spo} {
		if _, err := s.Get(d.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("purged %s still there: %v", d.ID, err)
		}
	}
	for _, d := range []Delivery{fai, pen, late} {
		if _, err := s.Get(d.ID); err != nil {
			t.Fatalf("%s wrongly purged: %v", d.ID, err)
		}
	}
	st, _ := s.Stats()
	if got := st["1"]; got.Delivered != 1 || got.Spooled != 0 || got.Failed != 1 || got.Pending != 1 {
		t.Fatalf("Stats after purge = %+v", got)
	}
	if l, _, _ := s.List(Filter{DIN: "1"}); len(l) != 3 {
		t.Fatalf("List after purge = %d items", len(l))
	}
	if n, _ := s.Purge(t0.Add(49*time.Hour + time.Minute)); n != 1 {
		t.Fatalf("second purge = %d, want 1 (the later delivery)", n)
	}

	// Hourly buckets older than HourlyRetention (8 days) go too.
	if h, _ := s.Hourly(time.Time{}); len(h) == 0 {
		t.Fatal("no hourly buckets")
	}
	if _, err := s.Purge(t0.Add(9 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Hourly(time.Time{}); len(h) != 0 {
		t.Fatalf("hourly buckets left: %+v", h)
	}
}

func TestPurgeManyUsesChunks(t *testing.T) {
	clk := newTestClock()
	s := openQueue(t, Options{Clock: clk.Now, Retention: time.Hour})
	var items []NewDelivery
	for range 3*purgeChunk + 7 {
		items = append(items, NewDelivery{DIN: "9", Payload: []byte("x")})
	}
	ds, err := s.Enqueue(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		mustComplete(t, s, d.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
	}
	n, err := s.Purge(clk.Now().Add(2 * time.Hour))
	if err != nil || n != len(ds) {
		t.Fatalf("Purge = %d, %v; want %d", n, err, len(ds))
	}
	if l, _, _ := s.List(Filter{}); len(l) != 0 {
		t.Fatalf("List after purge = %d", len(l))
	}
}

func TestRunMaintenancePurgesAndStops(t *testing.T) {
	clk := newTestClock()
	s := openQueue(t, Options{Clock: clk.Now, Retention: time.Hour})
	d := enqueueOne(t, s, "1", "x")
	mustComplete(t, s, d.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
	keep := enqueueOne(t, s, "1", "y")
	clk.Add(2 * time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.RunMaintenance(ctx, 10*time.Millisecond); close(done) }()
	testutil.WaitFor(t, "RunMaintenance to purge the expired record", 10*time.Second, func() bool {
		_, err := s.Get(d.ID)
		return errors.Is(err, ErrNotFound)
	})
	if _, err := s.Get(keep.ID); err != nil {
		t.Fatalf("pending record purged: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunMaintenance does not stop when its context ends")
	}
}
