package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// partNames are the servers of bench.sh's parts_rounds, in their order.
var partNames = []struct{ key, label string }{
	{"plain", "plain Caddy `reverse_proxy`"},
	{"nolog", "checks alone, no postback app (so no notification log): `postback_filter` + `itns_verify` + `reverse_proxy`"},
	{"checks", "checks alone with the postback app: + the notification log"},
	{"held", "whole chain, copies held (destination down, circuit open): + synced enqueue"},
}

// partsRow is one server's medians in the parts rounds, with its ratios to
// plain Caddy taken round by round (the servers of a round ran seconds apart).
type partsRow struct {
	rps, ratio, cpu   float64 // req/s, ÷ plain, server CPU µs per request
	p50, p99, add99   float64 // open loop, ms; add99: p99 − plain's p99
	perRound          []float64
	rateRuns, wrkRuns int
}

// partsRows computes the rows from the parts_wrk and parts_rate results.
func partsRows(byKind map[string][]result) map[string]*partsRow {
	return roundRows(byKind["parts_wrk"], byKind["parts_rate"], partNames)
}

// roundRows computes one row per server of names from wrk and open-loop
// runs made in alternation with plain Caddy ("plain").
func roundRows(wrkRuns, rateRuns []result, names []struct{ key, label string }) map[string]*partsRow {
	wrk, rate := byServerRound(wrkRuns), byServerRound(rateRuns)
	rows := map[string]*partsRow{}
	for _, p := range names {
		row := &partsRow{wrkRuns: len(wrk[p.key]), rateRuns: len(rate[p.key])}
		var rps, cpu, ratios, p50, p99, add []float64
		for _, rd := range slices.Sorted(maps.Keys(wrk[p.key])) {
			x := wrk[p.key][rd]
			rps = append(rps, x.rps)
			cpu = append(cpu, x.cpuSrv)
			if a, ok := wrk["plain"][rd]; ok && a.rps > 0 {
				ratios = append(ratios, x.rps/a.rps)
			}
		}
		for rd, x := range rate[p.key] {
			p50 = append(p50, x.p50)
			p99 = append(p99, x.p99)
			if a, ok := rate["plain"][rd]; ok {
				add = append(add, x.p99-a.p99)
			}
		}
		row.rps, row.cpu, row.ratio, row.perRound = median(rps), median(cpu), median(ratios), ratios
		row.p50, row.p99, row.add99 = median(p50), median(p99), median(add)
		rows[p.key] = row
	}
	return rows
}

// byServerRound indexes runs by server, then round.
func byServerRound(rs []result) map[string]map[int]run {
	m := map[string]map[int]run{}
	for _, r := range rs {
		s := r.str("server")
		if m[s] == nil {
			m[s] = map[int]run{}
		}
		m[s][int(r.num("round"))] = toRun(r)
	}
	return m
}

// writeParts writes the table of where the chain's cost goes, if the parts
// rounds ran.
func writeParts(w io.Writer, byKind map[string][]result, rate string) {
	if len(byKind["parts_wrk"]) == 0 && len(byKind["parts_rate"]) == 0 {
		return
	}
	rows := partsRows(byKind)
	fmt.Fprintln(w, "Where the chain's cost goes (`BENCH_PARTS`): plain Caddy against the chain cut short, in the same alternation; wrk as above, then the open loop at "+rate+" req/s:")
	writeRows(w, rows, partNames)
	var notes []string
	if n, c := rows["nolog"], rows["checks"]; n.rateRuns > 0 && c.rateRuns > 0 {
		var written string
		if l := byKindFirst(byKind, "parts_notelog"); l["records"] != nil {
			written = fmt.Sprintf(" (it wrote %.0f records, dropped %.0f)", l.num("records"), l.num("dropped"))
		}
		notes = append(notes, fmt.Sprintf("The notification log%s: open-loop p99 %+.2f ms (checks with the app − without, per round: %s ms) and %+.0f µs of server CPU per request.",
			written, c.p99-n.p99, joinF(roundDiffs(byKind["parts_rate"], "checks", "nolog"), "%+.2f"), c.cpu-n.cpu))
	}
	if h := byKindFirst(byKind, "parts_held"); h["pending"] != nil {
		notes = append(notes, fmt.Sprintf("The held chain ended with %.0f copies pending and %.0f delivered: none was sent while it was measured.",
			h.num("pending"), h.num("delivered")))
	}
	notes = append(notes, "The chain of the main table adds the copies (a second HTTPS request per notification, with the sink on the same cores) to the held row; its p99 above is measured in other minutes.")
	fmt.Fprintln(w, strings.Join(notes, " "))
	fmt.Fprintln(w)
}

// roundDiffs is a's open-loop p99 minus b's, round by round, in ms.
func roundDiffs(rs []result, a, b string) []float64 {
	m := byServerRound(rs)
	var out []float64
	for _, rd := range slices.Sorted(maps.Keys(m[a])) {
		if y, ok := m[b][rd]; ok {
			out = append(out, m[a][rd].p99-y.p99)
		}
	}
	return out
}

// writeRows writes the table of rows, one per server of names that ran.
func writeRows(w io.Writer, rows map[string]*partsRow, names []struct{ key, label string }) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| server | wrk req/s | ÷ plain (median of rounds) | per round | server CPU µs/req | open loop p50 ms | p99 ms | p99 − plain's |")
	fmt.Fprintln(w, "|---|---:|---:|---|---:|---:|---:|---:|")
	for _, p := range names {
		r := rows[p.key]
		if r.wrkRuns == 0 && r.rateRuns == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %.0f | %.3f | %s | %.0f | %.2f | %.2f | %+.2f |\n",
			p.label, r.rps, r.ratio, joinF(r.perRound, "%.3f"), r.cpu, r.p50, r.p99, r.add99)
	}
	fmt.Fprintln(w)
}
