package fleet_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/fleet"
	"github.com/postbackedge/caddy-postback/internal/natstest"
	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

// openQueue joins the fleet as node and opens its queue with dins.
func openQueue(t *testing.T, urls []string, node string, replicas int, dins map[string]fleet.DINConfig) *fleet.Queue {
	t.Helper()
	f := join(t, urls, node, replicas)
	q, err := f.Queue(context.Background())
	if err != nil {
		t.Fatalf("Queue on %s: %v", node, err)
	}
	t.Cleanup(func() { q.Close() })
	if err := q.Configure(context.Background(), dins); err != nil {
		t.Fatalf("Configure on %s: %v", node, err)
	}
	return q
}

func enqueue(t *testing.T, q *fleet.Queue, din string, payloads ...string) []storage.Delivery {
	t.Helper()
	items := make([]storage.NewDelivery, len(payloads))
	for i, p := range payloads {
		items[i] = storage.NewDelivery{DIN: din, ContentType: "application/x-www-form-urlencoded", Payload: []byte(p)}
	}
	ds, err := q.Enqueue(context.Background(), items)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return ds
}

var okAttempt = storage.Attempt{Status: 200, Duration: time.Millisecond}

// Two edges drain one DIN of a three-server cluster at once: every
// delivery is attempted once, with its payload, and never more than the
// DIN's concurrency are in flight across both edges.
func TestQueueDrainedOnceAcrossEdges(t *testing.T) {
	c := natstest.Start(t, 3)
	dins := map[string]fleet.DINConfig{"1001": {Concurrency: 2, Timeout: 5 * time.Second}}
	qa := openQueue(t, c.URLs()[:1], "edge-a", 3, dins)
	qb := openQueue(t, c.URLs()[1:], "edge-b", 3, dins)

	const n = 40
	want := map[string]string{}
	for i, d := range enqueue(t, qa, "1001", payloads(n)...) {
		want[d.ID] = payloads(n)[i]
	}
	var (
		mu       sync.Mutex
		got      = map[string]int{}
		inflight atomic.Int32
		peak     atomic.Int32
		wg       sync.WaitGroup
	)
	for _, q := range []*fleet.Queue{qa, qb} {
		wg.Go(func() {
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				mu.Lock()
				done := len(got) == n
				mu.Unlock()
				if done {
					return
				}
				due, err := q.Due("1001", time.Now(), 8)
				if err != nil {
					t.Errorf("Due: %v", err)
					return
				}
				for _, d := range due {
					p, err := q.Payload(d.ID)
					if err != nil {
						t.Errorf("Payload %s: %v", d.ID, err)
						return
					}
					peak.Store(max(peak.Load(), inflight.Add(1)))
					time.Sleep(2 * time.Millisecond) // the partner answering
					inflight.Add(-1)
					if string(p) != want[d.ID] {
						t.Errorf("payload of %s: %q, want %q", d.ID, p, want[d.ID])
					}
					if _, err := q.Complete(d.ID, okAttempt, storage.Outcome{State: storage.StateDelivered}); err != nil {
						t.Errorf("Complete %s: %v", d.ID, err)
					}
					mu.Lock()
					got[d.ID]++
					mu.Unlock()
				}
				if len(due) == 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	if len(got) != n {
		t.Fatalf("%d of %d deliveries attempted", len(got), n)
	}
	for id, k := range got {
		if k != 1 {
			t.Errorf("%s attempted %d times", id, k)
		}
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("%d attempts in flight at once across the edges, concurrency is 2", p)
	}
	if dins, err := qa.PendingDINs(); err != nil || len(dins) != 0 {
		t.Errorf("PendingDINs after the drain: %v %v", dins, err)
	}
}

func payloads(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "ctransreceipt=Q" + string(rune('A'+i%26)) + "&n=" + time.Duration(i).String()
	}
	return out
}

// A retry goes back as a scheduled message: not due before its time, then
// due on any edge with its attempt recorded and its payload.
func TestQueueRetryIsScheduled(t *testing.T) {
	c := natstest.Start(t, 1)
	dins := map[string]fleet.DINConfig{"1001": {Concurrency: 4, Timeout: 5 * time.Second}}
	qa := openQueue(t, c.URLs(), "edge-a", 1, dins)
	qb := openQueue(t, c.URLs(), "edge-b", 1, dins)
	d := enqueue(t, qa, "1001", "a=1")[0]
	first := take(t, qa, "1001", d.ID)
	next := time.Now().Add(2 * time.Second)
	rec, err := qa.Complete(first.ID, storage.Attempt{Status: 503}, storage.Outcome{State: storage.StatePending, NextAttempt: next})
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != storage.StatePending || len(rec.Attempts) != 1 || rec.LastError != "HTTP 503" {
		t.Errorf("record after a failed attempt: %+v", rec)
	}
	if at, ok := qa.NextDue("1001"); !ok || at.Before(next) || at.After(next.Add(time.Second)) {
		t.Errorf("NextDue on the edge that scheduled it: %v %v, want about %v", at, ok, next)
	}
	if due, err := qb.Due("1001", time.Now(), 10); err != nil || len(due) != 0 {
		t.Fatalf("before its time: %d due, %v", len(due), err)
	}
	var again storage.Delivery
	testutil.WaitFor(t, "the retry to come due", 30*time.Second, func() bool {
		due, err := qb.Due("1001", time.Now(), 10)
		if err != nil || len(due) == 0 {
			return false
		}
		again = due[0]
		return true
	})
	if time.Now().Before(next) {
		t.Errorf("the retry came due early")
	}
	if again.ID != d.ID || len(again.Attempts) != 1 || again.Attempts[0].Status != 503 {
		t.Errorf("the retried delivery: %+v", again)
	}
	if p, err := qb.Payload(again.ID); err != nil || string(p) != "a=1" {
		t.Errorf("payload of the retry: %q %v", p, err)
	}
}

// take fetches deliveries of din on q until id comes, and starts its
// attempt.
func take(t *testing.T, q *fleet.Queue, din, id string) storage.Delivery {
	t.Helper()
	var got storage.Delivery
	testutil.WaitFor(t, "delivery "+id, 30*time.Second, func() bool {
		due, err := q.Due(din, time.Now(), 10)
		if err != nil {
			return false // NATS reconnecting, say: a later look may do
		}
		for _, d := range due {
			if d.ID == id {
				got = d
				return true
			}
		}
		return false
	})
	if _, err := q.Payload(id); err != nil {
		t.Fatal(err)
	}
	return got
}

// An edge killed mid-attempt: after the ack wait the other edge gets the
// delivery. A slow attempt on a live edge is renewed, not taken away.
func TestQueueEdgeKilledMidAttempt(t *testing.T) {
	c := natstest.Start(t, 1)
	dins := map[string]fleet.DINConfig{"1001": {Concurrency: 4, Timeout: time.Second, AckWait: 2 * time.Second}}
	qa := openQueue(t, c.URLs(), "edge-a", 1, dins)
	qb := openQueue(t, c.URLs(), "edge-b", 1, dins)
	ds := enqueue(t, qa, "1001", "slow=1", "killed=1")

	slow := take(t, qa, "1001", ds[0].ID)
	take(t, qa, "1001", ds[1].ID)
	// Three ack waits: the renewals keep the slow one on edge A.
	time.Sleep(6 * time.Second)
	if due, err := qb.Due("1001", time.Now(), 10); err != nil || len(due) != 0 {
		t.Fatalf("edge B got %d deliveries that edge A is attempting (%v)", len(due), err)
	}
	if _, err := qa.Complete(slow.ID, okAttempt, storage.Outcome{State: storage.StateDelivered}); err != nil {
		t.Fatal(err)
	}

	qa.Crash()
	got := take(t, qb, "1001", ds[1].ID)
	if p, err := qb.Payload(got.ID); err != nil || string(p) != "killed=1" {
		t.Errorf("payload on edge B: %q %v", p, err)
	}
	if _, err := qb.Complete(got.ID, okAttempt, storage.Outcome{State: storage.StateDelivered}); err != nil {
		t.Fatal(err)
	}
	if due, err := qb.Due("1001", time.Now(), 10); err != nil || len(due) != 0 {
		t.Errorf("after both: %d due (the delivered one came back?) %v", len(due), err)
	}
}

// A failed delivery keeps its payload in the fleet and is retried from
// another edge, once however often the retry is asked for.
func TestQueueFailedRetriedFromAnotherEdge(t *testing.T) {
	c := natstest.Start(t, 1)
	dins := map[string]fleet.DINConfig{"1001": {Concurrency: 4, Timeout: 5 * time.Second}}
	qa := openQueue(t, c.URLs(), "edge-a", 1, dins)
	qb := openQueue(t, c.URLs(), "edge-b", 1, dins)
	d := enqueue(t, qa, "1001", "failed=1")[0]
	take(t, qa, "1001", d.ID)
	rec, err := qa.Complete(d.ID, storage.Attempt{Error: "connection refused"}, storage.Outcome{State: storage.StateFailed})
	if err != nil || rec.State != storage.StateFailed {
		t.Fatalf("Complete failed: %+v %v", rec, err)
	}
	if _, err := qb.Retry("0123456789abcdef0123456789abcdef", time.Now()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("retry of an unknown id: %v, want ErrNotFound", err)
	}
	back, err := qb.RetryMany([]string{d.ID, d.ID}, time.Now())
	if err != nil || len(back) != 1 || back[0].State != storage.StatePending {
		t.Fatalf("RetryMany twice the same: %+v %v, want it put back once", back, err)
	}
	got := take(t, qa, "1001", d.ID)
	if len(got.Attempts) != 1 || got.Attempts[0].Error != "connection refused" {
		t.Errorf("the retried delivery lost its history: %+v", got)
	}
	if p, err := qa.Payload(d.ID); err != nil || string(p) != "failed=1" {
		t.Errorf("payload of the retried delivery: %q %v", p, err)
	}
}

// What the queue writes is sealed: no payload in clear in the NATS
// servers' store directories, pending or failed.
func TestQueueNothingInClearOnNATS(t *testing.T) {
	c := natstest.Start(t, 1)
	dins := map[string]fleet.DINConfig{"1001": {Concurrency: 4, Timeout: 5 * time.Second}}
	q := openQueue(t, c.URLs(), "edge-a", 1, dins)
	secret := "ccustcc=4111111111111111&ccustemail=queue-secret@example.com"
	d := enqueue(t, q, "1001", secret)[0]
	take(t, q, "1001", d.ID)
	if _, err := q.Complete(d.ID, storage.Attempt{Status: 500}, storage.Outcome{State: storage.StateFailed}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, q, "1001", secret) // one pending as well
	c.Shutdown()                  // the files are complete
	for _, dir := range c.StoreDirs() {
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, s := range []string{"4111111111111111", "queue-secret"} {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("%s holds %q in clear", p, s)
				}
			}
			return nil
		})
	}
}

var _ delivery.Store = fleet.QueueStore{}

// The fleet's stats with queue jetstream: pending (queued and scheduled)
// and failed counted once from the queue, the delivered ones from the
// edges that delivered them, whichever edge enqueued them.
func TestQueueFleetStats(t *testing.T) {
	c := natstest.Start(t, 1)
	dins := map[string]fleet.DINConfig{"1001": {Concurrency: 4, Timeout: 5 * time.Second}}
	fa := join(t, c.URLs(), "edge-a", 1)
	fb := join(t, c.URLs(), "edge-b", 1)
	stores := map[*fleet.Fleet]delivery.Store{}
	queues := map[*fleet.Fleet]*fleet.Queue{}
	for _, f := range []*fleet.Fleet{fa, fb} {
		q, err := f.Queue(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Configure(context.Background(), dins); err != nil {
			t.Fatal(err)
		}
		local, err := storage.Open(storage.Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		s := fleet.QueueStore{Queue: q, Local: local}
		t.Cleanup(func() { s.Close() })
		f.SetLocal(s)
		// As the engine has it: every record the store writes goes to the
		// fleet's history.
		stores[f], queues[f] = delivery.WithRecords(s, f.Records()), q
	}
	a, b := stores[fa], stores[fb]
	ds, err := a.Enqueue(context.Background(), []storage.NewDelivery{
		{DIN: "1001", Payload: []byte("one=1")}, {DIN: "1001", Payload: []byte("two=2")},
		{DIN: "1001", Payload: []byte("three=3")}, {DIN: "1001", Payload: []byte("four=4")},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Edge B delivers one, fails one, schedules a retry of one; one waits.
	for _, d := range ds[:3] {
		take(t, queues[fb], "1001", d.ID)
	}
	if _, err := b.Complete(ds[0].ID, okAttempt, storage.Outcome{State: storage.StateDelivered}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Complete(ds[1].ID, storage.Attempt{Status: 500}, storage.Outcome{State: storage.StateFailed}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Complete(ds[2].ID, storage.Attempt{Status: 503}, storage.Outcome{State: storage.StatePending, NextAttempt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*fleet.Fleet{fa, fb} {
		if err := f.PublishSnapshot(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var st storage.DINStats
	testutil.WaitFor(t, "the fleet's stats", 30*time.Second, func() bool {
		all, err := fa.History().Stats()
		st = all["1001"]
		return err == nil && st.Delivered == 1
	})
	// Pending: the one still in the queue (fetched by edge B, not
	// attempted) and the scheduled retry.
	if st.Pending != 2 || st.Failed != 1 || st.Delivered != 1 || st.LastError.IsZero() {
		t.Errorf("fleet stats %+v, want 2 pending, 1 failed, 1 delivered, a last error", st)
	}
	var rec storage.Delivery
	testutil.WaitFor(t, "the delivered record in the fleet's history", 30*time.Second, func() bool {
		rec, err = fa.History().Get(ds[0].ID)
		return err == nil && rec.State == storage.StateDelivered
	})
	if rec.Node != "edge-a" {
		t.Errorf("the record's node is %q, want edge-a (the edge that took it), though edge-b delivered it", rec.Node)
	}
}

// A bulk retry pages through the fleet's failed deliveries from any edge:
// newest first, by DIN, with a cursor.
func TestQueueFailedListedFleetWide(t *testing.T) {
	c := natstest.Start(t, 1)
	dins := map[string]fleet.DINConfig{"1001": {Concurrency: 8, Timeout: 5 * time.Second}, "1002": {Concurrency: 8, Timeout: 5 * time.Second}}
	qa := openQueue(t, c.URLs(), "edge-a", 1, dins)
	qb := openQueue(t, c.URLs(), "edge-b", 1, dins)
	var failed []string
	for _, din := range []string{"1001", "1001", "1002", "1001"} {
		d := enqueue(t, qa, din, "x=1")[0]
		take(t, qa, din, d.ID)
		if _, err := qa.Complete(d.ID, storage.Attempt{Status: 500}, storage.Outcome{State: storage.StateFailed}); err != nil {
			t.Fatal(err)
		}
		if din == "1001" {
			failed = append([]string{d.ID}, failed...) // newest first
		}
	}
	s := fleet.QueueStore{Queue: qb}
	var got []string
	f := storage.Filter{DIN: "1001", Limit: 2}
	for page := 0; ; page++ {
		items, next, err := s.List(f)
		if err != nil || page > 3 {
			t.Fatalf("page %d: %v", page, err)
		}
		for _, d := range items {
			got = append(got, d.ID)
		}
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if strings.Join(got, " ") != strings.Join(failed, " ") {
		t.Errorf("failed of 1001 listed %v, want %v", got, failed)
	}
}

// A retry that cannot be recorded (NATS away) leaves the delivery to come
// back: once NATS is back it is attempted again, never lost, never held
// for ever by the edge whose Complete failed.
func TestQueueCompleteFailsWhileNATSIsAway(t *testing.T) {
	c := natstest.Start(t, 1)
	dins := map[string]fleet.DINConfig{"1001": {Concurrency: 4, Timeout: time.Second, AckWait: 2 * time.Second}}
	q := openQueue(t, c.URLs(), "edge-a", 1, dins)
	d := enqueue(t, q, "1001", "away=1")[0]
	take(t, q, "1001", d.ID)
	c.Stop(0)
	if _, err := q.Complete(d.ID, storage.Attempt{Status: 503}, storage.Outcome{State: storage.StatePending, NextAttempt: time.Now().Add(10 * time.Second)}); err == nil {
		t.Fatal("Complete with NATS away succeeded")
	}
	c.Restart(0)
	c.WaitJetStream()
	again := take(t, q, "1001", d.ID)
	if len(again.Attempts) != 0 {
		t.Errorf("the attempt whose outcome was not recorded is in the record: %+v", again.Attempts)
	}
	if _, err := q.Complete(d.ID, okAttempt, storage.Outcome{State: storage.StateDelivered}); err != nil {
		t.Fatal(err)
	}
}
