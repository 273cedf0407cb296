package delivery

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// BenchmarkDrainBadger is BenchmarkDrain against the real store, whose
// Complete is a synced (group) commit: it shows what the disk allows.
func BenchmarkDrainBadger(b *testing.B) {
	for _, c := range []struct{ dins, conc int }{{1, 4}, {4, 4}, {1, 32}} {
		b.Run(fmt.Sprintf("dins=%d/concurrency=%d", c.dins, c.conc), func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			u, _ := url.Parse(srv.URL + "/sink")
			store, err := storage.Open(storage.Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			var dests []*Destination
			for i := range c.dins {
				dests = append(dests, &Destination{DIN: fmt.Sprint(i), URL: u, Concurrency: c.conc})
			}
			payload := []byte("ccustname=Jane+Doe&ccustemail=jane%40example.com&ctransamount=1999&ctransreceipt=ABCD1234&cverify=0A1B2C3D")
			batch := make([]storage.NewDelivery, 0, 500)
			for i := range b.N {
				batch = append(batch, storage.NewDelivery{DIN: fmt.Sprint(i % c.dins), ContentType: "application/x-www-form-urlencoded", Payload: payload})
				if len(batch) == cap(batch) || i == b.N-1 {
					if _, err := store.Enqueue(context.Background(), batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			drainAndReport(b, store, dests, 3*time.Minute)
		})
	}
}
