package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestEnqueueDueCompleteRetry(t *testing.T) {
	clk := newTestClock()
	s := openQueue(t, Options{Clock: clk.Now})
	t0 := clk.Now()

	a := enqueueOne(t, s, "1001", "a=1")
	clk.Add(time.Second)
	b := enqueueOne(t, s, "1001", "b=2")
	clk.Add(time.Second)
	c := enqueueOne(t, s, "1001", "c=3")
	other := enqueueOne(t, s, "2002", "x=9")

	if a.State != StatePending || !a.HasPayload || a.Size != 3 || !a.NextAttempt.Equal(t0) {
		t.Fatalf("enqueued record = %+v", a)
	}
	if !(a.ID < b.ID && b.ID < c.ID) {
		t.Fatalf("ids not sortable by creation: %s %s %s", a.ID, b.ID, c.ID)
	}

	// Due: earliest next attempt first, only up to now, only this DIN.
	due, err := s.Due("1001", t0.Add(time.Second), 10)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(due), []string{a.ID, b.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Due = %v, want %v", got, want)
	}
	due, _ = s.Due("1001", clk.Now(), 2)
	if got, want := ids(due), []string{a.ID, b.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Due limit 2 = %v, want %v", got, want)
	}

	// a fails its attempt and is rescheduled after c: order becomes b, c, a.
	now := clk.Add(time.Second)
	fail := Attempt{At: now, Status: 503, Duration: time.Millisecond}
	a2, err := s.Complete(a.ID, fail, Outcome{State: StatePending, NextAttempt: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if a2.State != StatePending || len(a2.Attempts) != 1 || a2.LastError != "HTTP 503" || !a2.NextAttempt.Equal(now.Add(time.Minute)) {
		t.Fatalf("rescheduled = %+v", a2)
	}
	due, _ = s.Due("1001", now, 10)
	if got, want := ids(due), []string{b.ID, c.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Due after reschedule = %v, want %v", got, want)
	}
	due, _ = s.Due("1001", now.Add(time.Hour), 10)
	if got, want := ids(due), []string{b.ID, c.ID, a.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Due later = %v, want %v", got, want)
	}
	if next, ok := s.NextDue("1001"); !ok || !next.Equal(b.NextAttempt) {
		t.Fatalf("NextDue = %v %v, want %v", next, ok, b.NextAttempt)
	}

	// b is delivered: payload deleted at once, record kept.
	ok := Attempt{At: now, Status: 200, Duration: 2 * time.Millisecond}
	b2, err := s.Complete(b.ID, ok, Outcome{State: StateDelivered})
	if err != nil {
		t.Fatal(err)
	}
	if b2.State != StateDelivered || b2.HasPayload || !b2.NextAttempt.IsZero() {
		t.Fatalf("delivered = %+v", b2)
	}
	if _, err := s.Payload(b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Payload of delivered = %v, want ErrNotFound", err)
	}
	if got, err := s.Get(b.ID); err != nil || !reflect.DeepEqual(got, b2) {
		t.Fatalf("Get delivered = %+v, %v; want %+v", got, err, b2)
	}

	// c fails for good: payload kept for a manual retry.
	c2, err := s.Complete(c.ID, fail, Outcome{State: StateFailed, Error: "retries exhausted, no spool"})
	if err != nil {
		t.Fatal(err)
	}
	if c2.State != StateFailed || !c2.HasPayload || c2.LastError != "retries exhausted, no spool" {
		t.Fatalf("failed = %+v", c2)
	}
	if p, err := s.Payload(c.ID); err != nil || string(p) != "c=3" {
		t.Fatalf("Payload of failed = %q, %v", p, err)
	}
	due, _ = s.Due("1001", now.Add(time.Hour), 10)
	if got, want := ids(due), []string{a.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Due after delivered/failed = %v, want %v", got, want)
	}

	// Completing what is not pending is a conflict; unknown ids are not found.
	if _, err := s.Complete(b.ID, ok, Outcome{State: StateDelivered}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Complete delivered = %v, want ErrConflict", err)
	}
	if _, err := s.Complete(c.ID, ok, Outcome{State: StateDelivered}); !errors.Is(err, ErrConflict) {
		t.Fatalf("Complete failed = %v, want ErrConflict", err)
	}
	if _, err := s.Complete("00000000000000000000000000000000", ok, Outcome{State: StateDelivered}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Complete unknown = %v, want ErrNotFound", err)
	}
	if _, err := s.Get("nonsense"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get malformed = %v, want ErrNotFound", err)
	}

	// Retry: failed → pending, due at the given time, first in line.
	rnow := clk.Add(time.Second)
	c3, err := s.Retry(c.ID, rnow)
	if err != nil {
		t.Fatal(err)
	}
	if c3.State != StatePending || !c3.NextAttempt.Equal(rnow) || !c3.HasPayload {
		t.Fatalf("retried = %+v", c3)
	}
	due, _ = s.Due("1001", rnow, 10)
	if got, want := ids(due), []string{c.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Due after retry = %v, want %v", got, want)
	}
	for _, id := range []string{b.ID, c.ID, a.ID} { // delivered, now pending, pending
		if _, err := s.Retry(id, rnow); !errors.Is(err, ErrConflict) {
			t.Fatalf("Retry %s = %v, want ErrConflict", id, err)
		}
	}
	if _, err := s.Retry("00000000000000000000000000000001", rnow); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Retry unknown = %v, want ErrNotFound", err)
	}

	// Spooled: payload deleted, so it cannot be retried.
	d2, err := s.Complete(c.ID, fail, Outcome{State: StateSpooled, SpoolFile: "/srv/saft/1001/x.asc"})
	if err != nil {
		t.Fatal(err)
	}
	if d2.SpoolFile != "/srv/saft/1001/x.asc" || d2.HasPayload {
		t.Fatalf("spooled = %+v", d2)
	}
	if _, err := s.Retry(c.ID, rnow); !errors.Is(err, ErrConflict) {
		t.Fatalf("Retry spooled = %v, want ErrConflict", err)
	}

	// A zero Attempt records no attempt (a spool-only transition).
	o2, err := s.Complete(other.ID, Attempt{}, Outcome{State: StateSpooled, SpoolFile: "f"})
	if err != nil || len(o2.Attempts) != 0 {
		t.Fatalf("zero attempt: %+v, %v", o2, err)
	}

	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := DINStats{Pending: 1, Delivered: 1, Spooled: 1, OldestPending: a.Created,
		LastSuccess: now, LastError: now, LastErrorText: "HTTP 503"}
	if got := st["1001"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("Stats[1001] = %+v\nwant %+v", got, want)
	}
	if got := st["2002"]; got.Spooled != 1 || got.Pending != 0 || !got.OldestPending.IsZero() {
		t.Fatalf("Stats[2002] = %+v", got)
	}
	if dins, _ := s.PendingDINs(); !reflect.DeepEqual(dins, []string{"1001"}) {
		t.Fatalf("PendingDINs = %v", dins)
	}
}

func TestConcurrentWriters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	s, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	const writers, per = 32, 40
	var wg sync.WaitGroup
	got := make([][]Delivery, writers)
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				ds, err := s.Enqueue(context.Background(), []NewDelivery{
					{DIN: "A", Payload: fmt.Appendf(nil, "w=%d&i=%d", w, i)},
					{DIN: "B", Payload: fmt.Appendf(nil, "w=%d&i=%d", w, i)},
				})
				if err != nil {
					errs <- err
					return
				}
				got[w] = append(got[w], ds...)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	batches := s.batches.Load()
	if batches >= writers*per {
		t.Errorf("%d enqueues took %d commits: no group commit", writers*per, batches)
	}
	t.Logf("%d enqueues in %d group commits", writers*per, batches)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openQueue(t, Options{Dir: dir})
	seen := map[string]bool{}
	for w, ds := range got {
		for i, d := range ds {
			if seen[d.ID] {
				t.Fatalf("duplicate id %s", d.ID)
			}
			seen[d.ID] = true
			p, err := s2.Payload(d.ID)
			if want := fmt.Sprintf("w=%d&i=%d", w, i/2); err != nil || string(p) != want {
				t.Fatalf("payload %s = %q, %v; want %q", d.ID, p, err, want)
			}
		}
	}
	st, _ := s2.Stats()
	if st["A"].Pending != writers*per || st["B"].Pending != writers*per {
		t.Fatalf("Stats = %+v, want %d pending each", st, writers*per)
	}
	due, _ := s2.Due("A", time.Now().Add(time.Hour), 2*writers*per)
	if len(due) != writers*per {
		t.Fatalf("Due(A) = %d, want %d", len(due), writers*per)
	}
}

// TestProducersConsumers runs enqueuers and a dispatcher-like drain at the
// same time: every delivery must be seen by Due exactly until it completes,
// which exercises the due-index seek hints against concurrent commits.
func TestProducersConsumers(t *testing.T) {
	s := openQueue(t, Options{})
	const producers, per = 8, 150
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if _, err := s.Enqueue(ctx, []NewDelivery{{DIN: "Q", Payload: fmt.Appendf(nil, "%d-%d", p, i)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	produced := make(chan struct{})
	go func() { wg.Wait(); close(produced) }()

	delivered := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(delivered) < producers*per {
		if time.Now().After(deadline) {
			t.Fatalf("drained %d of %d", len(delivered), producers*per)
		}
		due, err := s.Due("Q", time.Now(), 50)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range due {
			if delivered[d.ID] {
				t.Fatalf("Due returned delivered %s", d.ID)
			}
			out := Outcome{State: StateDelivered}
			if i%7 == 3 && len(d.Attempts) == 0 { // some retry once, due again at once
				out = Outcome{State: StatePending, NextAttempt: time.Now()}
			}
			if _, err := s.Complete(d.ID, Attempt{At: time.Now(), Status: 200}, out); err != nil {
				t.Fatal(err)
			}
			if out.State == StateDelivered {
				delivered[d.ID] = true
			}
		}
		if len(due) == 0 {
			select {
			case <-produced:
			case <-time.After(time.Millisecond):
			}
		}
	}
	<-produced
	if due, _ := s.Due("Q", time.Now().Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("left over: %v", ids(due))
	}
	if _, ok := s.NextDue("Q"); ok {
		t.Fatal("NextDue reports pending after the drain")
	}
	st, _ := s.Stats()
	if q := st["Q"]; q.Pending != 0 || q.Delivered != producers*per {
		t.Fatalf("Stats = %+v", q)
	}
}

func TestEnqueueContextAndValidation(t *testing.T) {
	s := openQueue(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Enqueue(ctx, []NewDelivery{{DIN: "1", Payload: []byte("x")}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Enqueue = %v", err)
	}
	if _, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: ""}}); err == nil {
		t.Fatal("empty DIN accepted")
	}
	if _, err := s.Complete("00000000000000000000000000000000", Attempt{}, Outcome{State: "bogus"}); err == nil {
		t.Fatal("invalid outcome state accepted")
	}
}

// TestBatchSplitting uses a tiny memtable so that one group commit exceeds
// Badger's transaction limit and must be split, and one Enqueue larger than a
// whole transaction is refused without disturbing the others.
func TestBatchSplitting(t *testing.T) {
	// Badger's path (held deliveries, and every Enqueue before the journal).
	s := openQueue(t, Options{MemTableSize: 1 << 20, ValueThreshold: 1 << 20, noJournal: true}) // max txn ≈ 157 KB
	payload := make([]byte, 8<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "S", Payload: payload}, {DIN: "S", Payload: payload}}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	huge := make([]NewDelivery, 40)
	for i := range huge {
		huge[i] = NewDelivery{DIN: "S", Payload: payload}
	}
	if _, err := s.Enqueue(context.Background(), huge); err == nil {
		t.Fatal("an Enqueue larger than a transaction was accepted")
	}
	st, _ := s.Stats()
	if st["S"].Pending != 128 {
		t.Fatalf("pending = %d, want 128", st["S"].Pending)
	}
}

// A completion waits (up to LazyDelay) for an enqueue and shares its synced
// commit; alone, it still commits once the delay is over.
func TestLazyCompletionSharesEnqueueCommit(t *testing.T) {
	s := openQueue(t, Options{LazyDelay: 10 * time.Second, noJournal: true})
	ctx := context.Background()
	ds, err := s.Enqueue(ctx, []NewDelivery{{DIN: "1001", Payload: []byte("a=1")}})
	if err != nil {
		t.Fatal(err)
	}
	before := s.batches.Load()
	completed := make(chan error, 1)
	go func() {
		_, err := s.Complete(ds[0].ID, Attempt{At: time.Now(), Status: 200}, Outcome{State: StateDelivered})
		completed <- err
	}()
	// The completion is parked in the committer (10 s delay) until an urgent
	// op arrives; then both go in one commit.
	select {
	case err := <-completed:
		t.Fatalf("completion committed alone before any enqueue (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := s.Enqueue(ctx, []NewDelivery{{DIN: "1001", Payload: []byte("b=2")}}); err != nil {
		t.Fatal(err)
	}
	if err := <-completed; err != nil {
		t.Fatal(err)
	}
	if got := s.batches.Load() - before; got != 1 {
		t.Fatalf("enqueue and completion took %d commits, want 1", got)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if c := st["1001"]; c.Delivered != 1 || c.Pending != 1 {
		t.Fatalf("counters after the shared commit: %+v", c)
	}

	// Alone, a completion is committed after the delay.
	s2 := openQueue(t, Options{LazyDelay: 20 * time.Millisecond, noJournal: true})
	ds2, err := s2.Enqueue(ctx, []NewDelivery{{DIN: "1001", Payload: []byte("c=3")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Complete(ds2[0].ID, Attempt{At: time.Now(), Status: 200}, Outcome{State: StateDelivered}); err != nil {
		t.Fatal(err)
	}
	d, err := s2.Get(ds2[0].ID)
	if err != nil || d.State != StateDelivered {
		t.Fatalf("after a lone completion: %+v, %v", d, err)
	}
}

// RetryMany makes the retryable ones pending in one write and skips the
// others, unknown ids included.
func TestRetryMany(t *testing.T) {
	s := openQueue(t, Options{})
	now := time.Now()
	recs, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "1", Payload: []byte("a=1")}, {DIN: "1", Payload: []byte("a=2")}, {DIN: "1", Payload: []byte("a=3")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs[:2] {
		if _, err := s.Complete(r.ID, Attempt{At: now, Status: 500}, Outcome{State: StateFailed, Error: "HTTP 500"}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.RetryMany([]string{recs[0].ID, recs[1].ID, recs[2].ID, "ffffffffffffffffffffffff", "not an id"}, now)
	if err != nil || len(got) != 2 || got[0].ID != recs[0].ID || got[1].ID != recs[1].ID || got[0].State != StatePending {
		t.Fatalf("RetryMany: %+v, %v", got, err)
	}
	st, _ := s.Stats()
	if st["1"].Pending != 3 || st["1"].Failed != 0 {
		t.Errorf("stats after: %+v", st["1"])
	}
	if again, err := s.RetryMany([]string{recs[0].ID}, now); err != nil || len(again) != 0 {
		t.Errorf("again: %+v, %v", again, err)
	}
}
