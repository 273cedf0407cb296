package fleet_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/internal/natstest"
)

// BenchmarkQueueDrain: b.N deliveries enqueued through the engine into the
// fleet's queue, then drained by it to a local sink (concurrency 4), on
// one server and on a cluster of three (R3). Reports enqueues/s (each
// acknowledged by JetStream) and deliveries/s.
func BenchmarkQueueDrain(b *testing.B) {
	for _, replicas := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			c := natstest.Start(b, replicas)
			sink := newCountingSink(b, 0, 0)
			u, _ := url.Parse(sink.srv.URL + "/collect")
			dest := &delivery.Destination{DIN: "1001", URL: u, InsecureHTTP: true, Timeout: 10 * time.Second, Concurrency: 4, BreakerThreshold: -1}
			e := edgeEngine(b, c.URLs(), "edge-a", replicas, dest, 0)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if _, err := e.Enqueue(context.Background(), []string{"1001"}, "text/plain", []byte("ctransreceipt=BENCH")); err != nil {
					b.Fatal(err)
				}
			}
			enq := time.Since(start)
			for {
				if h, _ := sink.snapshot(); len(h) >= b.N {
					break
				}
				if time.Since(start) > 5*time.Minute {
					b.Fatal("not drained in 5 minutes")
				}
				time.Sleep(5 * time.Millisecond)
			}
			b.ReportMetric(float64(b.N)/enq.Seconds(), "enqueues/s")
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
		})
	}
}
