package delivery

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// countObs closes done once want deliveries have finished.
type countObs struct {
	NopObserver
	n, want atomic.Int64
	done    chan struct{}
}

func (o *countObs) Finished(din string, st storage.State) {
	if o.n.Add(1) == o.want.Load() {
		close(o.done)
	}
}

// BenchmarkDrain measures how fast a backlog drains to a local sink: b.N
// deliveries spread over the DINs, all due, through loopback HTTP/1.1 with
// keep-alive and the in-memory store. Run with e.g. -benchtime=20000x.
func BenchmarkDrain(b *testing.B) {
	for _, c := range []struct{ dins, conc int }{{1, 4}, {1, 16}, {4, 4}} {
		b.Run(fmt.Sprintf("dins=%d/concurrency=%d", c.dins, c.conc), func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			u, _ := url.Parse(srv.URL + "/sink")
			store := newFakeStore()
			var dests []*Destination
			for i := range c.dins {
				dests = append(dests, &Destination{DIN: fmt.Sprint(i), URL: u, Concurrency: c.conc})
			}
			payload := []byte("ccustname=Jane+Doe&ccustemail=jane%40example.com&ctransamount=1999&ctransreceipt=ABCD1234&cverify=0A1B2C3D")
			now := time.Now()
			for i := range b.N {
				store.add(fmt.Sprint(i%c.dins), "application/x-www-form-urlencoded", payload, now, 0)
			}
			b.ReportAllocs()
			drainAndReport(b, store, dests, 2*time.Minute)
			if n := store.count(storage.StateDelivered); n != b.N {
				b.Fatalf("%d delivered, want %d", n, b.N)
			}
		})
	}
}

// drainAndReport starts a dispatcher on store, times until b.N deliveries
// have finished, reports deliveries/s and stops it.
func drainAndReport(b *testing.B, store Queue, dests []*Destination, timeout time.Duration) {
	b.Helper()
	obs := &countObs{done: make(chan struct{})}
	obs.want.Store(int64(b.N))
	d := New(store, Options{Observer: obs})
	mustSet(b, d, dests)
	b.ResetTimer()
	start := time.Now()
	d.Start()
	select {
	case <-obs.done:
	case <-time.After(timeout):
		b.Fatalf("only %d of %d delivered", obs.n.Load(), b.N)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "deliveries/s")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Stop(ctx); err != nil {
		b.Fatal(err)
	}
}
