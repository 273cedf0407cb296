package delivery

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

// A bulk retry puts back every failed delivery of the filter, across
// pages, and none of another DIN; repeated, it puts back none; the retried
// ones are delivered.
func TestEngineRetryMatching(t *testing.T) {
	var up atomic.Bool
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if up.Load() && r.URL.Path == "/one" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	})
	off := -1
	e := startEngine(t, nil,
		&Destination{DIN: "1", URL: srv.url(t, "/one"), Schedule: ms(0), BreakerThreshold: off, Concurrency: 16},
		&Destination{DIN: "2", URL: srv.url(t, "/two"), Schedule: ms(0), BreakerThreshold: off})
	const n = retryPage + 100 // two pages
	for range n {
		if _, err := e.Enqueue(context.Background(), []string{"1"}, "", []byte("a=1")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Enqueue(context.Background(), []string{"2"}, "", []byte("b=1")); err != nil {
		t.Fatal(err)
	}
	failed := func(din string) int {
		st, _ := e.Stats()
		return st[din].Failed
	}
	testutil.WaitFor(t, "every first attempt to fail", 60*time.Second, func() bool { return failed("1") == n && failed("2") == 1 })

	up.Store(true)
	got, err := e.RetryMatching(context.Background(), storage.Filter{DIN: "1", State: storage.StateFailed, Limit: 3}, time.Now())
	if err != nil || got != n {
		t.Fatalf("RetryMatching: %d, %v; want %d", got, err, n)
	}
	// Repeated at once: they are pending or delivered (the sink is up), so
	// none is put back twice.
	if again, err := e.RetryMatching(context.Background(), storage.Filter{DIN: "1", State: storage.StateFailed}, time.Now()); err != nil || again != 0 {
		t.Fatalf("repeated: %d, %v", again, err)
	}
	testutil.WaitFor(t, "the retried deliveries delivered", 60*time.Second, func() bool {
		st, _ := e.Stats()
		return st["1"].Delivered == n
	})
	if failed("2") != 1 {
		t.Errorf("DIN 2's failed delivery was touched: %d failed", failed("2"))
	}
	if got, err := e.RetryMatching(context.Background(), storage.Filter{DIN: "1"}, time.Now()); err != nil || got != 0 {
		t.Errorf("after delivery: %d retried, %v", got, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.RetryMatching(ctx, storage.Filter{}, time.Now()); err == nil {
		t.Error("a cancelled bulk retry went on")
	}
}
