package delivery

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

// startEngine runs an engine over a real Badger store in a temporary
// folder; it is stopped at cleanup.
func startEngine(t *testing.T, obs Observer, dests ...*Destination) *Engine {
	t.Helper()
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(store, Options{Observer: obs})
	if err := e.SetDestinations(plainHTTP(dests)); err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return e
}

// countingObs counts enqueues on top of the recorder.
type countingObs struct {
	*recorder
	enqueued atomic.Int64
}

func (o *countingObs) Enqueued(string) { o.enqueued.Add(1) }

// What the request path does: one durable delivery per DIN, sent at once,
// each destination getting the same bytes, and the history and the
// observer agreeing.
func TestEngineEnqueueDeliversEveryCopy(t *testing.T) {
	a, b := newSink(t, nil), newSink(t, nil)
	obs := &countingObs{recorder: newRecorder()}
	e := startEngine(t, obs,
		&Destination{DIN: "A", URL: a.url(t, "/a")},
		&Destination{DIN: "B", URL: b.url(t, "/b"), Method: "get"})
	recs, err := e.Enqueue(context.Background(), []string{"A", "B"}, "application/x-www-form-urlencoded", []byte("x=1&y=%40"))
	if err != nil || len(recs) != 2 {
		t.Fatalf("Enqueue = %d records, %v", len(recs), err)
	}
	testutil.WaitFor(t, "both copies delivered", 10*time.Second, func() bool {
		st, err := e.Stats()
		return err == nil && st["A"].Delivered == 1 && st["B"].Delivered == 1
	})
	if got := string(a.requests()[0].Body); got != "x=1&y=%40" {
		t.Errorf("POST body %q", got)
	}
	if got := b.requests()[0].URL.RawQuery; got != "x=1&y=%40" {
		t.Errorf("GET query %q", got)
	}
	if n := obs.enqueued.Load(); n != 2 {
		t.Errorf("observer heard %d enqueues, want 2", n)
	}
	if n := obs.fin(storage.StateDelivered); n != 2 {
		t.Errorf("observer heard %d deliveries, want 2", n)
	}
	d, err := e.Get(recs[0].ID)
	if err != nil || d.State != storage.StateDelivered || len(d.Attempts) != 1 {
		t.Errorf("Get = %+v, %v", d, err)
	}
	if got := e.DINs(); strings.Join(got, ",") != "A,B" {
		t.Errorf("DINs = %v", got)
	}
}

// An operator's retry of a failed delivery wakes its worker at once: with
// a 10 s poll, the delivery arriving within the wait proves it.
func TestEngineRetryWakesTheWorker(t *testing.T) {
	var up atomic.Bool
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if !up.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	e := startEngine(t, nil, &Destination{DIN: "1", URL: srv.url(t, "/"), Schedule: ms(0)})
	recs, err := e.Enqueue(context.Background(), []string{"1"}, "", []byte("a=1"))
	if err != nil {
		t.Fatal(err)
	}
	id := recs[0].ID
	testutil.WaitFor(t, "the one attempt to fail", 10*time.Second, func() bool {
		d, err := e.Get(id)
		return err == nil && d.State == storage.StateFailed
	})
	up.Store(true)
	if _, err := e.Retry(id, time.Now()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the retried delivery", 5*time.Second, func() bool {
		d, err := e.Get(id)
		return err == nil && d.State == storage.StateDelivered
	})
	if _, err := e.Retry(id, time.Now()); err == nil {
		t.Error("a delivered delivery was retried")
	}
}

// A reload's redact list reaches the running workers.
func TestEngineSetSensitive(t *testing.T) {
	e := NewEngine(newMemStoreForEngine(t), Options{})
	if e.dispatcher.sensitive("pin") {
		t.Fatal("sensitive before any rule")
	}
	e.SetSensitive(func(name string) bool { return name == "pin" })
	if !e.dispatcher.sensitive("pin") || e.dispatcher.sensitive("x") {
		t.Error("the rule set by SetSensitive is not the dispatcher's")
	}
	e.SetSensitive(nil)
	if e.dispatcher.sensitive("pin") {
		t.Error("SetSensitive(nil) kept the old rule")
	}
}

// newMemStoreForEngine opens a store that is closed at cleanup, for tests
// that do not start the engine.
func newMemStoreForEngine(t *testing.T) *storage.Store {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// Stop stops the workers, then closes the store; a second Stop is harmless
// and the request path then gets the store's ErrClosed, never a hang.
func TestEngineStopClosesTheStore(t *testing.T) {
	store, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(store, Options{})
	e.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := e.Enqueue(ctx, []string{"1"}, "", []byte("a=1")); err == nil {
		t.Error("Enqueue after Stop succeeded")
	}
}
