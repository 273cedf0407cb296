package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupMem is what a memory cgroup says of the processes in it: the
// kernel's own account (anonymous memory plus the page cache they caused),
// which is what a systemd MemoryMax= limit enforces.
type cgroupMem struct {
	LimitMiB, PeakMiB float64
	OOMKills          int64 // processes the limit killed
}

// readCgroupMem reads a cgroup v2 (memory.max, memory.peak, memory.events)
// or v1 (memory.limit_in_bytes, memory.max_usage_in_bytes,
// memory.oom_control) folder.
func readCgroupMem(dir string) (cgroupMem, bool) {
	var m cgroupMem
	oomKills := func(name string) int64 {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
		return 0
	}
	num := func(name string) (float64, bool) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return 0, false
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		return f, err == nil
	}
	if limit, ok := num("memory.max"); ok { // v2 ("max" does not parse: no limit)
		m.LimitMiB = limit / (1 << 20)
		peak, _ := num("memory.peak")
		m.PeakMiB = peak / (1 << 20)
		m.OOMKills = oomKills("memory.events")
		return m, true
	}
	limit, ok := num("memory.limit_in_bytes")
	if !ok {
		return m, false
	}
	m.LimitMiB = limit / (1 << 20)
	peak, _ := num("memory.max_usage_in_bytes")
	m.PeakMiB = peak / (1 << 20)
	m.OOMKills = oomKills("memory.oom_control")
	return m, true
}
