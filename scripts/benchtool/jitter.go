package main

import (
	"encoding/json"
	"flag"
	"os"
	"time"
)

// cmdJitter measures how late this machine runs a goroutine, with nothing
// else to do: one that sleeps to deadlines 1 ms apart (what an open-loop
// request, or any wake-up, waits for beyond its due time), and one that
// spins, whose longest gap between two clock reads is a time the process
// was not run at all (a VM's vCPU taken away). Every latency the bench
// measures includes these, once per wake-up on the request's path.
func cmdJitter(args []string) error {
	fs := flag.NewFlagSet("jitter", flag.ExitOnError)
	dur := fs.Duration("d", 3*time.Second, "duration of each probe")
	_ = fs.Parse(args)
	var late []time.Duration
	start := time.Now()
	for i := 1; time.Duration(i)*time.Millisecond <= *dur; i++ {
		at := start.Add(time.Duration(i) * time.Millisecond)
		time.Sleep(time.Until(at))
		late = append(late, time.Since(at))
	}
	var stall time.Duration
	t0 := time.Now()
	for prev := t0; prev.Sub(t0) < *dur; {
		now := time.Now()
		stall = max(stall, now.Sub(prev))
		prev = now
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"sleep_late_p50_ms": pctMs(late, 50), "sleep_late_p99_ms": pctMs(late, 99), "sleep_late_p999_ms": pctMs(late, 99.9),
		"spin_stall_max_ms": round3(float64(stall.Microseconds()) / 1000),
	})
}
