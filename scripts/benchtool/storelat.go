package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// cmdStoreLat measures what the store adds to a request's latency: enqueues
// of one ~830-byte delivery, open loop at -rate over -conns writers, as
// secondary_post makes them, while -workers goroutines complete them as
// delivered (what the dispatcher does), without any HTTP. Prints the
// enqueue latency percentiles (from the due time) as one JSON line.
func cmdStoreLat(args []string) error {
	fs := flag.NewFlagSet("storelat", flag.ExitOnError)
	dir := fs.String("dir", "", "store folder (required; created)")
	rate := fs.Float64("rate", 2000, "enqueues per second")
	conns := fs.Int("conns", 32, "concurrent writers")
	workers := fs.Int("workers", 4, "goroutines completing deliveries (0: none)")
	dur := fs.Duration("d", 8*time.Second, "duration")
	keyHex := fs.String("key", "", "encryption key, 64 hex characters (optional)")
	vthr := fs.Int64("value-threshold", 0, "storage.Options.ValueThreshold (0: the store's default)")
	memt := fs.Int64("memtable", 0, "storage.Options.MemTableSize (0: the store's default)")
	vlogSize := fs.Int64("vlog-size", 0, "storage.Options.ValueLogFileSize (0: the store's default)")
	settle := fs.Duration("settle", 0, "wait this long after Open before the first enqueue")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("-dir is required")
	}
	var key []byte
	if *keyHex != "" {
		var err error
		if key, err = hex.DecodeString(*keyHex); err != nil {
			return err
		}
	}
	s, err := storage.Open(storage.Options{Dir: *dir, EncryptionKey: key, ValueThreshold: *vthr, MemTableSize: *memt, ValueLogFileSize: *vlogSize})
	if err != nil {
		return err
	}
	defer s.Close()
	time.Sleep(*settle)
	payload := make([]byte, 830)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	n := int(*rate * dur.Seconds())
	due := make(chan time.Time, n)
	ids := make(chan string, n)
	lats := make([][]time.Duration, *conns)
	var wg sync.WaitGroup
	for w := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for at := range due {
				ds, err := s.Enqueue(context.Background(), []storage.NewDelivery{{DIN: "1001", ContentType: "application/x-www-form-urlencoded", Payload: payload}})
				if err != nil {
					continue
				}
				lats[w] = append(lats[w], time.Since(at))
				if *workers > 0 {
					ids <- ds[0].ID
				}
			}
		}()
	}
	var cwg sync.WaitGroup
	var completed int64
	var cmu sync.Mutex
	for range *workers {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for id := range ids {
				if _, err := s.Payload(id); err != nil {
					continue
				}
				if _, err := s.Complete(id, storage.Attempt{At: time.Now(), Status: 200}, storage.Outcome{State: storage.StateDelivered}); err == nil {
					cmu.Lock()
					completed++
					cmu.Unlock()
				}
			}
		}()
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / *rate)
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		due <- at
	}
	close(due)
	wg.Wait()
	el := time.Since(start)
	close(ids)
	cwg.Wait()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"enqueued": len(all), "completed": completed, "seconds": round3(el.Seconds()),
		"p50_ms": pctMs(all, 50), "p90_ms": pctMs(all, 90), "p99_ms": pctMs(all, 99), "p999_ms": pctMs(all, 99.9), "max_ms": pctMs(all, 100),
	})
}

// cmdFsyncLat measures this disk: a 512-byte write and fsync of one file in
// a loop for -d, and prints the rate and the latency percentiles. It is the
// unit a synced commit costs (Badger syncs two files per commit). With
// -rate it measures instead the floor of any request path that waits for an
// fsync: requests due at -rate, open loop, each answered by the next write
// and fsync that covers it, one at a time (a group commit with nothing else
// around it); the latencies count from the due time.
func cmdFsyncLat(args []string) error {
	fs := flag.NewFlagSet("fsynclat", flag.ExitOnError)
	dir := fs.String("dir", os.TempDir(), "folder on the disk to measure")
	dur := fs.Duration("d", 3*time.Second, "duration")
	rate := fs.Float64("rate", 0, "requests per second, open loop (0: fsync in a closed loop)")
	_ = fs.Parse(args)
	f, err := os.CreateTemp(*dir, "fsync-probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if *rate > 0 {
		return groupFsyncFloor(f, *rate, *dur)
	}
	buf := make([]byte, 512)
	var lats []time.Duration
	start := time.Now()
	for i := 0; time.Since(start) < *dur; i++ {
		t := time.Now()
		if _, err := f.WriteAt(buf, int64(i%64)*512); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		lats = append(lats, time.Since(t))
	}
	el := time.Since(start)
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"fsync_per_s": round3(float64(len(lats)) / el.Seconds()), "p50_ms": pctMs(lats, 50), "p99_ms": pctMs(lats, 99), "p999_ms": pctMs(lats, 99.9), "max_ms": pctMs(lats, 100),
	})
}

// groupFsyncFloor writes ~1 KiB per request into f, already written in
// full with zeros (as the journal's segments are), and fsyncs once per group.
func groupFsyncFloor(f *os.File, rate float64, dur time.Duration) error {
	const size, per = 64 << 20, 1024
	if _, err := f.Write(make([]byte, size)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	n := int(rate * dur.Seconds())
	due := make(chan time.Time, n)
	go func() {
		start := time.Now()
		interval := time.Duration(float64(time.Second) / rate)
		for i := range n {
			at := start.Add(time.Duration(i) * interval)
			time.Sleep(time.Until(at))
			due <- at
		}
		close(due)
	}()
	buf := make([]byte, 0, 256*per)
	var lats []time.Duration
	var off int64
	syncs := 0
	for at := range due {
		group := []time.Time{at}
	gather:
		for {
			select {
			case a, ok := <-due:
				if !ok {
					break gather
				}
				group = append(group, a)
			default:
				break gather
			}
		}
		buf = buf[:len(group)*per]
		if off+int64(len(buf)) > size {
			off = 0
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
		off += int64(len(buf))
		if err := f.Sync(); err != nil {
			return err
		}
		syncs++
		for _, a := range group {
			lats = append(lats, time.Since(a))
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"rate": rate, "requests": len(lats), "fsyncs": syncs,
		"p50_ms": pctMs(lats, 50), "p90_ms": pctMs(lats, 90), "p99_ms": pctMs(lats, 99), "p999_ms": pctMs(lats, 99.9), "max_ms": pctMs(lats, 100),
	})
}

// pctMs is the p-th percentile of lats in ms (lats is sorted in place).
func pctMs(lats []time.Duration, p float64) float64 {
	if len(lats) == 0 {
		return 0
	}
	slices.Sort(lats)
	i := int(math.Ceil(p/100*float64(len(lats)))) - 1
	return round3(float64(lats[max(0, min(i, len(lats)-1))].Microseconds()) / 1000)
}
