package storage

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func enqueueHeld(t *testing.T, s *Store, din, payload string) Delivery {
	t.Helper()
	ds, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: din, ContentType: "text/plain", Payload: []byte(payload), Held: true}})
	if err != nil {
		t.Fatalf("Enqueue held: %v", err)
	}
	return ds[0]
}

// A held delivery is durable but never due; Release makes it pending and
// due, Cancel drops its payload and keeps the record; both count.
func TestHeldReleaseAndCancel(t *testing.T) {
	clock := newTestClock()
	s := openQueue(t, Options{Clock: clock.Now})
	keep := enqueueHeld(t, s, "1001", "a=1")
	drop := enqueueHeld(t, s, "1001", "a=2")
	if keep.State != StateHeld || !keep.NextAttempt.IsZero() {
		t.Fatalf("enqueued held: %+v", keep)
	}
	if due, _ := s.Due("1001", clock.Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("held deliveries are due: %v", ids(due))
	}
	if st, _ := s.Stats(); st["1001"].Held != 2 || st["1001"].Pending != 0 {
		t.Fatalf("stats while held: %+v", st["1001"])
	}
	if _, err := s.Complete(keep.ID, Attempt{Status: 200}, Outcome{State: StateDelivered}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Complete of a held delivery: %v, want ErrConflict", err)
	}
	if _, err := s.Complete(keep.ID, Attempt{}, Outcome{State: StateCancelled}); err == nil {
		t.Fatal("Complete accepted cancelled as an attempt's outcome")
	}

	now := clock.Add(time.Minute)
	rel, err := s.Release([]string{keep.ID}, now)
	if err != nil || len(rel) != 1 || rel[0].State != StatePending || !rel[0].NextAttempt.Equal(now) {
		t.Fatalf("Release: %+v, %v", rel, err)
	}
	can, err := s.Cancel([]string{drop.ID}, "script answered 500")
	if err != nil || len(can) != 1 || can[0].State != StateCancelled || can[0].HasPayload || can[0].LastError != "script answered 500" {
		t.Fatalf("Cancel: %+v, %v", can, err)
	}
	// Resolving again does nothing: release and cancel are idempotent.
	if again, err := s.Release([]string{keep.ID, drop.ID}, now); err != nil || len(again) != 0 {
		t.Fatalf("second Release: %+v, %v", again, err)
	}
	if again, err := s.Cancel([]string{keep.ID, drop.ID}, "x"); err != nil || len(again) != 0 {
		t.Fatalf("second Cancel: %+v, %v", again, err)
	}

	due, _ := s.Due("1001", now, 10)
	if !slices.Equal(ids(due), []string{keep.ID}) {
		t.Fatalf("due after release: %v, want %s", ids(due), keep.ID)
	}
	if _, err := s.Payload(drop.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("payload of a cancelled delivery: %v, want ErrNotFound", err)
	}
	if _, err := s.Retry(drop.ID, now); !errors.Is(err, ErrConflict) {
		t.Fatalf("Retry of a cancelled delivery: %v, want ErrConflict", err)
	}
	st, _ := s.Stats()
	if got := st["1001"]; got.Held != 0 || got.Pending != 1 || got.Cancelled != 1 {
		t.Fatalf("stats after resolving: %+v", got)
	}
	page, _, err := s.List(Filter{State: StateCancelled})
	if err != nil || !slices.Equal(ids(page), []string{drop.ID}) {
		t.Fatalf("List cancelled: %v, %v", ids(page), err)
	}
	if ids, err := s.HeldIDs(10); err != nil || len(ids) != 0 {
		t.Fatalf("HeldIDs after resolving: %v, %v", ids, err)
	}
}

// What was held when the store closed (a crash before the script answered)
// is still held after reopening, with its payload, and listed by HeldIDs;
// the counters, held ones included, survive.
func TestHeldSurvivesReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	a := enqueueHeld(t, s, "1001", "a=1")
	b := enqueueHeld(t, s, "1002", "b=1")
	if _, err := s.Cancel([]string{b.ID}, "HTTP 403"); err != nil {
		t.Fatal(err)
	}
	c := enqueueHeld(t, s, "1002", "c=1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openQueue(t, Options{Dir: dir})
	held, err := s.HeldIDs(10)
	if err != nil || !slices.Equal(held, []string{a.ID, c.ID}) {
		t.Fatalf("HeldIDs after reopen: %v, %v, want %s %s", held, err, a.ID, c.ID)
	}
	if p, err := s.Payload(a.ID); err != nil || string(p) != "a=1" {
		t.Fatalf("payload of a held delivery after reopen: %q, %v", p, err)
	}
	if held, _ := s.HeldIDs(1); len(held) != 1 {
		t.Fatalf("HeldIDs ignores its limit: %v", held)
	}
	st, _ := s.Stats()
	if st["1001"].Held != 1 || st["1002"].Held != 1 || st["1002"].Cancelled != 1 {
		t.Fatalf("counters after reopen: %+v", st)
	}
}

// Cancelled records go with the retention, as delivered ones do; held ones
// stay, whatever their age.
func TestPurgeCancelledKeepsHeld(t *testing.T) {
	clock := newTestClock()
	s := openQueue(t, Options{Clock: clock.Now, Retention: time.Hour})
	held := enqueueHeld(t, s, "1001", "a=1")
	gone := enqueueHeld(t, s, "1001", "a=2")
	if _, err := s.Cancel([]string{gone.ID}, "HTTP 500"); err != nil {
		t.Fatal(err)
	}
	n, err := s.Purge(clock.Add(2 * time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Purge: %d, %v; want the cancelled record only", n, err)
	}
	if _, err := s.Get(gone.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cancelled record after purge: %v", err)
	}
	if d, err := s.Get(held.ID); err != nil || d.State != StateHeld {
		t.Fatalf("held record after purge: %+v, %v", d, err)
	}
	if st, _ := s.Stats(); st["1001"].Cancelled != 0 || st["1001"].Held != 1 {
		t.Fatalf("counters after purge: %+v", st["1001"])
	}
}

// Counters written before held and cancelled existed still decode.
func TestCountersWithoutHeldDecode(t *testing.T) {
	c := dinCounters{Pending: 3, Delivered: 2, LastErrorText: "x"}
	b := encodeCounters(&c)
	old := b[:len(b)-2] // the two zero varints that older stores lack
	got, err := decodeCounters(old)
	if err != nil || got != c {
		t.Fatalf("decode of an older encoding: %+v, %v", got, err)
	}
	c.Held, c.Cancelled = 7, 9
	if got, err := decodeCounters(encodeCounters(&c)); err != nil || got != c {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}
