package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

type result map[string]any

func (r result) num(k string) float64 {
	switch v := r[k].(type) {
	case float64:
		return v
	case string:
		f, _ := strconv.ParseFloat(v, 64)
		return f
	case bool:
		if v {
			return 1
		}
	}
	return 0
}

func (r result) str(k string) string {
	switch v := r[k].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// run is one measured wrk run.
type run struct {
	round                 int
	rps, p50, p99, max    float64 // req/s, ms
	requests, bad         float64
	load                  float64
	cpuSrv, cpuUp, cpuSnk float64 // µs per request
	upstream              float64
	busy, others          float64 // CPUs busy on the machine; of them, not ours (nor wrk's)
}

func toRun(r result) run {
	secs := r.num("duration_us") / 1e6
	req := r.num("requests")
	x := run{
		round:    int(r.num("round")),
		requests: req,
		p50:      r.num("p50_us") / 1000,
		p99:      r.num("p99_us") / 1000,
		max:      r.num("max_us") / 1000,
		bad:      r.num("err_connect") + r.num("err_read") + r.num("err_write") + r.num("err_status") + r.num("err_timeout"),
		load:     r.num("load1"),
		upstream: r.num("upstream"),
	}
	if secs > 0 {
		x.rps = req / secs
	}
	if secs > 0 && r.num("cpu_busy_s") > 0 {
		x.busy = r.num("cpu_busy_s") / secs
		x.others = max(0, r.num("cpu_busy_s")-r.num("cpu_server_s")-r.num("cpu_upstream_s")-r.num("cpu_sink_s")-r.num("cpu_wrk_s")) / secs
	}
	if up := r.num("upstream"); up > 0 {
		x.cpuSrv = r.num("cpu_server_s") * 1e6 / up
		x.cpuUp = r.num("cpu_upstream_s") * 1e6 / up
		x.cpuSnk = r.num("cpu_sink_s") * 1e6 / up
	}
	return x
}

// cmdReport turns bench.sh's results (JSON lines) and the Go benchmark
// output into the Markdown of BENCHMARKS.md.
func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "", "results.jsonl (required)")
	gob := fs.String("gobench", "", "go test -bench output (optional)")
	_ = fs.Parse(args)
	if *in == "" {
		return errors.New("-in is required")
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	var all []result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return fmt.Errorf("%s: %w: %s", *in, err, line)
		}
		all = append(all, r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	var goOut string
	if *gob != "" {
		if b, err := os.ReadFile(*gob); err == nil {
			goOut = string(b)
		}
	}
	writeReport(os.Stdout, all, goOut)
	return nil
}

type target struct {
	what, measured string
	met            string // "met", "missed", "n/a"
}

func yes(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

func writeReport(w io.Writer, all []result, goOut string) {
	byKind := map[string][]result{}
	for _, r := range all {
		byKind[r.str("kind")] = append(byKind[r.str("kind")], r)
	}
	var env result
	if e := byKind["env"]; len(e) > 0 {
		env = e[0]
	} else {
		env = result{}
	}
	runs := map[string][]run{}
	var loads []float64
	for _, r := range byKind["wrk"] {
		x := toRun(r)
		runs[r.str("server")] = append(runs[r.str("server")], x)
		loads = append(loads, x.load)
	}
	var targets []target

	fmt.Fprintf(w, "### Run of %s\n\n", env.str("date"))
	fmt.Fprintf(w, "%s, %s CPUs, Linux %s; %s, Caddy %s, nginx %s, wrk %s. ",
		env.str("cpu"), env.str("cpus"), env.str("kernel"), env.str("go"), env.str("caddy"), env.str("nginx"), env.str("wrk"))
	if len(byKind["wrk"]) > 0 {
		fmt.Fprintf(w, "wrk -t%s -c%s, %s s per run, %s rounds in alternation (plain, chain, nginx, …), "+
			"one signed ITNS notification of %s bytes POSTed by every request; ",
			env.str("threads"), env.str("conns"), env.str("duration"), env.str("rounds"), env.str("body_bytes"))
	}
	fmt.Fprintf(w, "chain store encryption at rest: %s.", onOff(env.num("encrypt") == 1))
	if len(loads) > 0 {
		fmt.Fprintf(w, " Load average (1 min) at the start of the runs: %.2f to %.2f; at the end %s.",
			slices.Min(loads), slices.Max(loads), env.str("load_end"))
	}
	if env.num("cpu_probe_start") > 0 {
		fmt.Fprintf(w, " CPU speed index (`benchtool cpuprobe`: ms for SHA-256 of 16 MiB, lower is faster): %s at the start, %s at the end.",
			env.str("cpu_probe_start"), env.str("cpu_probe_end"))
	}
	if fs := byKindFirst(byKind, "fsync"); fs["fsync_per_s"] != nil {
		fmt.Fprintf(w, " Disk: %.0f write+fsync/s, latency p50 %.2f ms, p99 %.2f ms (`benchtool fsynclat`).", fs.num("fsync_per_s"), fs.num("p50_ms"), fs.num("p99_ms"))
	}
	if j := byKindFirst(byKind, "jitter"); j["sleep_late_p99_ms"] != nil {
		fmt.Fprintf(w, " Scheduling (`benchtool jitter`, idle process): a goroutine sleeping to deadlines 1 ms apart woke late by p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms; a spinning one was not run for up to %.0f ms at a time.",
			j.num("sleep_late_p50_ms"), j.num("sleep_late_p99_ms"), j.num("sleep_late_p999_ms"), j.num("spin_stall_max_ms"))
	}
	fmt.Fprint(w, "\n\n")

	names := map[string]string{
		"plain": "A plain Caddy `reverse_proxy`",
		"chain": "B `postback_filter` + `itns_verify` + `secondary_post` + `reverse_proxy`",
		"nginx": "C nginx `allow`/`deny` + `mirror`",
	}
	med := map[string]run{}
	if len(runs) > 0 {
		fmt.Fprintln(w, "| server | req/s (median) | req/s per round | p50 ms | p99 ms | errors | CPU µs/req: server | upstream | sink | CPUs busy (of 2) / used by others |")
		fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
		for _, s := range []string{"plain", "chain", "nginx"} {
			rs := runs[s]
			if len(rs) == 0 {
				continue
			}
			var rps, p50, p99, bad, cs, cu, ck []float64
			var per, busy []string
			for _, x := range rs {
				rps = append(rps, x.rps)
				p50 = append(p50, x.p50)
				p99 = append(p99, x.p99)
				bad = append(bad, x.bad)
				cs = append(cs, x.cpuSrv)
				cu = append(cu, x.cpuUp)
				ck = append(ck, x.cpuSnk)
				per = append(per, fmt.Sprintf("%.0f", x.rps))
				busy = append(busy, fmt.Sprintf("%.1f/%.1f", x.busy, x.others))
			}
			m := run{rps: median(rps), p50: median(p50), p99: median(p99), cpuSrv: median(cs), cpuUp: median(cu), cpuSnk: median(ck)}
			med[s] = m
			var totalBad float64
			for _, b := range bad {
				totalBad += b
			}
			fmt.Fprintf(w, "| %s | %.0f | %s | %.2f | %.2f | %.0f | %.0f | %.0f | %.0f | %s |\n",
				names[s], m.rps, strings.Join(per, ", "), m.p50, m.p99, totalBad, m.cpuSrv, m.cpuUp, m.cpuSnk, strings.Join(busy, ", "))
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Medians over the rounds; latency as wrk reports it (per request, at the client). CPU µs/req: user+system CPU of each process during the run divided by the requests the upstream answered (the sink's share is the copies it received meanwhile). Last column, per round: CPUs busy on the whole machine during the run, and how many of them went to processes other than the server, upstream, sink and wrk (other engineers' builds and tests on these shared cores).")
		fmt.Fprintln(w)
	}

	// Ratios, also per round (each round's servers ran side by side).
	if a, b, c := runs["plain"], runs["chain"], runs["nginx"]; len(a) > 0 && len(b) > 0 {
		var rbA, rbC, dp99 []float64
		for i := range min(len(a), len(b)) {
			rbA = append(rbA, b[i].rps/a[i].rps)
			dp99 = append(dp99, b[i].p99-a[i].p99)
			if i < len(c) {
				rbC = append(rbC, b[i].rps/c[i].rps)
			}
		}
		chainPlain := med["chain"].rps / med["plain"].rps
		added := med["chain"].p99 - med["plain"].p99
		fmt.Fprintln(w, "| ratio | of the medians | median of the per-round ratios | per round |")
		fmt.Fprintln(w, "|---|---:|---:|---|")
		fmt.Fprintf(w, "| chain / plain throughput | %.3f | %.3f | %s |\n", chainPlain, median(rbA), joinF(rbA, "%.3f"))
		if len(c) > 0 {
			fmt.Fprintf(w, "| chain / nginx throughput | %.3f | %.3f | %s |\n", med["chain"].rps/med["nginx"].rps, median(rbC), joinF(rbC, "%.3f"))
		}
		fmt.Fprintf(w, "| chain p99 − plain p99 (ms) | %.2f | %.2f | %s |\n", added, median(dp99), joinF(dp99, "%.2f"))
		fmt.Fprintln(w)
		// Issue 19's targets; the older 0.9 × plain and 1.0 × nginx are
		// figures now: the sink shares the two cores, so a copy costs about
		// what the proxying does.
		targets = append(targets,
			target{"saturation ≥ 0.55 × plain Caddy (wrk, the sink on the same cores)", fmt.Sprintf("%.3f ×", chainPlain), yes(chainPlain >= 0.55)})
		if len(c) > 0 {
			cn := med["chain"].rps / med["nginx"].rps
			targets = append(targets, target{"(for reference) chain throughput ÷ nginx allow + mirror", fmt.Sprintf("%.3f ×", cn), "n/a"})
		}
		targets = append(targets, target{fmt.Sprintf("(for reference) added p99 over plain Caddy at %s connections, closed loop (wrk, each at its own saturation)", env.str("conns")),
			fmt.Sprintf("%.2f ms", added), "n/a"})
	}

	// Open loop: the same fixed rate for each server.
	if rates := byKind["rate"]; len(rates) > 0 {
		rr := map[string][]run{}
		p999 := map[string][]float64{}
		for _, r := range rates {
			x := toRun(r)
			rr[r.str("server")] = append(rr[r.str("server")], x)
			p999[r.str("server")] = append(p999[r.str("server")], r.num("p999_us")/1000)
		}
		fmt.Fprintf(w, "Open loop, %s requests/s for each server over %s connections (`benchtool load`: every request is due at a fixed time and its latency counts from then, so waiting for a connection counts too):\n\n",
			rates[0].str("rate"), env.str("conns"))
		fmt.Fprintln(w, "| server | achieved req/s | p50 ms | p99 ms | p99.9 ms | p99 per round | errors | CPUs busy / used by others, per round |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|---:|---|")
		mr := map[string]run{}
		for _, s := range []string{"plain", "chain", "nginx"} {
			xs := rr[s]
			if len(xs) == 0 {
				continue
			}
			var rps, p50, p99, per []float64
			var busy []string
			var bad float64
			for _, x := range xs {
				rps, p50, p99 = append(rps, x.rps), append(p50, x.p50), append(p99, x.p99)
				per = append(per, x.p99)
				bad += x.bad
				busy = append(busy, fmt.Sprintf("%.1f/%.1f", x.busy, x.others))
			}
			mr[s] = run{rps: median(rps), p50: median(p50), p99: median(p99)}
			fmt.Fprintf(w, "| %s | %.0f | %.2f | %.2f | %.2f | %s | %.0f | %s |\n", names[s], median(rps), median(p50), median(p99), median(p999[s]), joinF(per, "%.2f"), bad, strings.Join(busy, ", "))
		}
		fmt.Fprintln(w)
		if a, b := rr["plain"], rr["chain"]; len(a) > 0 && len(b) > 0 {
			var d50, d99 []float64
			for i := range min(len(a), len(b)) {
				d50 = append(d50, b[i].p50-a[i].p50)
				d99 = append(d99, b[i].p99-a[i].p99)
			}
			added := mr["chain"].p99 - mr["plain"].p99
			fmt.Fprintf(w, "Added latency of the chain over plain Caddy at this rate: p50 %.2f ms, p99 %.2f ms (medians; per round p99: %s).",
				mr["chain"].p50-mr["plain"].p50, added, joinF(d99, "%.2f"))
			var backlog []string
			for _, d := range byKind["rate_drain"] {
				backlog = append(backlog, fmt.Sprintf("%.0f", d.num("backlog")))
			}
			if len(backlog) > 0 {
				fmt.Fprintf(w, " The chain's backlog at the end of each fixed-rate run: %s (deliveries kept up when it is near 0).", strings.Join(backlog, ", "))
			}
			fmt.Fprint(w, "\n\n")
			if cpu, ok := writeEdgeCPU(w, rates); ok {
				targets = append(targets, target{fmt.Sprintf("edge CPU per notification at %s req/s ≤ 2.0 × plain Caddy's per proxied request", rates[0].str("rate")),
					fmt.Sprintf("%.2f ×", cpu), yes(cpu <= 2.0)})
			}
			if sl := byKindFirst(byKind, "storelat"); sl["p50_ms"] != nil {
				fmt.Fprintf(w, "The store alone at the same rate (`benchtool storelat`: Enqueue of one delivery from %s writers, open loop, 4 goroutines completing them; no HTTP): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms.\n\n",
					env.str("conns"), sl.num("p50_ms"), sl.num("p90_ms"), sl.num("p99_ms"), sl.num("p999_ms"))
			}
			measured := fmt.Sprintf("%.2f ms", added)
			if fl := byKindFirst(byKind, "fsyncfloor"); fl["p99_ms"] != nil {
				fmt.Fprintf(w, "The disk's floor at the same rate (`benchtool fsynclat -rate`: requests due at that rate, each answered by the next 1 KiB-per-request write and fsync, one at a time, nothing else running in the process; the due time is when a sleeping goroutine was to wake): p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms. A request path that waits for an fsync pays this, less the wake-up lateness that plain Caddy's requests see too (`benchtool jitter`, above).\n\n",
					fl.num("p50_ms"), fl.num("p90_ms"), fl.num("p99_ms"), fl.num("p999_ms"))
				measured += fmt.Sprintf(" (a group commit alone at this rate: p99 %.2f ms)", fl.num("p99_ms"))
			}
			targets = append(targets, target{fmt.Sprintf("added p99 over plain Caddy ≤ 1 ms at %s connections, open loop at %s req/s", env.str("conns"), rates[0].str("rate")),
				measured, yes(added <= 1)})
		}
	}

	writeParts(w, byKind, env.str("rate"))
	writeFleet(w, byKind, env.str("rate"))

	// Deliveries of the measured runs.
	if drains := byKind["drain"]; len(drains) > 0 {
		var e2es []float64
		fmt.Fprintln(w, "Deliveries of the chain's wrk runs (the script waits after each until the queue is empty):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| chain round | accepted (upstream) | delivered during the run | backlog at the end | drained in s | drain rate /s | accepted and delivered per s |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|")
		for _, d := range drains {
			rd := int(d.num("round"))
			var up, dur float64
			for _, r := range byKind["wrk"] {
				if r.str("server") == "chain" && int(r.num("round")) == rd {
					up, dur = r.num("upstream"), r.num("duration_us")/1e6
				}
			}
			during := up - d.num("backlog")
			rate := "–"
			if d.num("backlog") > 0 && d.num("rate") > 0 {
				rate = fmt.Sprintf("%.0f", d.num("rate"))
			}
			e2e := 0.0
			if dur+d.num("seconds") > 0 {
				e2e = up / (dur + d.num("seconds"))
			}
			e2es = append(e2es, e2e)
			fmt.Fprintf(w, "| %d | %.0f | %.0f | %.0f | %.2f | %s | %.0f |\n", rd, up, during, d.num("backlog"), d.num("seconds"), rate, e2e)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "The last column is the rate at which notifications were both accepted and delivered: accepted ÷ (run + drain time). wrk's req/s for the chain counts acceptance only; under saturation the request path wins the CPU and deliveries fall behind, durable in the queue.")
		fmt.Fprintln(w)
		if p := med["plain"].rps; p > 0 && len(e2es) > 0 {
			targets = append(targets, target{"(for reference) chain accepted-and-delivered rate ÷ plain Caddy", fmt.Sprintf("%.3f ×", median(e2es)/p), "n/a"})
		}
	}
	if fin := byKind["final"]; len(fin) > 0 {
		f := fin[0]
		accepted := f.num("chain_forwarded") + f.num("smoke")
		ok := f.num("pending") == 0 && f.num("sink_distinct") >= accepted && f.num("delivered") == f.num("sink_distinct")
		fmt.Fprintf(w, "Every accepted notification delivered: %s. The chain passed %.0f notifications to the upstream (warm-up and smoke test included), each only after its copy was synced; "+
			"the sink received %.0f distinct `X-Postback-Id` in %.0f HTTPS requests; the store counts %.0f delivered, %.0f pending. "+
			"The chain's resident memory afterwards: %.0f MiB (peak %.0f MiB). nginx's mirror sent %.0f copies over plain HTTP.\n\n",
			yesNo(ok), f.num("chain_forwarded"), f.num("sink_distinct"), f.num("sink_tls"), f.num("delivered"), f.num("pending"),
			f.num("rss_mib"), f.num("hwm_mib"), f.num("sink_http"))
		targets = append(targets, target{"every accepted notification delivered", fmt.Sprintf("%.0f of %.0f", f.num("sink_distinct"), accepted), yes(ok)})
	}
	if dt := byKind["drain_test"]; len(dt) > 0 {
		fmt.Fprintln(w, "Drain test: a backlog of pending deliveries of 1 KiB (written by `benchtool fill`), then the chain started with the sink up; nothing else runs:")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| destination `concurrency` | deliveries | drained in s | deliveries/s | all delivered | load (1 min) |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---|---:|")
		for _, d := range dt {
			fmt.Fprintf(w, "| %.0f | %.0f | %.2f | **%.0f** | %s | %s |\n", d.num("concurrency"), d.num("n"), d.num("seconds"), d.num("rate"), yesNo(d.num("drained") == 1), d.str("load1"))
			if d.num("concurrency") == 4 {
				targets = append(targets, target{"drain ≥ 5 000 deliveries/s to a local sink (default concurrency 4)", fmt.Sprintf("%.0f /s", d.num("rate")), yes(d.num("rate") >= 5000)})
			}
		}
		fmt.Fprintln(w)
	}
	if serves := byKind["m1_serve"]; len(serves) > 0 {
		fill := result{}
		if f := byKind["m1_fill"]; len(f) > 0 {
			fill = f[0]
		}
		fmt.Fprintf(w, "%.0f pending deliveries of 1 KiB, destination dead (connection refused: after 10 failed attempts in a row its circuit opens, the backlog is held and one delivery at a time probes it), resident memory sampled every second for %s s after each start:\n\n",
			fill.num("n"), byKindFirst(byKind, "m1_rss").str("seconds"))
		fmt.Fprintln(w, "| phase | first request served after | RSS last | RSS peak | of which anonymous (peak) | file-backed (last) | high-water mark | Go heap peak | attempts while sampled | pending at the end |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		worstServe, worstMem, worstAnon, limAnon := 0.0, 0.0, 0.0, -1.0
		hwm := map[string]float64{}
		var cg result
		var cgServe float64
		for _, s := range serves {
			ph := s.str("phase")
			m := result{}
			for _, r := range byKind["m1_rss"] {
				if r.str("phase") == ph {
					m = r
				}
			}
			label := ph
			switch ph {
			case "memlimit":
				label = "restart with GOMEMLIMIT=100MiB"
			case "cgroup":
				label = fmt.Sprintf("first start in a %.0f MiB memory cgroup", m.num("cg_limit_mib"))
				cg = m
				cgServe = s.num("ms")
			}
			fmt.Fprintf(w, "| %s | %.0f ms | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.0f | %.0f |\n", label, s.num("ms"),
				m.num("rss_mib"), m.num("rss_peak_mib"), m.num("anon_peak_mib"), m.num("file_mib"), m.num("hwm_mib"), m.num("heap_peak_mib"), m.num("attempts"), m.num("pending"))
			worstServe = max(worstServe, s.num("ms"))
			if ph != "memlimit" && ph != "cgroup" {
				worstMem = max(worstMem, m.num("hwm_mib"))
				hwm[ph] = m.num("hwm_mib")
				worstAnon = max(worstAnon, m.num("anon_peak_mib"))
			} else {
				limAnon = m.num("anon_peak_mib")
			}
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Filled by `benchtool fill` in %.0f s (%.0f deliveries/s, 64 per Enqueue call, 32 writers); LSM %.0f MiB, value log %.0f MiB",
			fill.num("seconds"), fill.num("rate"), fill.num("lsm_mib"), fill.num("vlog_mib"))
		if du := byKind["m1_du"]; len(du) > 0 {
			fmt.Fprintf(w, "; %0.f MiB on disk after both runs", du[0].num("mib"))
		}
		fmt.Fprint(w, ".\n\n")
		if cg != nil {
			fate := "still running at the end"
			if cg.num("died") != 0 {
				fate = "**killed** before the end"
			}
			fmt.Fprintf(w, "In the memory cgroup (limit %.0f MiB, as systemd's `MemoryMax=` sets; Caddy takes `GOMEMLIMIT` from it): the kernel's peak charge (anonymous memory plus the page cache the process caused) %.0f MiB, OOM kills %.0f, the process %s.\n\n",
				cg.num("cg_limit_mib"), cg.num("cg_peak_mib"), cg.num("cg_oom"), fate)
		}
		n := fmt.Sprintf("%.0f", fill.num("n"))
		targets = append(targets,
			target{"resident memory ≤ 128 MiB with " + n + " pending (VmHWM, file-backed pages included)", fmt.Sprintf("%.0f MiB (anonymous peak %.0f MiB); first start after the fill %.0f MiB, restart %.0f MiB", worstMem, worstAnon, hwm["start"], hwm["restart"]), yes(worstMem <= 128)},
			target{"restart with " + n + " pending serves within 2 s", fmt.Sprintf("%.0f ms", worstServe), yes(worstServe <= 2000)})
		if cg != nil {
			// The kernel holds the charge at the limit by reclaiming page
			// cache; what matters is that the process lives and serves.
			ok := cg.num("cg_limit_mib") <= 128 && cg.num("died") == 0 && cg.num("cg_oom") == 0 && cgServe > 0 && cgServe <= 2000
			peak := fmt.Sprintf("%.0f MiB", cg.num("cg_peak_mib"))
			if cg.num("cg_peak_mib") >= cg.num("cg_limit_mib")-1 {
				peak += " (at the limit: page cache reclaimed)"
			}
			targets = append(targets, target{fmt.Sprintf("the same, first start in a %.0f MiB memory cgroup: serves within 2 s, no OOM kill", cg.num("cg_limit_mib")),
				fmt.Sprintf("first request after %.0f ms, peak charge %s, %.0f OOM kills", cgServe, peak, cg.num("cg_oom")), yes(ok)})
		}
		if limAnon >= 0 {
			targets = append(targets, target{"(for reference) anonymous memory with " + n + " pending under GOMEMLIMIT=100MiB", fmt.Sprintf("%.0f MiB peak", limAnon), "n/a"})
		}
	}

	if goOut != "" {
		rows := parseGoBench(goOut)
		if len(rows) > 0 {
			fmt.Fprintln(w, "Go benchmarks (`go test -bench`, same machine, same time):")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| benchmark | ns/op | other |")
			fmt.Fprintln(w, "|---|---:|---|")
			for _, r := range rows {
				fmt.Fprintf(w, "| %s | %s | %s |\n", r.name, r.nsop, strings.Join(r.extra, ", "))
				if strings.HasPrefix(r.name, "BenchmarkEnqueue/sync=journal/writers=") {
					if v, ok := r.metric["enq/fsync"]; ok {
						targets = append(targets, target{"durable enqueue ≥ 10 × the disk's synced writes/s (the journal, " + strings.TrimPrefix(r.name, "BenchmarkEnqueue/sync=journal/") + ")",
							fmt.Sprintf("%.1f × (%s deliveries/s, %s fsync/s)", v, trimF(r.metric["deliveries/s"]), trimF(r.metric["fsync/s"])), yes(v >= 10)})
					}
				}
			}
			fmt.Fprintln(w)
		}
	}

	if goOut != "" {
		var soak []string
		for _, line := range strings.Split(goOut, "\n") {
			if strings.Contains(line, "soak_test.go") && (strings.Contains(line, "cycles") || strings.Contains(line, "files:")) {
				soak = append(soak, strings.TrimSpace(line))
			}
		}
		if len(soak) > 0 {
			fmt.Fprintln(w, "Store size over 100k enqueue→deliver cycles of 1 KiB (storage's `TestSoakCycles`: 32 workers, retention ≈ 10k cycles, maintenance every 10k):")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "```")
			for _, l := range soak {
				fmt.Fprintln(w, l)
			}
			fmt.Fprintln(w, "```")
			fmt.Fprintln(w)
		}
		for _, line := range strings.Split(goOut, "\n") {
			if strings.Contains(line, "soakwrites_test.go") && strings.Contains(line, "per notification") {
				fmt.Fprintf(w, "What Badger writes per notification (storage's `TestSoakHistoryWrites`): `%s`\n\n", strings.TrimSpace(line))
			}
		}
	}

	if len(targets) > 0 {
		fmt.Fprintln(w, "| target | measured | |")
		fmt.Fprintln(w, "|---|---|---|")
		for _, t := range targets {
			fmt.Fprintf(w, "| %s | %s | %s |\n", t.what, t.measured, t.met)
		}
		fmt.Fprintln(w)
	}
}

func byKindFirst(m map[string][]result, kind string) result {
	if rs := m[kind]; len(rs) > 0 {
		return rs[0]
	}
	return result{}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "**yes**"
	}
	return "**NO**"
}

func joinF(xs []float64, f string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(f, x)
	}
	return strings.Join(s, ", ")
}

func trimF(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) }

type goRow struct {
	name, nsop string
	extra      []string
	metric     map[string]float64
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+(\d+)\s+(.*)$`)

// parseGoBench reads "BenchmarkX-2  N  v unit  v unit ..." lines.
func parseGoBench(out string) []goRow {
	var rows []goRow
	for _, line := range strings.Split(out, "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		r := goRow{name: m[1], metric: map[string]float64{}}
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			unit := f[i+1]
			r.metric[unit] = v
			if unit == "ns/op" {
				r.nsop = f[i]
			} else {
				r.extra = append(r.extra, f[i]+" "+unit)
			}
		}
		rows = append(rows, r)
	}
	return rows
}

// writeEdgeCPU compares the edge's own CPU per request at the fixed rate
// (the proxy process alone: the copies it sends included, the upstream's and
// the sink's CPU not), chain against plain Caddy, round by round.
// writeEdgeCPU writes the edge's CPU per request, chain ÷ plain, and
// returns the median ratio.
func writeEdgeCPU(w io.Writer, rates []result) (float64, bool) {
	per := map[string][]float64{}
	for _, r := range rates {
		if up := r.num("upstream"); up > 0 && r["cpu_edge_s"] != nil {
			per[r.str("server")] = append(per[r.str("server")], r.num("cpu_edge_s")*1e6/up)
		}
	}
	a, b := per["plain"], per["chain"]
	if len(a) == 0 || len(b) == 0 {
		return 0, false
	}
	var ratio []float64
	for i := range min(len(a), len(b)) {
		ratio = append(ratio, b[i]/a[i])
	}
	fmt.Fprintf(w, "Edge CPU per request at this rate (the proxy's process alone, the copies it sends included): plain Caddy %.0f µs, the chain %.0f µs: **%.2f ×** (per round %s).\n\n",
		median(a), median(b), median(ratio), joinF(ratio, "%.2f"))
	return median(ratio), true
}
