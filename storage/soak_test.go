package storage

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// The soak tests produce the numbers in docs/performance-history.md ("Storage tuning"). They take minutes and a
// few GiB of disk, so they only run with STORAGE_SOAK=1:
//
//	STORAGE_SOAK=1 go test -p 1 -run 'TestSoak' -v -timeout 60m ./storage

func soakOnly(t *testing.T) {
	if os.Getenv("STORAGE_SOAK") == "" {
		t.Skip("set STORAGE_SOAK=1 to run (minutes, GiB of disk)")
	}
}

// procMem reads this process's memory from /proc/self/status, in MiB.
type procMem struct {
	RSS, HWM, Anon, File float64
	FileClean            float64 // clean file-backed pages: page cache the kernel can drop
	GoHeap               float64
	GoLive               float64 // allocated heap (live + not yet collected)
}

func readProcMem() procMem {
	var m procMem
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			m.RSS = kb / 1024
		case "VmHWM:":
			m.HWM = kb / 1024
		case "RssAnon:":
			m.Anon = kb / 1024
		case "RssFile:":
			m.File = kb / 1024
		}
	}
	// smaps_rollup: clean pages are file-backed (anon pages are never clean
	// without swap), so Private_Clean+Shared_Clean is reclaimable page cache.
	if b, err := os.ReadFile("/proc/self/smaps_rollup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && (f[0] == "Private_Clean:" || f[0] == "Shared_Clean:") {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.FileClean += kb / 1024
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.GoHeap = float64(ms.HeapInuse) / (1 << 20)
	m.GoLive = float64(ms.HeapAlloc) / (1 << 20)
	return m
}

// liveHeap collects garbage and returns the live Go heap in MiB.
func liveHeap() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

func (m procMem) String() string {
	return fmt.Sprintf("RSS %.0f MiB (anon %.0f, file %.0f of which clean %.0f; peak %.0f), Go heap in use %.0f MiB (allocated %.0f)",
		m.RSS, m.Anon, m.File, m.FileClean, m.HWM, m.GoHeap, m.GoLive)
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += allocated(info)
			}
		}
		return nil
	})
	return n
}

const mib = 1 << 20

// writeHeapProfile writes a heap profile to $STORAGE_SOAK_HEAP, if set.
func writeHeapProfile(t *testing.T) {
	path := os.Getenv("STORAGE_SOAK_HEAP")
	if path == "" {
		return
	}
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

// TestSoakCycles: 100k enqueue→deliver cycles of 1 KiB by 32 workers, with
// the records' retention equal to ~10k cycles (a logical clock advances 1 ms
// per cycle) and maintenance every 10k cycles. The disk must level off.
func TestSoakCycles(t *testing.T) {
	soakOnly(t)
	const cycles, workers = 100_000, 32
	var done atomic.Int64
	base := time.Now()
	clock := func() time.Time { return base.Add(time.Duration(done.Load()) * time.Millisecond) }
	dir := filepath.Join(t.TempDir(), "db")
	o := soakOptions(t, dir)
	o.Clock, o.Retention = clock, 10*time.Second
	s := openQueue(t, o)
	payloads := soakPayloads(4096)
	start := time.Now()
	var maxSize int64
	for round := range 10 {
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done.Load() < int64((round+1)*cycles/10) {
					ds, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "1001", Payload: payloads[mrand.IntN(len(payloads))]}})
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := s.Complete(ds[0].ID, Attempt{At: clock(), Status: 200}, Outcome{State: StateDelivered}); err != nil {
						t.Error(err)
						return
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		if os.Getenv("STORAGE_SOAK_NO_MAINTENANCE") == "" {
			if err := s.maintain(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		lsm, vlog := s.DiskUsage()
		total := dirSize(dir)
		maxSize = max(maxSize, total)
		st, _ := s.Stats()
		t.Logf("after %6d cycles (%5.1fs): dir %5.1f MiB (lsm %5.1f, vlog %5.1f), %d delivered records kept",
			done.Load(), time.Since(start).Seconds(), float64(total)/mib, float64(lsm)/mib, float64(vlog)/mib, st["1001"].Delivered)
	}
	writeHeapProfile(t)
	ents, _ := os.ReadDir(dir)
	var files []string
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			files = append(files, fmt.Sprintf("%s:%.1fM", e.Name(), float64(allocated(info))/mib))
		}
	}
	t.Logf("files: %s", strings.Join(files, " "))
	t.Logf("%d cycles in %s: %.0f cycles/s; largest dir %.1f MiB; %s",
		done.Load(), time.Since(start).Round(time.Millisecond), float64(done.Load())/time.Since(start).Seconds(), float64(maxSize)/mib, readProcMem())
	if maxSize > 200*mib {
		t.Errorf("store grew to %.0f MiB for ~10k retained records", float64(maxSize)/mib)
	}
}

const soakChildEnv = "STORAGE_SOAK_CHILD_DIR"

// TestSoakMillion enqueues 1,000,000 pending deliveries of 1 KiB, then
// measures, in a fresh process, how long Open and the first Due take and how
// much memory the process holds while draining.
func TestSoakMillion(t *testing.T) {
	soakOnly(t)
	n := 1_000_000
	if v := os.Getenv("STORAGE_SOAK_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	dir := filepath.Join(t.TempDir(), "db")
	if keep := os.Getenv("STORAGE_SOAK_DIR"); keep != "" {
		dir = keep
	}
	if _, err := os.Stat(dir); err != nil {
		fill(t, dir, n)
	} else {
		t.Logf("reusing %s", dir)
	}
	t.Logf("store on disk: %.0f MiB", float64(dirSize(dir))/mib)

	for run := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSoakChild$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), soakChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var res soakResult
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "SOAK "); ok {
				if err := json.Unmarshal([]byte(rest), &res); err != nil {
					t.Fatal(err)
				}
			} else if strings.Contains(line, "soak_test") {
				t.Log(strings.TrimSpace(line))
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
		t.Logf("restart %d: open %s, first Due %s, Stats %s; pending %d", run, res.Open, res.FirstDue, res.Stats, res.Pending)
		if res.Open+res.FirstDue > 2*time.Second {
			t.Errorf("restart took %s to serve", res.Open+res.FirstDue)
		}
	}
}

type soakResult struct {
	Open, FirstDue, Stats time.Duration
	Pending               int
}

// soakOptions returns the options under test, changed by $STORAGE_SOAK_TUNE
// (comma-separated name=value pairs) for tuning experiments.
func soakOptions(t *testing.T, dir string) Options {
	o := Options{Dir: dir}
	spec := os.Getenv("STORAGE_SOAK_TUNE")
	if spec == "" {
		return o
	}
	var fns []func(badger.Options) badger.Options
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "enc":
			if n == 1 {
				o.EncryptionKey = []byte(strings.Repeat("e", 32))
			}
		case "mem":
			o.MemTableSize = n << 20
		case "nummem":
			o.NumMemtables = int(n)
		case "vt":
			o.ValueThreshold = n
		case "block":
			o.BlockCacheSize = n << 20
		case "index":
			o.IndexCacheSize = n << 20
		case "vlog":
			o.ValueLogFileSize = n << 20
		case "compress":
			c := options.Snappy
			if v == "none" {
				c = options.None
			}
			fns = append(fns, func(b badger.Options) badger.Options { return b.WithCompression(c) })
		case "table":
			fns = append(fns, func(b badger.Options) badger.Options { return b.WithBaseTableSize(n << 20) })
		case "tablemul":
			fns = append(fns, func(b badger.Options) badger.Options { b.TableSizeMultiplier = int(n); return b })
		case "compactors":
			fns = append(fns, func(b badger.Options) badger.Options { return b.WithNumCompactors(int(n)) })
		case "l0":
			fns = append(fns, func(b badger.Options) badger.Options { return b.WithNumLevelZeroTables(int(n)) })
		default:
			t.Fatalf("unknown tuning %q", k)
		}
	}
	o.tune = func(b badger.Options) badger.Options {
		for _, f := range fns {
			b = f(b)
		}
		return b
	}
	return o
}

// soakPayloads are 1 KiB form bodies that compress about as well as real
// ones (field names repeat, values do not).
func soakPayloads(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		var b strings.Builder
		for b.Len() < 1024 {
			fmt.Fprintf(&b, "ccustname=%s&ccustemail=%s%%40example.com&ctransamount=%d&ctransreceipt=%s&",
				rand.Text()[:12], rand.Text()[:10], 100+i%9000, rand.Text())
		}
		out[i] = []byte(b.String()[:1024])
	}
	return out
}

func fill(t *testing.T, dir string, n int) {
	s, err := Open(soakOptions(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	payloads := soakPayloads(4096)
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	var peak procMem
	var mu sync.Mutex
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items := make([]NewDelivery, 16)
			for {
				for i := range items {
					items[i] = NewDelivery{DIN: "1001", Payload: payloads[mrand.IntN(len(payloads))]}
				}
				k := next.Add(int64(len(items)))
				if k > int64(n) {
					return
				}
				if _, err := s.Enqueue(context.Background(), items); err != nil {
					t.Error(err)
					return
				}
				if k%100_000 < int64(len(items)) {
					m := readProcMem()
					mu.Lock()
					peak = m
					mu.Unlock()
					t.Logf("filled %7d (%5.1fs): %s", k, time.Since(start).Seconds(), m)
				}
			}
		}()
	}
	wg.Wait()
	writeHeapProfile(t)
	t.Logf("filled %d in %s (%.0f/s); %s; live heap after GC %.0f MiB", n, time.Since(start).Round(time.Second), float64(n)/time.Since(start).Seconds(), peak, liveHeap())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSoakChild is TestSoakMillion's fresh process.
func TestSoakChild(t *testing.T) {
	dir := os.Getenv(soakChildEnv)
	if dir == "" {
		t.Skip("child process of TestSoakMillion")
	}
	var res soakResult
	t0 := time.Now()
	s, err := Open(soakOptions(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	res.Open = time.Since(t0)
	t1 := time.Now()
	due, err := s.Due("1001", time.Now(), 100)
	if err != nil || len(due) == 0 {
		t.Fatalf("Due: %d, %v", len(due), err)
	}
	if _, err := s.Payload(due[0].ID); err != nil {
		t.Fatal(err)
	}
	res.FirstDue = time.Since(t1)
	t2 := time.Now()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	res.Stats = time.Since(t2)
	res.Pending = st["1001"].Pending
	t.Logf("after open: %s", readProcMem())

	// Drain 50k like the dispatcher would, then look at memory again.
	start := time.Now()
	drained := 0
	for drained < 50_000 {
		due, err := s.Due("1001", time.Now(), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(due) == 0 {
			break
		}
		var wg sync.WaitGroup
		for _, d := range due {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Payload(d.ID); err != nil {
					t.Error(err)
				}
				if _, err := s.Complete(d.ID, Attempt{At: time.Now(), Status: 200}, Outcome{State: StateDelivered}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		drained += len(due)
	}
	writeHeapProfile(t)
	t.Logf("drained %d in %s (%.0f/s): %s; live heap after GC %.0f MiB", drained, time.Since(start).Round(time.Millisecond), float64(drained)/time.Since(start).Seconds(), readProcMem(), liveHeap())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	fmt.Println("SOAK " + string(b))
}
