package delivery

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

func TestFreshPayloadsBounds(t *testing.T) {
	f := newFreshPayloads(10, 3)
	f.put("a", []byte("1234"))
	f.put("b", []byte("1234"))
	f.put("c", []byte("12")) // 10 bytes, 3 entries: all kept
	if n, b := f.len(); n != 3 || b != 10 {
		t.Fatalf("len = %d entries, %d bytes", n, b)
	}
	f.put("d", []byte("1")) // over the count: the oldest (a) goes
	if _, ok := f.take("a"); ok {
		t.Fatal("a kept beyond the entry bound")
	}
	f.put("e", []byte("12345")) // 7+5 bytes: the oldest (b) goes, c+d+e = 8
	if _, ok := f.take("b"); ok {
		t.Fatal("b kept beyond the byte bound")
	}
	if p, ok := f.take("c"); !ok || string(p) != "12" {
		t.Fatalf("take(c) = %q, %v", p, ok)
	}
	if p, ok := f.take("e"); !ok || string(p) != "12345" {
		t.Fatalf("take(e) = %q, %v", p, ok)
	}
	if _, ok := f.take("e"); ok {
		t.Fatal("a payload was taken twice")
	}
	f.put("big", make([]byte, 11)) // larger than the whole budget
	if _, ok := f.take("big"); ok {
		t.Fatal("an oversized payload was kept")
	}
	if p, ok := f.take("d"); !ok || string(p) != "1" {
		t.Fatalf("take(d) = %q, %v", p, ok)
	}
	if n, b := f.len(); n != 0 || b != 0 {
		t.Fatalf("after taking everything: %d entries, %d bytes", n, b)
	}
	var nilCache *freshPayloads
	nilCache.put("x", []byte("1"))
	if _, ok := nilCache.take("x"); ok {
		t.Fatal("a disabled cache returned a payload")
	}
}

// Entries taken out of order must not let the FIFO grow without bound.
func TestFreshPayloadsOrderStaysBounded(t *testing.T) {
	f := newFreshPayloads(1<<20, 100)
	for i := range 100_000 {
		f.put(fmt.Sprint(i), []byte("x"))
		if i%2 == 1 { // take the newest, leave the older one to eviction
			f.take(fmt.Sprint(i))
		}
	}
	if n, _ := f.len(); n != 99 { // the bound, less the newest, just taken
		t.Fatalf("%d entries kept, want 99", n)
	}
	if len(f.order) > 4*100+1024 {
		t.Fatalf("FIFO holds %d ids for 100 entries", len(f.order))
	}
}

// A payload handed over by Offer serves the first attempt without a store
// read; a retry reads the store.
func TestOfferedPayloadServesFirstAttempt(t *testing.T) {
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 || n == 3 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	store := newFakeStore()
	offered := store.add("7", "text/plain", []byte("x=1"), time.Now(), 0)
	obs := newRecorder()
	d := New(store, Options{Observer: obs})
	mustSet(t, d, []*Destination{{DIN: "7", URL: srv.url(t, "/"), Schedule: ms(0, 20)}})
	d.Offer(offered, []byte("x=1"))
	d.Start()
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	testutil.WaitFor(t, "delivered", 5*time.Second, func() bool { return obs.fin(storage.StateDelivered) == 1 })
	store.mu.Lock()
	reads := store.payloadReads
	store.mu.Unlock()
	if reads != 1 { // the retry only
		t.Fatalf("%d payload reads from the store, want 1 (the retry)", reads)
	}
	for _, r := range srv.requests() {
		if string(r.Body) != "x=1" {
			t.Fatalf("sent %q, want x=1", r.Body)
		}
	}
	if got := store.get(offered); got.State != storage.StateDelivered || len(got.Attempts) != 2 {
		t.Fatalf("offered delivery: %+v", got)
	}
}
