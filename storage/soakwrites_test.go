package storage

import (
	"context"
	"encoding/json"
	"expvar"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// TestSoakHistoryWrites measures what Badger writes to disk per notification
// on the money path: a 1 KiB delivery enqueued, delivered at its first
// attempt, and its notification log record, by 32 workers. Badger's write
// volume (memtable flushes plus compactions) is the CPU that competes with
// the request path (docs/performance-history.md, "The notification log's
// own store"). Badger's metrics are process-wide expvars, so this runs
// alone:
//
//	STORAGE_SOAK=1 go test -p 1 -count=1 -run 'TestSoakHistoryWrites$' -v ./storage
func TestSoakHistoryWrites(t *testing.T) {
	soakOnly(t)
	const cycles, workers = 100_000, 32
	o := Options{Dir: filepath.Join(t.TempDir(), "db")}
	o.tune = func(b badger.Options) badger.Options { return b.WithMetricsEnabled(true) }
	s := openQueue(t, o)
	payloads := soakPayloads(4096)
	var (
		next  atomic.Int64
		mu    sync.Mutex
		notes []Notification
		wg    sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := next.Add(1); n <= cycles; n = next.Add(1) {
				ds, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "1001", Payload: payloads[int(n)%len(payloads)]}})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Complete(ds[0].ID, Attempt{At: time.Now(), Status: 200}, Outcome{State: StateDelivered}); err != nil {
					t.Error(err)
					return
				}
				// The record the notification log makes of an accepted
				// notification with the README's labels, in its batches.
				mu.Lock()
				notes = append(notes, Notification{At: time.Now(), Host: "shop.example", Path: "/ipn.php", Method: "POST",
					IP: "203.0.113.7", Outcome: OutcomeAccepted, Status: 200, Deliveries: []string{ds[0].ID},
					Labels: map[string]string{"ctransreceipt": fmt.Sprintf("R%08d", n), "ctransaction": "SALE"}})
				var batch []Notification
				if len(notes) == 256 {
					batch, notes = notes, nil
				}
				mu.Unlock()
				if err := s.AppendNotifications(batch); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	elapsed := time.Since(start)
	if err := s.Close(); err != nil { // flushes what the memtables still hold
		t.Fatal(err)
	}
	l0 := expvarInt(t, "badger_write_bytes_l0")
	var compacted int64
	var byLevel map[string]int64
	if err := json.Unmarshal([]byte(expvar.Get("badger_write_bytes_compaction").String()), &byLevel); err != nil {
		t.Fatal(err)
	}
	for _, v := range byLevel {
		compacted += v
	}
	perNote := float64(l0+compacted) / cycles
	t.Logf("%d cycles in %s: Badger wrote %.0f bytes per notification (flushes %.0f, compactions %.0f: %v)",
		cycles, elapsed.Round(time.Millisecond), perNote, float64(l0)/cycles, float64(compacted)/cycles, byLevel)
	// With the log in the queue's database: 2,030 bytes (its history was
	// rewritten by every flush); in its own, in JSON: 950; now: about 510.
	if perNote > 800 {
		t.Errorf("Badger writes %.0f bytes per notification, want at most 800", perNote)
	}
}

func expvarInt(t *testing.T, name string) int64 {
	t.Helper()
	v, ok := expvar.Get(name).(*expvar.Int)
	if !ok {
		t.Fatalf("no expvar %s", name)
	}
	return v.Value()
}
