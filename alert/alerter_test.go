package alert

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// Several failures within min_interval: one alert at once, then one that
// stands for the rest, with count; the suppressed ones are counted.
func TestAlerterDebouncesAndSends(t *testing.T) {
	s := newSink(t, nil)
	c := newCounts()
	a := startAlerter(t, Options{Webhooks: []Webhook{{URL: s.srv.URL}}, MinInterval: 300 * time.Millisecond, Node: "edge-a", Counters: c})
	for range 4 {
		a.Notify(Event{Kind: DeliveryFailed, DIN: "1001"})
	}
	waitFor(t, "two alerts", 10*time.Second, func() bool { return len(s.got()) >= 2 })
	got := s.got()
	if got[0].Count != 1 || got[1].Count != 3 {
		t.Fatalf("counts %d then %d, want 1 then 3", got[0].Count, got[1].Count)
	}
	for _, b := range got {
		if b.Event != DeliveryFailed || b.DIN != "1001" || b.Node != "edge-a" || !strings.Contains(b.Text, "destination 1001") {
			t.Errorf("body %+v", b)
		}
		if _, err := time.Parse(time.RFC3339, b.At); err != nil {
			t.Errorf("at %q: %v", b.At, err)
		}
	}
	waitFor(t, "the counters", 5*time.Second, func() bool { return c.get(c.sent, DeliveryFailed) == 2 })
	if n := c.get(c.suppressed, DeliveryFailed); n != 3 {
		t.Errorf("suppressed %d, want 3", n)
	}
	if len(s.got()) != 2 {
		t.Errorf("%d alerts, want 2", len(s.got()))
	}
}

// Notify never blocks: with nothing reading (not started), a full queue
// drops the event and counts it.
func TestNotifyNeverBlocks(t *testing.T) {
	c := newCounts()
	a, err := New(Options{Webhooks: []Webhook{{URL: "https://127.0.0.1:1/"}}, QueueSize: 2, Counters: c})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	done := make(chan struct{})
	go func() {
		for range 1000 {
			a.Notify(Event{Kind: CircuitOpen, DIN: "1"})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Notify blocked on a full queue")
	}
	if a.Dropped() != 998 || c.get(c.failed, CircuitOpen) != 998 {
		t.Errorf("dropped %d, failed %d; want 998", a.Dropped(), c.get(c.failed, CircuitOpen))
	}
}

// A dead webhook does not delay a live one, and its failures are counted
// after the last try.
func TestDeadWebhookDoesNotDelayAnother(t *testing.T) {
	live := newSink(t, nil)
	dead := newSink(t, func(int) int { return http.StatusInternalServerError })
	c := newCounts()
	startAlerter(t, Options{Webhooks: []Webhook{{URL: dead.srv.URL}, {URL: live.srv.URL}}, Counters: c,
		Attempts: 3, Backoff: 50 * time.Millisecond}).Notify(Event{Kind: CircuitOpen, DIN: "9"})
	waitFor(t, "the live webhook's alert", 10*time.Second, func() bool { return len(live.got()) == 1 })
	waitFor(t, "the dead webhook's failure", 10*time.Second, func() bool { return c.get(c.failed, CircuitOpen) == 1 })
	if n := dead.attempts(); n != 3 {
		t.Errorf("dead webhook tried %d times, want 3", n)
	}
	if n := c.get(c.sent, CircuitOpen); n != 1 {
		t.Errorf("sent %d, want 1", n)
	}
}

// The oldest pending delivery older than max_pending_age is reported; a
// young one is not.
func TestPendingTooOld(t *testing.T) {
	s := newSink(t, nil)
	old := time.Now().Add(-time.Hour)
	startAlerter(t, Options{Webhooks: []Webhook{{URL: s.srv.URL}}, MaxPendingAge: 30 * time.Minute, CheckEvery: 20 * time.Millisecond,
		Pending: func() (map[string]time.Time, error) {
			return map[string]time.Time{"1001": old, "1002": time.Now()}, nil
		}})
	waitFor(t, "pending_too_old", 10*time.Second, func() bool { return len(s.got()) >= 1 })
	b := s.got()[0]
	if b.Event != PendingTooOld || b.DIN != "1001" || b.OldestPending != old.UTC().Format(time.RFC3339) || !strings.Contains(b.Text, "waited 1h") {
		t.Errorf("body %+v", b)
	}
}

// Stop ends every goroutine, a request in flight included.
func TestStopCancelsInFlight(t *testing.T) {
	block := make(chan struct{})
	s := newSink(t, func(int) int { <-block; return http.StatusOK })
	defer close(block)
	a, err := New(Options{Webhooks: []Webhook{{URL: s.srv.URL}}, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	a.Notify(Event{Kind: CircuitOpen, DIN: "1"})
	waitFor(t, "the request in flight", 10*time.Second, func() bool { return s.attempts() == 1 })
	stopped := make(chan struct{})
	go func() { a.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop waited for the webhook")
	}
	a.Notify(Event{Kind: CircuitOpen, DIN: "1"}) // after Stop: a no-op, not a panic or a block
}

// Two Alerters sharing a Memory (the old and the new config during a
// reload) send a first alert once, and the second flushes what was folded.
func TestSharedMemoryAcrossReload(t *testing.T) {
	s := newSink(t, nil)
	mem := NewMemory()
	o := Options{Webhooks: []Webhook{{URL: s.srv.URL}}, MinInterval: 300 * time.Millisecond, Memory: mem}
	old, _ := New(o)
	old.Start()
	old.Notify(Event{Kind: CircuitOpen, DIN: "1"})
	waitFor(t, "the first alert", 10*time.Second, func() bool { return len(s.got()) == 1 })
	old.Notify(Event{Kind: CircuitOpen, DIN: "1"})
	waitFor(t, "the fold", 10*time.Second, func() bool { _, ok := mem.Next(); return ok })
	old.Stop()
	startAlerter(t, o).Notify(Event{Kind: CircuitOpen, DIN: "1"})
	waitFor(t, "the folded alert", 10*time.Second, func() bool { return len(s.got()) == 2 })
	if b := s.got()[1]; b.Count != 2 {
		t.Errorf("folded alert count %d, want 2", b.Count)
	}
}
