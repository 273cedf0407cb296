package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// adminTotals reads the totals of GET /postback/stats on a Caddy admin endpoint.
func adminTotals(admin string) (pending, delivered int64, err error) {
	st, err := adminStats(admin)
	return st.Totals.Pending, st.Totals.Delivered, err
}

type statsTotals struct {
	Totals struct {
		Pending   int64 `json:"pending"`
		Delivered int64 `json:"delivered"`
		LastHour  struct {
			Attempts int64 `json:"attempts"`
		} `json:"last_hour"`
	} `json:"totals"`
}

func adminStats(admin string) (statsTotals, error) {
	var st statsTotals
	err := getJSON("http://"+admin+"/postback/stats", &st)
	return st, err
}

// cmdDrain waits until the chain's queue is empty and prints, as one JSON
// line, the backlog found, how long it took to drain and the rate at which
// the sink received distinct copies meanwhile. With -want it also waits
// until the sink has seen that many distinct X-Postback-Id.
func cmdDrain(args []string) error {
	fs := flag.NewFlagSet("drain", flag.ExitOnError)
	admin := fs.String("admin", "", "Caddy admin address of the chain (required)")
	sink := fs.String("sink", "", "sink counter URL (required)")
	want := fs.Int64("want", 0, "distinct copies the sink must have seen")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after")
	_ = fs.Parse(args)
	if *admin == "" || *sink == "" {
		return errors.New("-admin and -sink are required")
	}
	var c0 sinkCounts
	if err := getJSON(*sink, &c0); err != nil {
		return err
	}
	p0, _, err := adminTotals(*admin)
	if err != nil {
		return err
	}
	start := time.Now()
	deadline := start.Add(*timeout)
	var (
		c    sinkCounts
		p, d int64
	)
	for {
		if p, d, err = adminTotals(*admin); err != nil {
			return err
		}
		if err := getJSON(*sink, &c); err != nil {
			return err
		}
		if p == 0 && c.TLSDistinct >= *want {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	el := time.Since(start).Seconds()
	out := map[string]any{
		"backlog":      p0,
		"seconds":      round3(el),
		"pending":      p,
		"delivered":    d,
		"sink_tls":     c.TLSRequests,
		"sink_dist":    c.TLSDistinct,
		"sink_missing": c.TLSMissingID,
		"drained":      p == 0 && c.TLSDistinct >= *want,
	}
	if el > 0 && c.TLSDistinct > c0.TLSDistinct {
		out["rate"] = round3(float64(c.TLSDistinct-c0.TLSDistinct) / el)
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

// cmdFill writes n pending deliveries of size bytes for din into the store
// in dir, as secondary_post would (through storage.Enqueue, 32 writers),
// so that the 1,000,000-pending test does not spend minutes posting.
func cmdFill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	dir := fs.String("dir", "", "store folder (required)")
	n := fs.Int("n", 1_000_000, "deliveries")
	size := fs.Int("size", 1024, "payload bytes")
	din := fs.String("din", "1001", "DIN")
	keyHex := fs.String("key", "", "encryption key, 64 hex characters (optional)")
	perCall := fs.Int("batch", 64, "deliveries per Enqueue call")
	writers := fs.Int("writers", 32, "concurrent writers")
	vlogSize := fs.Int64("vlog-size", 0, "storage.Options.ValueLogFileSize (0: the store's default)")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("-dir is required")
	}
	var key []byte
	if *keyHex != "" {
		var err error
		if key, err = hex.DecodeString(*keyHex); err != nil {
			return fmt.Errorf("-key: %w", err)
		}
	}
	s, err := storage.Open(storage.Options{Dir: *dir, EncryptionKey: key, ValueLogFileSize: *vlogSize})
	if err != nil {
		return err
	}
	// A form body like the notifications', padded to size; each unique.
	base := bytes.Repeat([]byte("x"), *size)
	copy(base, "ctransaction=SALE&cprodid=1707&ccustemail=juergen.mueller%40example.com&cpad=")
	var next atomic.Int64
	var wg sync.WaitGroup
	var ferr atomic.Value
	start := time.Now()
	for range *writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := next.Add(int64(*perCall)) - int64(*perCall)
				if lo >= int64(*n) {
					return
				}
				hi := min(lo+int64(*perCall), int64(*n))
				items := make([]storage.NewDelivery, 0, hi-lo)
				for i := lo; i < hi; i++ {
					p := bytes.Clone(base)
					copy(p[len(p)-12:], fmt.Sprintf("%012d", i))
					items = append(items, storage.NewDelivery{DIN: *din, ContentType: "application/x-www-form-urlencoded", Payload: p})
				}
				if _, err := s.Enqueue(context.Background(), items); err != nil {
					ferr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	lsm, vlog := s.DiskUsage()
	if err := s.Close(); err != nil {
		return err
	}
	if e, ok := ferr.Load().(error); ok {
		return e
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"n": *n, "seconds": round3(el.Seconds()), "rate": round3(float64(*n) / el.Seconds()),
		"lsm_mib": round3(float64(lsm) / (1 << 20)), "vlog_mib": round3(float64(vlog) / (1 << 20)),
	})
}

// cmdFirstServe starts a command (the built Caddy), then POSTs the body to
// url every 5 ms until a 2xx comes back, and prints the time from the start
// of the process to that answer and the process id. The process keeps
// running; the caller stops it.
func cmdFirstServe(args []string) error {
	fs := flag.NewFlagSet("firstserve", flag.ExitOnError)
	url := fs.String("url", "", "URL to POST to (required)")
	bodyFile := fs.String("body", "", "file with the form body (required)")
	logFile := fs.String("log", "", "file for the command's output (required)")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	_ = fs.Parse(args)
	cmdArgs := fs.Args()
	if *url == "" || *bodyFile == "" || *logFile == "" || len(cmdArgs) == 0 {
		return errors.New("usage: firstserve -url U -body F -log L -- command args...")
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var status int
	tries := 0
	for {
		tries++
		resp, err := client.Post(*url, "application/x-www-form-urlencoded", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
			status = resp.StatusCode
			if status >= 200 && status < 300 {
				break
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("process exited before serving: %v (see %s)", err, *logFile)
		default:
		}
		if time.Since(start) > *timeout {
			return fmt.Errorf("no 2xx within %s (last status %d)", *timeout, status)
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start)
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"ms": round3(float64(el.Microseconds()) / 1000), "pid": cmd.Process.Pid, "tries": tries, "status": status,
	})
}

// procMem is a process's memory from /proc/<pid>/status, in MiB.
type procMem struct {
	RSS, HWM, Anon, File float64
}

func procStatus(pid int) (procMem, error) {
	var m procMem
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
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
	return m, nil
}

// goHeap reads go_memstats_heap_inuse_bytes from a Caddy admin /metrics, in MiB.
func goHeap(admin string) (float64, bool) {
	v, ok := metricSum(admin, "go_memstats_heap_inuse_bytes")
	return v / (1 << 20), ok
}

// metricSum is the sum of a metric's series on admin's /metrics.
func metricSum(admin, name string) (float64, bool) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return 0, false
	}
	var sum float64
	found := false
	for _, line := range strings.Split(buf.String(), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(rest[strings.LastIndexByte(rest, ' ')+1:]), 64)
		if err != nil {
			return 0, false
		}
		sum, found = sum+f, true
	}
	return sum, found
}

// cmdNotelog prints how many notification log records a running edge wrote
// and dropped (its metrics), to show that the log was on while measured.
func cmdNotelog(args []string) error {
	fs := flag.NewFlagSet("notelog", flag.ExitOnError)
	admin := fs.String("admin", "", "Caddy admin address (required)")
	_ = fs.Parse(args)
	if *admin == "" {
		return errors.New("-admin is required")
	}
	written, ok := metricSum(*admin, "caddy_postback_notifications_total")
	if !ok {
		return fmt.Errorf("no caddy_postback_notifications_total on %s", *admin)
	}
	dropped, _ := metricSum(*admin, "caddy_postback_notifications_dropped_total")
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"records": written, "dropped": dropped})
}

// cmdRSS samples the memory of pid every second for -for and prints the
// last and the largest resident size, its anonymous and file-backed parts
// (Badger maps its files: clean file pages are page cache the kernel can
// reclaim), the kernel's high-water mark and, with -admin, the Go heap and
// the queue's pending count at the end.
func cmdRSS(args []string) error {
	fs := flag.NewFlagSet("rss", flag.ExitOnError)
	pid := fs.Int("pid", 0, "process id (required)")
	dur := fs.Duration("for", 0, "sample for this long")
	admin := fs.String("admin", "", "Caddy admin address (optional)")
	cgroup := fs.String("cgroup", "", "memory cgroup folder the process runs in (optional): its limit, peak and OOM count")
	_ = fs.Parse(args)
	if *pid == 0 {
		return errors.New("-pid is required")
	}
	var last procMem
	var peak, peakAnon, peakHeap float64
	var attempts0 int64
	if *admin != "" {
		if st, err := adminStats(*admin); err == nil {
			attempts0 = st.Totals.LastHour.Attempts
		}
	}
	end := time.Now().Add(*dur)
	died := false
	for {
		m, err := procStatus(*pid)
		if err != nil && last.RSS > 0 {
			died = true // gone while sampled: killed (by a memory limit, say)
			break
		}
		if err != nil {
			return err
		}
		last = m
		peak = max(peak, m.RSS)
		peakAnon = max(peakAnon, m.Anon)
		if *admin != "" {
			if h, ok := goHeap(*admin); ok {
				peakHeap = max(peakHeap, h)
			}
		}
		if !time.Now().Before(end) {
			break
		}
		time.Sleep(time.Second)
	}
	out := map[string]any{
		"rss_mib": round3(last.RSS), "rss_peak_mib": round3(peak), "hwm_mib": round3(last.HWM),
		"anon_mib": round3(last.Anon), "anon_peak_mib": round3(peakAnon), "file_mib": round3(last.File),
	}
	if *cgroup != "" {
		if cg, ok := readCgroupMem(*cgroup); ok {
			out["cg_limit_mib"], out["cg_peak_mib"], out["cg_oom"] = round3(cg.LimitMiB), round3(cg.PeakMiB), cg.OOMKills
		}
	}
	if died {
		out["died"] = true
	}
	if *admin != "" {
		out["heap_peak_mib"] = round3(peakHeap)
		if st, err := adminStats(*admin); err == nil {
			out["pending"], out["delivered"] = st.Totals.Pending, st.Totals.Delivered
			out["attempts"] = st.Totals.LastHour.Attempts - attempts0
		}
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// cmdTag reads a JSON object from stdin (the first line that is one, after
// an optional "WRKJSON " marker, so wrk's whole output can be piped in),
// adds the key=value pairs given as arguments (numbers stay numbers) and
// prints it as one line: the results file of bench.sh is JSON lines.
func cmdTag(args []string) error {
	var in bytes.Buffer
	if _, err := in.ReadFrom(os.Stdin); err != nil {
		return err
	}
	var obj map[string]any
	for _, line := range strings.Split(in.String(), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "WRKJSON "))
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &obj) == nil {
			break
		}
		obj = nil
	}
	if obj == nil {
		return errors.New("no JSON object on stdin")
	}
	for _, kv := range args {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q: want key=value", kv)
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			obj[k] = f
		} else {
			obj[k] = v
		}
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

// cmdCPUProbe prints how long SHA-256 of 16 MiB takes on one core, best of
// 5, in milliseconds: a speed index of this (virtual) CPU at that moment.
// The machine's speed drifts with its neighbours; figures from runs with
// different indexes are not comparable.
func cmdCPUProbe(args []string) error {
	buf := make([]byte, 16<<20)
	best := time.Duration(math.MaxInt64)
	for range 5 {
		t := time.Now()
		sha256.Sum256(buf)
		best = min(best, time.Since(t))
	}
	fmt.Printf("%.1f\n", float64(best.Microseconds())/1000)
	return nil
}
