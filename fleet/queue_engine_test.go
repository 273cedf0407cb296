package fleet_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/fleet"
	"github.com/postbackedge/caddy-postback/internal/natstest"
	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

// countingSink answers after delay, failing the first failFirst requests
// of each delivery with 503; it counts the requests per X-Postback-Id.
type countingSink struct {
	srv       *httptest.Server
	delay     time.Duration
	failFirst int
	mu        sync.Mutex
	hits      map[string]int
	bodies    map[string]string
}

func newCountingSink(t testing.TB, delay time.Duration, failFirst int) *countingSink {
	s := &countingSink{delay: delay, failFirst: failFirst, hits: map[string]int{}, bodies: map[string]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		id := r.Header.Get("X-Postback-Id")
		s.mu.Lock()
		s.hits[id]++
		n := s.hits[id]
		s.bodies[id] = string(b)
		s.mu.Unlock()
		time.Sleep(s.delay)
		if n <= s.failFirst {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("OK"))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *countingSink) snapshot() (map[string]int, map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, b := map[string]int{}, map[string]string{}
	for k, v := range s.hits {
		h[k] = v
	}
	for k, v := range s.bodies {
		b[k] = v
	}
	return h, b
}

// edgeEngine is an edge's delivery engine over the fleet's queue, as the
// postback app builds it with queue jetstream.
func edgeEngine(t testing.TB, urls []string, node string, replicas int, dest *delivery.Destination, ackWait time.Duration) *delivery.Engine {
	t.Helper()
	f := join(t, urls, node, replicas)
	q, err := f.Queue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Configure(context.Background(), map[string]fleet.DINConfig{dest.DIN: {Concurrency: dest.Concurrency, Timeout: dest.Timeout, AckWait: ackWait}}); err != nil {
		t.Fatal(err)
	}
	local, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	e := delivery.NewEngine(delivery.WithRecords(fleet.QueueStore{Queue: q, Local: local}, f.Records()), delivery.Options{PollInterval: 200 * time.Millisecond})
	if err := e.SetDestinations([]*delivery.Destination{dest}); err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Stop(ctx)
	})
	return e
}

// The dispatcher over the fleet's queue, on two edges: each delivery
// reaches the destination with its payload, the retries of the schedule
// (the first two attempts answered 503) are made by whichever edge, and
// an attempt slower than the ack wait is not made twice: the edge that
// makes it renews its hold, the first attempt too, whose payload comes
// from memory.
func TestQueueEnginesDeliverOnce(t *testing.T) {
	c := natstest.Start(t, 3)
	sink := newCountingSink(t, 2500*time.Millisecond, 2)
	u, _ := url.Parse(sink.srv.URL + "/collect")
	dest := func() *delivery.Destination {
		return &delivery.Destination{DIN: "1001", URL: u, InsecureHTTP: true, Timeout: 10 * time.Second,
			Schedule: []time.Duration{0, time.Second, time.Second, time.Second}, Concurrency: 4, BreakerThreshold: -1}
	}
	ea := edgeEngine(t, c.URLs()[:1], "edge-a", 3, dest(), 1500*time.Millisecond)
	edgeEngine(t, c.URLs()[1:], "edge-b", 3, dest(), 1500*time.Millisecond)

	want := map[string]string{}
	for i := range 6 {
		body := "ctransreceipt=E" + string(rune('0'+i))
		recs, err := ea.Enqueue(context.Background(), []string{"1001"}, "application/x-www-form-urlencoded", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		want[recs[0].ID] = body
	}
	testutil.WaitFor(t, "every delivery answered 200", 60*time.Second, func() bool {
		hits, _ := sink.snapshot()
		if len(hits) < len(want) {
			return false
		}
		for id := range want {
			if hits[id] < 3 {
				return false
			}
		}
		return true
	})
	time.Sleep(3 * time.Second) // a duplicate would show by now: the ack wait is 1.5s
	hits, bodies := sink.snapshot()
	for id, body := range want {
		if hits[id] != 3 || bodies[id] != body {
			t.Errorf("delivery %s: %d requests (want 3: two 503s, then 200), body %q", id, hits[id], bodies[id])
		}
	}
	if len(hits) != len(want) {
		t.Errorf("%d ids at the sink, want %d", len(hits), len(want))
	}
}
