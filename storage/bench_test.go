package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// rawFsyncRate measures this disk: small write + fsync of one file, in a loop.
func rawFsyncRate(tb testing.TB, dir string, d time.Duration) float64 {
	tb.Helper()
	f, err := os.OpenFile(filepath.Join(dir, "fsync-probe"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 512)
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := f.WriteAt(buf, int64(n%64)*512); err != nil {
			tb.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			tb.Fatal(err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkFsync reports this disk's raw fsync/s, the unit group commit is
// measured against.
func BenchmarkFsync(b *testing.B) {
	dir := b.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := f.WriteAt(buf, int64(i%64)*512); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsync/s")
}

// BenchmarkEnqueue: b.N enqueues of one 1 KiB delivery, spread over W
// concurrent writers, for both sync modes. It also reports the raw fsync/s
// measured just before, so enqueue/fsync shows what group commit gains.
func BenchmarkEnqueue(b *testing.B) {
	payload := make([]byte, 1024)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	// sync=none and sync=logmodel are not durable: they measure what limits
	// group commit (docs/performance-history.md). none: Badger without any sync, the
	// ceiling of anything built on its write path. logmodel: Badger unsynced
	// plus one 16 KiB write + fdatasync of a separate, preallocated file per
	// group commit: the I/O of a write-ahead log of our own (without its
	// replay).
	// sync=journal is the shipped request path (journaled.go); the table of
	// fresh deliveries is unbounded here so that what is measured is the
	// journal's group commit, not the spill of a queue nobody drains.
	// The others write Badger on the request path, as before the journal.
	for _, mode := range []struct {
		name           string
		journal        bool
		perBatch       bool
		noSync, append bool
	}{{"sync=journal", true, false, false, false}, {"sync=badger", false, false, false, false},
		{"sync=perbatch", false, true, false, false},
		{"sync=none", false, false, true, false}, {"sync=logmodel", false, false, true, true}} {
		for _, writers := range []int{1, 32, 128} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode.name, writers), func(b *testing.B) {
				dir := b.TempDir()
				fsyncs := rawFsyncRate(b, dir, 300*time.Millisecond)
				o := Options{Dir: filepath.Join(dir, "db"), syncPerBatch: mode.perBatch, noJournal: !mode.journal}
				if mode.journal {
					o.FreshCount, o.FreshBytes, o.FreshAge = 1<<30, 1<<40, time.Hour
				}
				if mode.noSync {
					o.tune = func(bo badger.Options) badger.Options { return bo.WithSyncWrites(false) }
				}
				if mode.journal {
					// Steady state: segments zeroed ahead (journalfiles.go).
					// The first start has no spare yet; one opening leaves one.
					first, err := Open(o)
					if err != nil {
						b.Fatal(err)
					}
					first.journal.files.wg.Wait()
					if err := first.Close(); err != nil {
						b.Fatal(err)
					}
				}
				s := openQueue(b, o)
				if mode.append {
					// Written in full first: overwriting allocated blocks keeps
					// fdatasync from committing metadata, as a recycled log would.
					const logSize = 16 << 20
					f, err := os.OpenFile(filepath.Join(dir, "log"), os.O_CREATE|os.O_RDWR, 0o600)
					if err != nil {
						b.Fatal(err)
					}
					defer f.Close()
					if _, err := f.Write(make([]byte, logSize)); err != nil {
						b.Fatal(err)
					}
					if err := f.Sync(); err != nil {
						b.Fatal(err)
					}
					frame := make([]byte, 16<<10)
					var off int64
					s.beforeCommit = func() {
						if _, err := f.WriteAt(frame, off); err != nil {
							b.Error(err)
						}
						off = (off + int64(len(frame))) % logSize
						if err := syscall.Fdatasync(int(f.Fd())); err != nil {
							b.Error(err)
						}
					}
				}
				var next atomic.Int64
				b.ResetTimer()
				var wg sync.WaitGroup
				for range writers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if _, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "1001", Payload: payload}}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				rate := float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(rate, "deliveries/s")
				b.ReportMetric(fsyncs, "fsync/s")
				b.ReportMetric(rate/fsyncs, "enq/fsync")
				commits := s.batches.Load()
				if mode.journal {
					commits = int64(s.jcommits.Load())
				}
				b.ReportMetric(float64(b.N)/float64(max(commits, 1)), "ops/commit")
			})
		}
	}
}

// BenchmarkComplete: the drain side. b.N pending deliveries are completed as
// delivered by W concurrent workers (the dispatcher runs one per in-flight
// delivery).
func BenchmarkComplete(b *testing.B) {
	for _, workers := range []int{1, 32} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			// Badger's completion (a retried or spilled delivery's); a fresh
			// delivery's waits up to AbsorbDelay to share a batch, so that
			// its rate per worker is 1/AbsorbDelay by design.
			s := openQueue(b, Options{noJournal: true})
			payload := make([]byte, 1024)
			var ids []string
			batch := make([]NewDelivery, 0, 256)
			for len(ids) < b.N {
				batch = batch[:0]
				for range min(256, b.N-len(ids)) {
					batch = append(batch, NewDelivery{DIN: "1001", Payload: payload})
				}
				ds, err := s.Enqueue(context.Background(), batch)
				if err != nil {
					b.Fatal(err)
				}
				for _, d := range ds {
					ids = append(ids, d.ID)
				}
			}
			var next atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(len(ids)) {
							return
						}
						if _, err := s.Complete(ids[i], Attempt{At: time.Now(), Status: 200}, Outcome{State: StateDelivered}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acks/s")
		})
	}
}

// BenchmarkDue measures one Due(limit 50) call on a DIN whose due index head
// holds many deleted entries: the seek hint must keep it cheap.
func BenchmarkDue(b *testing.B) {
	s := openQueue(b, Options{})
	var items []NewDelivery
	for range 20000 {
		items = append(items, NewDelivery{DIN: "1001", Payload: []byte("x")})
	}
	for i := 0; i < len(items); i += 500 {
		ds, err := s.Enqueue(context.Background(), items[i:i+500])
		if err != nil {
			b.Fatal(err)
		}
		if i < 19000 { // deliver all but the last 1000: tombstones at the head
			var wg sync.WaitGroup
			for _, d := range ds {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := s.Complete(d.ID, Attempt{Status: 200}, Outcome{State: StateDelivered}); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
		}
	}
	now := time.Now().Add(time.Hour)
	b.ResetTimer()
	for b.Loop() {
		due, err := s.Due("1001", now, 50)
		if err != nil || len(due) != 50 {
			b.Fatalf("Due = %d, %v", len(due), err)
		}
	}
}
