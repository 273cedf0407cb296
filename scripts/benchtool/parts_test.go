package main

import (
	"strings"
	"testing"
)

func partsResult(kind, server string, round int, requests, p99us float64) result {
	return result{"kind": kind, "server": server, "round": float64(round),
		"requests": requests, "duration_us": 10e6, "p50_us": 1000.0, "p99_us": p99us,
		"upstream": requests, "cpu_server_s": requests * 100e-6}
}

func TestPartsRatiosAreTakenRoundByRound(t *testing.T) {
	byKind := map[string][]result{}
	add := func(r result) { byKind[r.str("kind")] = append(byKind[r.str("kind")], r) }
	// Round 2 ran on a machine twice as fast. The median of the per-round
	// ratios (0.5, 0.5, 0.6) is 0.5; the ratio of the medians would be 0.6.
	add(partsResult("parts_wrk", "plain", 1, 100000, 0))
	add(partsResult("parts_wrk", "held", 1, 50000, 0))
	add(partsResult("parts_wrk", "plain", 2, 200000, 0))
	add(partsResult("parts_wrk", "held", 2, 100000, 0))
	add(partsResult("parts_wrk", "plain", 3, 120000, 0))
	add(partsResult("parts_wrk", "held", 3, 72000, 0))
	add(partsResult("parts_rate", "plain", 1, 8000, 2000))
	add(partsResult("parts_rate", "held", 1, 8000, 5500))
	add(partsResult("parts_rate", "plain", 2, 8000, 3000))
	add(partsResult("parts_rate", "held", 2, 8000, 4000))

	rows := partsRows(byKind)
	h := rows["held"]
	if h.ratio != 0.5 || len(h.perRound) != 3 {
		t.Fatalf("held ratio %v per round %v, want 0.5 over 3 rounds", h.ratio, h.perRound)
	}
	if h.rps != 7200 {
		t.Errorf("held median req/s %v, want 7200", h.rps)
	}
	// p99 − plain's p99 per round: 3.5 and 1.0 ms, median 2.25.
	if h.add99 != 2.25 {
		t.Errorf("held added p99 %v ms, want 2.25", h.add99)
	}
	if h.cpu != 100 {
		t.Errorf("held CPU %v µs/req, want 100", h.cpu)
	}
	if rows["checks"].wrkRuns != 0 {
		t.Errorf("checks has %d runs, want none", rows["checks"].wrkRuns)
	}

	var b strings.Builder
	byKind["parts_held"] = []result{{"kind": "parts_held", "pending": 1234.0, "delivered": 0.0}}
	writeParts(&b, byKind, "1000")
	out := b.String()
	for _, want := range []string{"| 0.500 | 0.500, 0.500, 0.600 |", "+2.25 |", "1234 copies pending and 0 delivered"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "checks alone") {
		t.Errorf("a server that did not run got a row:\n%s", out)
	}
}

func TestPartsAbsentWritesNothing(t *testing.T) {
	var b strings.Builder
	writeParts(&b, map[string][]result{"wrk": {{"kind": "wrk"}}}, "1000")
	if b.Len() != 0 {
		t.Errorf("wrote %q without parts rounds", b.String())
	}
}

// The notification log's cost is the checks with the app against the
// checks without it, with the records it wrote.
func TestPartsNotelogNote(t *testing.T) {
	byKind := map[string][]result{}
	add := func(r result) { byKind[r.str("kind")] = append(byKind[r.str("kind")], r) }
	for rd := 1; rd <= 2; rd++ {
		add(partsResult("parts_rate", "plain", rd, 8000, 2000))
		add(partsResult("parts_rate", "nolog", rd, 8000, 2400))
		add(partsResult("parts_rate", "checks", rd, 8000, 2500))
	}
	byKind["parts_notelog"] = []result{{"kind": "parts_notelog", "records": 16000.0, "dropped": 0.0}}
	var b strings.Builder
	writeParts(&b, byKind, "1000")
	if out := b.String(); !strings.Contains(out, "notification log (it wrote 16000 records, dropped 0): open-loop p99 +0.10 ms (checks with the app − without, per round: +0.10, +0.10 ms)") {
		t.Errorf("report lacks the log's cost:\n%s", out)
	}
}

// The fleet table has a row per server that ran, and the JetStream drain.
func TestFleetTable(t *testing.T) {
	byKind := map[string][]result{}
	add := func(r result) { byKind[r.str("kind")] = append(byKind[r.str("kind")], r) }
	for _, s := range []string{"plain", "one", "js"} {
		add(partsResult("fleet_wrk", s, 1, 50000, 0))
		add(partsResult("fleet_rate", s, 1, 8000, 3000))
	}
	byKind["fleet_drain"] = []result{{"kind": "fleet_drain", "server": "js", "backlog": 3000.0, "seconds": 2.0, "drained": true}}
	var b strings.Builder
	writeFleet(&b, byKind, "1000")
	out := b.String()
	for _, want := range []string{"`queue jetstream`: R3", "on its own disk", "drained at 1500 deliveries/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("fleet table lacks %q:\n%s", want, out)
		}
	}
}
