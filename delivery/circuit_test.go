package delivery

import (
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

// A dead destination with a backlog: after the threshold the loop stops
// attempting, so records are not rewritten once per pending delivery.
func TestCircuitHoldsBacklogOfDeadDestination(t *testing.T) {
	srv := newSink(t, alwaysFail)
	store := newFakeStore()
	for range 200 {
		store.add("9", "", []byte("a=1"), time.Now(), 0)
	}
	obs := newRecorder()
	logs := &testutil.LogBuffer{}
	d := run(t, store, Options{Observer: obs, Logger: logs.Slog()}, &Destination{DIN: "9", URL: srv.url(t, "/"),
		Schedule: ms(0, 3_600_000), BreakerThreshold: 5, BreakerMaxProbe: time.Hour})
	waitOpen(t, obs, "9")
	since, open := d.CircuitOpen("9")
	if !open || time.Since(since) > 5*time.Second {
		t.Fatalf("CircuitOpen = %s, %t", since, open)
	}
	// In-flight attempts end; nothing new starts (the first probe is an hour away).
	time.Sleep(100 * time.Millisecond)
	n := len(srv.requests())
	if n < 5 || n > 5+DefaultConcurrency {
		t.Fatalf("%d requests; want the threshold 5 plus at most the %d in flight", n, DefaultConcurrency)
	}
	for range 20 {
		store.add("9", "", []byte("a=2"), time.Now(), 0)
		d.Notify("9")
	}
	time.Sleep(100 * time.Millisecond)
	if got := len(srv.requests()); got != n {
		t.Errorf("%d more requests while the circuit is open", got-n)
	}
	if p := store.count(storage.StatePending); p != 220 {
		t.Errorf("%d pending, want all 220", p)
	}
	if !strings.Contains(logs.String(), "circuit open") {
		t.Error("no log line for the open circuit")
	}
}

// A partner that comes back: a probe succeeds, the circuit closes and the
// backlog drains at full speed.
func TestCircuitProbeClosesAndDrains(t *testing.T) {
	srv, up := downUntilUp(t, http.StatusServiceUnavailable, "")
	store := newFakeStore()
	for range 100 {
		store.add("9", "", []byte("a=1"), time.Now(), 0)
	}
	obs := newRecorder()
	d := run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"),
		Schedule: ms(0, 3_600_000), BreakerThreshold: 3, BreakerMaxProbe: 20 * time.Millisecond})
	waitOpen(t, obs, "9")
	// Probes come one at a time, every 20ms (±20 %).
	time.Sleep(200 * time.Millisecond)
	failed := len(srv.requests())
	if failed > 3+DefaultConcurrency+15 {
		t.Errorf("%d requests in 200ms while open; probes should be ~10", failed)
	}
	up.Store(true)
	// Each failed attempt pushed its delivery an hour out; the rest drain.
	testutil.WaitFor(t, "backlog delivered", 5*time.Second, func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		for _, dl := range store.recs {
			if dl.State != storage.StateDelivered && len(dl.Attempts) != 1 {
				return false
			}
		}
		return true
	})
	if n := store.count(storage.StateDelivered); n < 100-failed-1 {
		t.Errorf("%d delivered after %d failed requests", n, failed)
	}
	if got := obs.circuits(); !slices.Equal(got, []string{"9:true", "9:false"}) {
		t.Errorf("circuit changes %v", got)
	}
	if _, open := d.CircuitOpen("9"); open {
		t.Error("CircuitOpen still true")
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.overlaps != 0 {
		t.Errorf("%d overlapping attempts", srv.overlaps)
	}
}

// Held deliveries are spooled once they have waited their whole schedule,
// without the attempts the open circuit spared them.
func TestCircuitSpoolsHeldDeliveriesAfterTheirSpan(t *testing.T) {
	srv := newSink(t, alwaysFail)
	store := newFakeStore()
	var ids []string
	for range 30 {
		ids = append(ids, store.add("9", "", []byte("a=1"), time.Now(), 0))
	}
	var spooled atomic.Int32
	spool := spoolFunc(func(din, id string, p []byte) (string, error) {
		if string(p) != "a=1" {
			t.Errorf("spooled %q", p)
		}
		spooled.Add(1)
		return "/spool/" + id, nil
	})
	obs := newRecorder()
	run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"),
		Schedule: ms(0, 100, 100), BreakerThreshold: 2, BreakerMaxProbe: 50 * time.Millisecond, Spool: spool})
	start := time.Now()
	testutil.WaitFor(t, "all spooled", 10*time.Second, func() bool { return store.count(storage.StateSpooled) == 30 })
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("spooled after %s, before the 200ms span", el)
	}
	var untouched int
	for _, id := range ids {
		dl := store.get(id)
		if len(dl.Attempts) == 0 {
			untouched++
			if !strings.Contains(dl.LastError, "circuit open") || dl.SpoolFile != "/spool/"+id {
				t.Errorf("held delivery: %+v", dl)
			}
		}
	}
	// Without the breaker: 30 × 3 requests. With it: the threshold, what
	// was in flight, and probes every 50 ms for the 200 ms span.
	if n := len(srv.requests()); n > 40 || untouched < 15 {
		t.Errorf("%d requests, %d deliveries spooled without an attempt", n, untouched)
	}
	if int(spooled.Load()) != 30 || obs.fin(storage.StateSpooled) != 30 {
		t.Errorf("spooler called %d times, observer heard %d", spooled.Load(), obs.fin(storage.StateSpooled))
	}
}

// New settings (a corrected URL) are judged afresh: no waiting for the probe.
func TestCircuitResetBySettingsChange(t *testing.T) {
	dead := newSink(t, alwaysFail)
	good := newSink(t, nil)
	store := newFakeStore()
	for range 50 {
		store.add("9", "", []byte("a=1"), time.Now(), 0)
	}
	obs := newRecorder()
	dest := func(s *sink) *Destination {
		return &Destination{DIN: "9", URL: s.url(t, "/"), Schedule: ms(0, 3_600_000), BreakerThreshold: 3, BreakerMaxProbe: time.Hour}
	}
	d := run(t, store, Options{Observer: obs}, dest(dead))
	waitOpen(t, obs, "9")
	mustSet(t, d, []*Destination{dest(good)})
	// The deliveries that failed once are due in an hour; the others now.
	testutil.WaitFor(t, "untouched ones delivered", 5*time.Second, func() bool {
		return store.count(storage.StateDelivered) == 50-len(dead.requests())
	})
	if got := obs.circuits(); !slices.Equal(got, []string{"9:true", "9:false"}) {
		t.Errorf("circuit changes %v", got)
	}
}

// A DIN removed (or a dispatcher stopped) with its circuit open reports it
// closed, so that a gauge does not stay at 1 for a loop that is gone.
func TestCircuitClosedWhenLoopEnds(t *testing.T) {
	srv := newSink(t, alwaysFail)
	store := newFakeStore()
	for range 20 {
		store.add("9", "", []byte("a=1"), time.Now(), 0)
	}
	obs := newRecorder()
	d := run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"),
		Schedule: ms(0, 3_600_000), BreakerThreshold: 2, BreakerMaxProbe: time.Hour})
	waitOpen(t, obs, "9")
	d.SetDestinations(nil)
	testutil.WaitFor(t, "circuit reported closed", 5*time.Second, func() bool {
		return slices.Equal(obs.circuits(), []string{"9:true", "9:false"})
	})
	if _, open := d.CircuitOpen("9"); open {
		t.Error("CircuitOpen true for a removed DIN")
	}
}

// An operator's retry while the circuit is open sends the next probe at
// once, even when the destination asked for an hour's pause.
func TestCircuitProbeNow(t *testing.T) {
	srv, up := downUntilUp(t, http.StatusServiceUnavailable, "3600")
	store := newFakeStore()
	for range 20 {
		store.add("9", "", []byte("a=1"), time.Now(), 0)
	}
	obs := newRecorder()
	// One attempt at a time: with more, one sent before the circuit opened
	// could reach the sink after it is up, succeed and close the circuit.
	d := run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"),
		Schedule: ms(0, 3_600_000), BreakerThreshold: 2, BreakerMaxProbe: time.Hour, Concurrency: 1})
	waitOpen(t, obs, "9")
	up.Store(true)
	time.Sleep(50 * time.Millisecond)
	if n := store.count(storage.StateDelivered); n != 0 {
		t.Fatalf("%d delivered while the circuit waits out Retry-After", n)
	}
	d.ProbeNow("9")
	testutil.WaitFor(t, "the probe and the drain", 5*time.Second, func() bool {
		return slices.Equal(obs.circuits(), []string{"9:true", "9:false"}) && store.count(storage.StateDelivered) == 20-2
	})
}

// A held delivery is never given up before the destination had a probe's
// chance: with a one-attempt schedule (span 0), the wait for the next probe.
func TestCircuitHoldsAtLeastUntilTheNextProbe(t *testing.T) {
	srv, up := downUntilUp(t, http.StatusBadGateway, "")
	store := newFakeStore()
	for range 2 {
		store.add("9", "", []byte("a=1"), time.Now(), 0)
	}
	obs := newRecorder()
	d := run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"),
		Schedule: ms(0), BreakerThreshold: 2, BreakerMaxProbe: 300 * time.Millisecond})
	waitOpen(t, obs, "9")
	late := store.add("9", "", []byte("a=2"), time.Now(), 0)
	d.Notify("9")
	time.Sleep(100 * time.Millisecond)
	if st := store.get(late).State; st != storage.StatePending {
		t.Fatalf("a delivery enqueued while the circuit is open was %s at once; want it held for the probe", st)
	}
	up.Store(true)
	testutil.WaitFor(t, "the held delivery delivered by the probe", 5*time.Second, func() bool {
		return store.get(late).State == storage.StateDelivered
	})
}

// downUntilUp is a partner that answers status (with Retry-After ra, when
// set) until up is set, then 204.
func downUntilUp(t *testing.T, status int, ra string) (*sink, *atomic.Bool) {
	up := new(atomic.Bool)
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if up.Load() {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(status)
	})
	return srv, up
}

// waitOpen waits until the observer heard din's circuit open.
func waitOpen(t *testing.T, obs *recorder, din string) {
	t.Helper()
	testutil.WaitFor(t, "circuit open", 5*time.Second, func() bool { return slices.Contains(obs.circuits(), din+":true") })
}

// The flaky TestManualRetryProbesOpenCircuit's cause: a delivery enqueued
// while the attempt that opens the circuit was in flight became due before
// that attempt failed, but after it started. That failure says nothing of
// the new delivery, so it must wait for a probe, not be given up at once
// with no attempt (one-attempt schedule: span 0).
func TestGiveUpWaitsForAProbeStartedAfterDue(t *testing.T) {
	store := newFakeStore()
	first := store.add("9", "", []byte("a=1"), time.Now(), 0)
	inFlight, release := make(chan struct{}), make(chan struct{})
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			close(inFlight)
			<-release
		}
		w.WriteHeader(http.StatusBadGateway)
	})
	obs := newRecorder()
	d := run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"),
		Schedule: ms(0), Concurrency: 1, BreakerThreshold: 1, BreakerMaxProbe: time.Hour})
	<-inFlight
	late := store.add("9", "", []byte("a=2"), time.Now(), 0)
	d.Notify("9")
	close(release) // the first attempt fails and opens the circuit
	waitOpen(t, obs, "9")
	d.ProbeNow("9")
	testutil.WaitFor(t, "the late delivery to be probed", 5*time.Second, func() bool {
		return store.get(late).State != storage.StatePending
	})
	if got := store.get(late); got.State != storage.StateFailed || len(got.Attempts) != 1 {
		t.Errorf("late delivery: %s after %d attempts; want failed after the probe's one attempt", got.State, len(got.Attempts))
	}
	if got := store.get(first); got.State != storage.StateFailed || len(got.Attempts) != 1 {
		t.Errorf("first delivery: %s after %d attempts", got.State, len(got.Attempts))
	}
}

// The case TestManualRetryProbesOpenCircuit still hit under load: the
// queue was behind, so the attempts that opened the circuit started after
// the later deliveries became due. Those attempts were for other deliveries;
// the later ones must wait for a probe, not be given up with no attempt.
func TestGiveUpWaitsForAProbeNotTheOpeningAttempts(t *testing.T) {
	store := newFakeStore()
	past := time.Now().Add(-time.Minute) // all due before any attempt starts
	var ids []string
	for range 4 {
		ids = append(ids, store.add("9", "", []byte("a=1"), past, 0))
	}
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusServiceUnavailable) })
	obs := newRecorder()
	run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"),
		Schedule: ms(0), Concurrency: 1, BreakerThreshold: 2, BreakerMaxProbe: time.Hour})
	waitOpen(t, obs, "9")
	testutil.WaitFor(t, "the two opening attempts recorded", 5*time.Second, func() bool {
		return store.count(storage.StateFailed) == 2
	})
	time.Sleep(100 * time.Millisecond) // a give-up would follow the opening at once
	for _, id := range ids {
		if d := store.get(id); d.State == storage.StateFailed && len(d.Attempts) == 0 {
			t.Errorf("%s given up with no attempt while no probe had been sent", id)
		}
	}
	if p := store.count(storage.StatePending); p != 2 {
		t.Errorf("%d pending, want the two held for a probe", p)
	}
}
