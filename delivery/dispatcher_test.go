package delivery

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

func TestRetryAfterServerErrorThenDelivered(t *testing.T) {
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n <= 2 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	store := newFakeStore()
	id := store.add("7", "text/plain", []byte("x=1"), time.Now(), 0)
	obs := newRecorder()
	run(t, store, Options{Observer: obs}, &Destination{DIN: "7", URL: srv.url(t, "/"), Schedule: ms(0, 20, 20, 20)})
	// The observer hears last, after the store.
	testutil.WaitFor(t, "delivered", 5*time.Second, func() bool { return obs.fin(storage.StateDelivered) == 1 })

	d := store.get(id)
	if len(d.Attempts) != 3 {
		t.Fatalf("attempts %+v", d.Attempts)
	}
	for i, want := range []int{500, 500, 200} {
		if d.Attempts[i].Status != want {
			t.Errorf("attempt %d status %d, want %d", i+1, d.Attempts[i].Status, want)
		}
	}
	if !strings.Contains(d.Attempts[0].Error, "500") || d.Attempts[2].Error != "" {
		t.Errorf("attempt errors %q / %q", d.Attempts[0].Error, d.Attempts[2].Error)
	}
	// Each retry waited for its schedule (20ms ±20%).
	for i := 1; i < 3; i++ {
		if gap := d.Attempts[i].At.Sub(d.Attempts[i-1].At); gap < 16*time.Millisecond {
			t.Errorf("attempt %d came %s after the previous one", i+1, gap)
		}
	}
	for i, r := range srv.requests() {
		if got := r.Header.Get("X-Postback-Attempt"); got != strconv.Itoa(i+1) {
			t.Errorf("request %d: X-Postback-Attempt %q", i+1, got)
		}
	}
	if obs.get("7/http_error") != 2 || obs.get("7/success") != 1 || obs.fin(storage.StateDelivered) != 1 {
		t.Errorf("observer: %d http errors, %d successes", obs.get("7/http_error"), obs.get("7/success"))
	}
}

func alwaysFail(w http.ResponseWriter, r *http.Request, n int) {
	w.WriteHeader(http.StatusBadGateway)
}

func TestExhaustedScheduleIsSpooled(t *testing.T) {
	srv := newSink(t, alwaysFail)
	store := newFakeStore()
	payload := []byte("ccustcc=US&cverify=0A1B2C3D")
	id := store.add("9", "", payload, time.Now(), 0)
	var got atomic.Value
	spool := spoolFunc(func(din, sid string, p []byte) (string, error) {
		got.Store(din + "|" + sid + "|" + string(p))
		return "/spool/9/" + sid + ".asc", nil
	})
	obs := newRecorder()
	run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"), Schedule: ms(0, 5, 5), Spool: spool})
	testutil.WaitFor(t, "spooled", 5*time.Second, func() bool { return obs.fin(storage.StateSpooled) == 1 })

	d := store.get(id)
	if want := "9|" + id + "|" + string(payload); got.Load() != want {
		t.Errorf("spool got %q, want %q", got.Load(), want)
	}
	if d.SpoolFile != "/spool/9/"+id+".asc" || len(d.Attempts) != 3 || d.HasPayload {
		t.Errorf("record %+v", d)
	}
	if len(srv.requests()) != 3 || obs.fin(storage.StateSpooled) != 1 {
		t.Errorf("%d requests, %d spooled", len(srv.requests()), obs.fin(storage.StateSpooled))
	}
}

func TestSpoolErrorFailsAndKeepsPayload(t *testing.T) {
	srv := newSink(t, alwaysFail)
	store := newFakeStore()
	id := store.add("9", "", []byte("a=12345678"), time.Now(), 0)
	spool := spoolFunc(func(din, id string, p []byte) (string, error) {
		return "", errors.New("disk full for 12345678")
	})
	run(t, store, Options{}, &Destination{DIN: "9", URL: srv.url(t, "/"), Schedule: ms(0, 5), Spool: spool})
	testutil.WaitFor(t, "failed", 5*time.Second, func() bool { return store.get(id).State == storage.StateFailed })
	d := store.get(id)
	if !strings.HasPrefix(d.LastError, "spool: disk full") || strings.Contains(d.LastError, "12345678") {
		t.Errorf("last error %q", d.LastError)
	}
	if !store.hasPayload(id) || !d.HasPayload {
		t.Error("payload dropped after a spool error")
	}
}

func TestNoSpoolerFails(t *testing.T) {
	srv := newSink(t, alwaysFail)
	store := newFakeStore()
	id := store.add("9", "", []byte("a=1"), time.Now(), 0)
	obs := newRecorder()
	run(t, store, Options{Observer: obs}, &Destination{DIN: "9", URL: srv.url(t, "/"), Schedule: ms(0, 5)})
	testutil.WaitFor(t, "failed", 5*time.Second, func() bool { return obs.fin(storage.StateFailed) == 1 })
	d := store.get(id)
	if len(d.Attempts) != 2 || !strings.Contains(d.LastError, "exhausted") || !store.hasPayload(id) {
		t.Errorf("record %+v", d)
	}
	if obs.fin(storage.StateFailed) != 1 {
		t.Errorf("observer: %d failed", obs.fin(storage.StateFailed))
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	for _, c := range []struct {
		name, header string
		status       int
		min, max     time.Duration // of NextAttempt after the attempt's start
	}{
		{"seconds-503", "30", 503, 30 * time.Second, 31 * time.Second},
		{"date-429", "", 429, 118 * time.Second, 122 * time.Second}, // HTTP dates have whole seconds
		{"bounded", "86400", 503, 10 * time.Minute, 10*time.Minute + time.Second},
		{"not-earlier-than-schedule", "1", 503, 5 * time.Second, 5*time.Second + time.Second},
		{"ignored-on-500", "30", 500, 5 * time.Second, 5*time.Second + time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
				v := c.header
				if v == "" {
					v = time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat)
				}
				w.Header().Set("Retry-After", v)
				w.WriteHeader(c.status)
			})
			store := newFakeStore()
			id := store.add("1", "", []byte("a=1"), time.Now(), 0)
			run(t, store, Options{Jitter: -1, MaxRetryAfter: 10 * time.Minute},
				&Destination{DIN: "1", URL: srv.url(t, "/"), Schedule: []time.Duration{0, 5 * time.Second, time.Second}})
			testutil.WaitFor(t, "first attempt", 5*time.Second, func() bool { return len(store.get(id).Attempts) == 1 })
			d := store.get(id)
			wait := d.NextAttempt.Sub(d.Attempts[0].At)
			if d.State != storage.StatePending || wait < c.min || wait > c.max {
				t.Errorf("next attempt %s after the first, want in [%s, %s]", wait, c.min, c.max)
			}
		})
	}
}

func TestHangingDestinationDoesNotDelayAnother(t *testing.T) {
	release := make(chan struct{})
	hang := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	fast := newSink(t, nil)
	store := newFakeStore()
	d := run(t, store, Options{},
		&Destination{DIN: "dead", URL: hang.url(t, "/"), Timeout: 20 * time.Second, Concurrency: 2, Schedule: ms(0)},
		&Destination{DIN: "live", URL: fast.url(t, "/"), Schedule: ms(0)},
	)
	for range 20 {
		store.add("dead", "", []byte("a=1"), time.Now(), 0)
	}
	d.Notify("dead")
	testutil.WaitFor(t, "dead destination busy", 5*time.Second, func() bool { return len(hang.requests()) == 2 })

	// Notify is on the request path: it must return at once even while a
	// destination hangs.
	start := time.Now()
	for range 50 {
		store.add("live", "", []byte("b=2"), time.Now(), 0)
		d.Notify("live")
		d.Notify("dead")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("100 Notify calls took %s", el)
	}
	// Far below the dead destination's 20s timeout.
	testutil.WaitFor(t, "live deliveries", 5*time.Second, func() bool { return len(fast.requests()) == 50 })
	if n := len(hang.requests()); n != 2 {
		t.Errorf("dead destination got %d requests, want its concurrency 2", n)
	}
}

func TestStopLeavesInFlightPendingAndEndsGoroutines(t *testing.T) {
	hang := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) { <-r.Context().Done() })
	fine := newSink(t, nil)
	time.Sleep(20 * time.Millisecond) // let earlier tests' goroutines wind down
	base := runtime.NumGoroutine()

	store := newFakeStore()
	id := store.add("1", "", []byte("a=1"), time.Now(), 0)
	ok := store.add("2", "", []byte("a=1"), time.Now(), 0)
	d := New(store, Options{})
	mustSet(t, d, []*Destination{
		{DIN: "1", URL: hang.url(t, "/"), Schedule: ms(0, 10)},
		{DIN: "2", URL: fine.url(t, "/"), Schedule: ms(0)}, // leaves an idle keep-alive connection
	})
	d.Start()
	testutil.WaitFor(t, "attempt in flight", 5*time.Second, func() bool {
		return len(hang.requests()) == 1 && store.get(ok).State == storage.StateDelivered
	})

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := d.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("Stop took %s", el)
	}
	if dl := store.get(id); dl.State != storage.StatePending || len(dl.Attempts) != 0 {
		t.Errorf("cancelled attempt recorded: %+v", dl)
	}
	if err := d.Stop(context.Background()); err != nil {
		t.Errorf("second Stop = %v", err)
	}
	// No new work after Stop.
	store.add("2", "", []byte("a=2"), time.Now(), 0)
	d.Notify("2")
	d.Start()
	time.Sleep(50 * time.Millisecond)
	if n := len(fine.requests()); n != 1 {
		t.Errorf("%d requests after Stop", n)
	}
	// Every goroutine of the dispatcher, and of its connections, has ended
	// (the servers were counted in the base).
	testutil.WaitFor(t, "goroutines to end", 5*time.Second, func() bool { return runtime.NumGoroutine() <= base })
}

func TestStopWaitsForInFlightAttempt(t *testing.T) {
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		time.Sleep(100 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	})
	store := newFakeStore()
	id := store.add("1", "", []byte("a=1"), time.Now(), 0)
	d := run(t, store, Options{}, &Destination{DIN: "1", URL: srv.url(t, "/"), Schedule: ms(0)})
	testutil.WaitFor(t, "attempt in flight", 5*time.Second, func() bool { return len(srv.requests()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if st := store.get(id).State; st != storage.StateDelivered {
		t.Errorf("state %s: the in-flight attempt should have finished", st)
	}
}

func TestStartRetriesLeftoversWithAttemptNumber(t *testing.T) {
	srv := newSink(t, nil)
	store := newFakeStore()
	// Left pending by a crash after two recorded attempts.
	id := store.add("1", "", []byte("a=1"), time.Now().Add(-time.Hour), 2)
	future := store.add("1", "", []byte("a=2"), time.Now().Add(time.Hour), 1)
	run(t, store, Options{}, &Destination{DIN: "1", URL: srv.url(t, "/"), Schedule: ms(0, 0, 0, 0)})
	testutil.WaitFor(t, "delivered", 5*time.Second, func() bool { return store.get(id).State == storage.StateDelivered })
	reqs := srv.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("X-Postback-Attempt") != "3" {
		t.Fatalf("requests %+v", reqs)
	}
	if store.get(future).State != storage.StatePending {
		t.Error("a delivery not yet due was attempted")
	}
}

func TestDrainPagesWithBoundedLimit(t *testing.T) {
	srv := newSink(t, nil)
	store := newFakeStore()
	for i := range 3000 {
		store.add("1", "", []byte("n="+strconv.Itoa(i)), time.Now(), 0)
	}
	run(t, store, Options{}, &Destination{DIN: "1", URL: srv.url(t, "/"), Schedule: ms(0), Concurrency: 8})
	testutil.WaitFor(t, "all delivered", 20*time.Second, func() bool { return store.count(storage.StateDelivered) == 3000 })
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.maxLimit > maxBatch+8 {
		t.Errorf("Due asked for %d at once", store.maxLimit)
	}
	if srv.overlaps != 0 || len(srv.reqs) != 3000 {
		t.Errorf("%d requests, %d concurrent duplicates", len(srv.reqs), srv.overlaps)
	}
}

func TestImmediateRetriesNeverOverlap(t *testing.T) {
	var calls atomic.Int32
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if calls.Add(1)%3 != 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	store := newFakeStore()
	for range 200 {
		store.add("1", "", []byte("a=1"), time.Now(), 0)
	}
	run(t, store, Options{}, &Destination{DIN: "1", URL: srv.url(t, "/"), Schedule: ms(0, 0, 0, 0, 0, 0), Concurrency: 16})
	testutil.WaitFor(t, "all finished", 10*time.Second, func() bool { return store.count(storage.StatePending) == 0 })
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.overlaps != 0 {
		t.Errorf("%d attempts overlapped another attempt of the same delivery", srv.overlaps)
	}
	// Attempt numbers of each id run 1, 2, 3, ... without gaps or repeats.
	next := map[string]int{}
	for _, r := range srv.reqs {
		id := r.Header.Get("X-Postback-Id")
		next[id]++
		if got := r.Header.Get("X-Postback-Attempt"); got != strconv.Itoa(next[id]) {
			t.Fatalf("%s: attempt header %s, want %d", id, got, next[id])
		}
	}
}

func TestUnconfiguredDINWarnsOnceAndStaysPending(t *testing.T) {
	logs := &testutil.LogBuffer{}
	srv := newSink(t, nil)
	store := newFakeStore()
	id := store.add("404", "", []byte("a=1"), time.Now(), 0)
	d := run(t, store, Options{Logger: logs.Slog()}, &Destination{DIN: "1", URL: srv.url(t, "/")})
	d.Notify("404")
	d.Notify("404")
	time.Sleep(50 * time.Millisecond)
	if n := strings.Count(logs.String(), "not configured"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
	if store.get(id).State != storage.StatePending || len(srv.requests()) != 0 {
		t.Error("delivery of an unconfigured DIN was touched")
	}
	// Configured later: delivered.
	mustSet(t, d, []*Destination{{DIN: "1", URL: srv.url(t, "/")}, {DIN: "404", URL: srv.url(t, "/")}})
	testutil.WaitFor(t, "delivered", 5*time.Second, func() bool { return store.get(id).State == storage.StateDelivered })
}

func TestSetDestinationsSwapWhileWorking(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request, n int) {
		time.Sleep(2 * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	}
	a1, a2, b := newSink(t, slow), newSink(t, slow), newSink(t, slow)
	logs := &testutil.LogBuffer{}
	store := newFakeStore()
	d := run(t, store, Options{Logger: logs.Slog()},
		&Destination{DIN: "A", URL: a1.url(t, "/one"), Schedule: ms(0), Concurrency: 2})

	for range 300 {
		store.add("A", "", []byte("a=1"), time.Now(), 0)
	}
	d.Notify("A")
	testutil.WaitFor(t, "work under way", 5*time.Second, func() bool { return len(a1.requests()) >= 5 })

	// Change A's URL and add B, mid-drain.
	mustSet(t, d, []*Destination{
		{DIN: "A", URL: a2.url(t, "/two"), Schedule: ms(0), Concurrency: 4},
		{DIN: "B", URL: b.url(t, "/b"), Schedule: ms(0)},
	})
	for range 20 {
		store.add("B", "", []byte("b=1"), time.Now(), 0)
	}
	d.Notify("B")
	testutil.WaitFor(t, "A and B drained", 10*time.Second, func() bool { return store.count(storage.StateDelivered) == 320 })
	if len(a2.requests()) == 0 || len(b.requests()) != 20 || len(a1.requests())+len(a2.requests()) != 300 {
		t.Errorf("a1 %d, a2 %d, b %d requests", len(a1.requests()), len(a2.requests()), len(b.requests()))
	}

	// Remove A: its new deliveries wait, with one warning.
	mustSet(t, d, []*Destination{{DIN: "B", URL: b.url(t, "/b"), Schedule: ms(0)}})
	late := store.add("A", "", []byte("a=2"), time.Now(), 0)
	d.Notify("A")
	time.Sleep(50 * time.Millisecond)
	if store.get(late).State != storage.StatePending {
		t.Error("removed DIN still delivering")
	}
	if !strings.Contains(logs.String(), "not configured") {
		t.Error("no warning for the removed DIN")
	}
	// Back again: delivered to the new URL.
	mustSet(t, d, []*Destination{{DIN: "A", URL: a1.url(t, "/three"), Schedule: ms(0)}})
	testutil.WaitFor(t, "late one delivered", 5*time.Second, func() bool { return store.get(late).State == storage.StateDelivered })
	reqs := a1.requests()
	if last := reqs[len(reqs)-1]; last.URL.Path != "/three" {
		t.Errorf("re-added A posted to %s", last.URL.Path)
	}
	for _, s := range []*sink{a1, a2, b} {
		s.mu.Lock()
		if s.overlaps != 0 {
			t.Errorf("%d overlapping attempts", s.overlaps)
		}
		s.mu.Unlock()
	}
}

func TestStoreErrorsBackOff(t *testing.T) {
	srv := newSink(t, nil)
	store := newFakeStore()
	store.failDue = errors.New("disk on fire")
	id := store.add("1", "", []byte("a=1"), time.Now(), 0)
	run(t, store, Options{}, &Destination{DIN: "1", URL: srv.url(t, "/")})
	time.Sleep(300 * time.Millisecond)
	store.mu.Lock()
	calls := store.dueCalls
	store.failDue = nil
	store.mu.Unlock()
	if calls > 3 {
		t.Errorf("%d Due calls in 300ms while the store fails: no back-off", calls)
	}
	testutil.WaitFor(t, "delivered after recovery", 5*time.Second, func() bool { return store.get(id).State == storage.StateDelivered })
}

func TestMissingPayloadFails(t *testing.T) {
	srv := newSink(t, nil)
	store := newFakeStore()
	id := store.add("1", "", []byte("a=1"), time.Now(), 0)
	store.mu.Lock()
	delete(store.payloads, id)
	store.mu.Unlock()
	run(t, store, Options{}, &Destination{DIN: "1", URL: srv.url(t, "/")})
	testutil.WaitFor(t, "failed", 5*time.Second, func() bool { return store.get(id).State == storage.StateFailed })
	if len(srv.requests()) != 0 {
		t.Error("sent without payload")
	}
}

func TestStartWarnsAboutPendingOfUnconfiguredDIN(t *testing.T) {
	logs := &testutil.LogBuffer{}
	srv := newSink(t, nil)
	store := newFakeStore()
	store.add("orphan", "", []byte("a=1"), time.Now(), 0)
	store.add("1", "", []byte("a=1"), time.Now(), 0)
	run(t, store, Options{Logger: logs.Slog()}, &Destination{DIN: "1", URL: srv.url(t, "/")})
	testutil.WaitFor(t, "configured one delivered", 5*time.Second, func() bool { return store.count(storage.StateDelivered) == 1 })
	if out := logs.String(); strings.Count(out, "not configured") != 1 || !strings.Contains(out, "din=orphan") {
		t.Errorf("want one warning for orphan:\n%s", out)
	}
}
