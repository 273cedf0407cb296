package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// cmdLoad is an open-loop load: requests are due at a fixed rate whatever
// the server's pace, spread over -conns keep-alive connections, and each
// latency is measured from when the request was due (not when a connection
// was free), so queueing is counted (no coordinated omission). wrk runs
// closed-loop: at saturation its latency is mostly the queue in front of the
// slowest server, which is why the added-latency target is also measured
// here, at a rate every server sustains. Prints one JSON line like wrk.lua's.
func cmdLoad(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	url := fs.String("url", "", "URL to POST to (required)")
	bodyFile := fs.String("body", "", "file with the form body (required)")
	rate := fs.Float64("rate", 2000, "requests per second")
	conns := fs.Int("conns", 32, "connections (and concurrent requests at most)")
	dur := fs.Duration("d", 10*time.Second, "duration")
	series := fs.String("series", "", "also write each request's due time and latency (CSV, µs) to this file")
	_ = fs.Parse(args)
	if *url == "" || *bodyFile == "" || *rate <= 0 || *conns <= 0 {
		return errors.New("-url, -body, a positive -rate and -conns are required")
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return err
	}
	tr := &http.Transport{MaxConnsPerHost: *conns, MaxIdleConnsPerHost: *conns, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	n := int(*rate * dur.Seconds())
	due := make(chan time.Time, n)
	results := make([]loadConn, *conns)
	start := time.Now().Add(10 * time.Millisecond) // the workers are running by then
	var wg sync.WaitGroup
	for w := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[w]
			for at := range due {
				req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := client.Do(req)
				if err != nil {
					r.bad++
					continue
				}
				nb, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				r.bytes += nb
				if resp.StatusCode < 200 || resp.StatusCode > 299 {
					r.bad++
				}
				r.lat = append(r.lat, time.Since(at))
				r.due = append(r.due, at.Sub(start))
			}
		}()
	}
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
	var all []time.Duration
	bad := 0
	var nbytes int64
	for _, r := range results {
		all = append(all, r.lat...)
		bad += r.bad
		nbytes += r.bytes
	}
	if *series != "" {
		if err := writeSeries(*series, start, results); err != nil {
			return err
		}
	}
	slices.Sort(all)
	pct := func(p float64) int64 {
		if len(all) == 0 {
			return 0
		}
		i := int(math.Ceil(p/100*float64(len(all)))) - 1
		return all[max(0, min(i, len(all)-1))].Microseconds()
	}
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	mean := 0.0
	if len(all) > 0 {
		mean = float64(sum.Microseconds()) / float64(len(all))
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"requests": len(all), "duration_us": el.Microseconds(), "bytes": nbytes, "err_status": bad,
		"rate": *rate, "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "p999_us": pct(99.9),
		"max_us": pct(100), "mean_us": round3(mean),
	})
}

// loadConn is what one connection of cmdLoad measured.
type loadConn struct {
	due   []time.Duration // of each request, since the start (the series)
	lat   []time.Duration
	bad   int
	bytes int64
}

// writeSeries writes every request's due time and latency, in due order, so
// that a stall can be placed in time (beside the server's GC or compactions).
func writeSeries(path string, start time.Time, conns []loadConn) error {
	type point struct{ due, lat time.Duration }
	var pts []point
	for _, c := range conns {
		for i := range c.lat {
			pts = append(pts, point{c.due[i], c.lat[i]})
		}
	}
	slices.SortFunc(pts, func(a, b point) int { return cmp.Compare(a.due, b.due) })
	var b bytes.Buffer
	fmt.Fprintf(&b, "# start_unix_us=%d\ndue_us,latency_us\n", start.UnixMicro())
	for _, p := range pts {
		fmt.Fprintf(&b, "%d,%d\n", p.due.Microseconds(), p.lat.Microseconds())
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
