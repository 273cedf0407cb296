package caddymodule

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
	"github.com/postbackedge/caddy-postback/storage"
)

// scrapeMetrics reads the admin /metrics endpoint into series → value, the
// series written as in the exposition format: name{label="value",...}.
// HELP lines are returned as "# HELP <name>".
func scrapeMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(adminURL("/metrics"))
	if err != nil {
		t.Fatalf("admin /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin /metrics: status %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, _, _ = strings.Cut(name, " ")
			out["# HELP "+name] = 1
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("admin /metrics: %v", err)
	}
	return out
}

// checkMetrics wants each series present and grown by delta since base:
// the collectors are process-wide, so other tests (or -count) count too.
// Gauges are given with absolute values.
func checkMetrics(t *testing.T, when string, base, got map[string]float64, delta map[string]float64) {
	t.Helper()
	for series, d := range delta {
		g, ok := got[series]
		want := base[series] + d
		if strings.Contains(series, "_queue_depth{") {
			want = d
		}
		if !ok {
			t.Errorf("%s: series %s missing", when, series)
		} else if g != want {
			t.Errorf("%s: %s = %v, want %v", when, series, g, want)
		}
	}
}

// TestMetricsAfterReload drives a scripted sequence, reloads the config (same
// store, changed site) and checks that every caddy_postback_* series is on
// the admin /metrics endpoint with the value the sequence implies, and that
// the collectors keep counting after the reload.
func TestMetricsAfterReload(t *testing.T) {
	good := newTestDestination(t)
	bad := newTestDestination(t)
	bad.setStatus(http.StatusInternalServerError)
	store := testDir(t, "store")
	global := postbackGlobal(store, fmt.Sprintf(`
		destination 3201 {
			url %s/ok
			ca_cert %s
		}
		destination 3202 {
			url %s/bad
			ca_cert %s
			retry_schedule 0s 50ms
		}
		destination 3203 {
			url https://%s/dead
			retry_schedule 0s 1h
		}`, good.srv.URL, good.caFile, bad.srv.URL, bad.caFile, testutil.DeadAddr(t)))
	site := func(extra string) string {
		return fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /itns.php {
		postback_filter {
			methods POST
		}
		secondary_post 3201 3202 3203
		respond "OK"
	}
	%s
}`, extra)
	}
	newTester(t, global, site(""))
	const methodSeries = `caddy_postback_filtered_total{reason="method"}`
	base := scrapeMetrics(t)

	for i := 0; i < 2; i++ {
		sendNotification(t, "/itns.php", fmt.Sprintf("%s&n=%d", cardBody, i))
	}
	resp, err := http.Get(testURL(0, "/itns.php?cc=4111111111111111"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET through the filter: %d", resp.StatusCode)
	}
	testutil.WaitFor(t, "the sequence to settle", 15*time.Second, func() bool {
		st := adminStats(t)
		d3203 := destStats(st, "3203")
		return destStats(st, "3201").Delivered == 2 && destStats(st, "3202").Failed == 2 &&
			d3203.Pending == 2 && d3203.LastHour.Attempts == 2
	})

	// Reload: a changed site, the same postback app and store.
	newTester(t, global, site(`respond /health "up"`))
	if resp, err := http.Get(testURL(0, "/health")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the reloaded config is not serving: %v", err)
	}
	m := scrapeMetrics(t)
	checkMetrics(t, "after reload", base, m, map[string]float64{
		`caddy_postback_enqueued_total{din="3201"}`:                                 2,
		`caddy_postback_enqueued_total{din="3202"}`:                                 2,
		`caddy_postback_enqueued_total{din="3203"}`:                                 2,
		`caddy_postback_delivered_total{din="3201"}`:                                2,
		`caddy_postback_failed_total{din="3202"}`:                                   2,
		`caddy_postback_delivery_attempts_total{din="3201",result="success"}`:       2,
		`caddy_postback_delivery_attempts_total{din="3202",result="http_error"}`:    4,
		`caddy_postback_delivery_attempts_total{din="3203",result="network_error"}`: 2,
		`caddy_postback_delivery_duration_seconds_count{din="3201"}`:                2,
		`caddy_postback_delivery_duration_seconds_count{din="3202"}`:                4,
		`caddy_postback_delivery_duration_seconds_count{din="3203"}`:                2,
		`caddy_postback_queue_depth{din="3201"}`:                                    0,
		`caddy_postback_queue_depth{din="3202"}`:                                    0,
		`caddy_postback_queue_depth{din="3203"}`:                                    2,
		methodSeries:                                                                1,
	})
	for _, name := range []string{"caddy_postback_enqueued_total", "caddy_postback_delivered_total", "caddy_postback_failed_total",
		"caddy_postback_delivery_attempts_total", "caddy_postback_delivery_duration_seconds", "caddy_postback_queue_depth",
		"caddy_postback_filtered_total", "caddy_postback_journal_waiting", "caddy_postback_journal_commits_total",
		"caddy_postback_journal_spilled_total"} {
		if m["# HELP "+name] != 1 {
			t.Errorf("after reload: %s has no HELP line", name)
		}
	}
	// Each notification's copies were one group commit of the journal (the
	// metric is the open store's since it was opened).
	if c := m["caddy_postback_journal_commits_total"]; c < 2 {
		t.Errorf("after reload: caddy_postback_journal_commits_total = %v, want at least the 2 notifications' commits", c)
	}
	for _, series := range []string{`caddy_postback_spooled_total{din="3202"}`, `caddy_postback_failed_total{din="3201"}`,
		`caddy_postback_delivered_total{din="3202"}`} {
		if m[series] != base[series] {
			t.Errorf("after reload: %s changed from %v to %v, but nothing happened to count", series, base[series], m[series])
		}
	}
	if sum := m[`caddy_postback_delivery_duration_seconds_sum{din="3201"}`] - base[`caddy_postback_delivery_duration_seconds_sum{din="3201"}`]; sum <= 0 || sum > 30 {
		t.Errorf("duration sum for 3201 = %v", sum)
	}

	// The collectors still count after the reload: one more notification,
	// and a retry of a failed delivery once its destination is back.
	bad.setStatus(http.StatusOK)
	sendNotification(t, "/itns.php", cardBody+"&n=3")
	var failed report.DeliveryList
	adminGet(t, "/postback/deliveries?din=3202&state=failed&limit=1", &failed)
	if failed.Count != 1 {
		t.Fatalf("failed deliveries of 3202: %+v", failed)
	}
	if code, body := adminDo(t, http.MethodPost, "/postback/deliveries/"+failed.Deliveries[0].ID+"/retry"); code != http.StatusAccepted {
		t.Fatalf("retry: %d %s", code, body)
	}
	testutil.WaitFor(t, "the new and the retried delivery", 15*time.Second, func() bool {
		st := adminStats(t)
		return destStats(st, "3201").Delivered == 3 && destStats(st, "3202").Delivered == 2 && destStats(st, "3203").Pending == 3 &&
			destStats(st, "3203").LastHour.Attempts == 3
	})
	checkMetrics(t, "after more traffic", base, scrapeMetrics(t), map[string]float64{
		`caddy_postback_enqueued_total{din="3201"}`:                                 3,
		`caddy_postback_enqueued_total{din="3202"}`:                                 3,
		`caddy_postback_delivered_total{din="3201"}`:                                3,
		`caddy_postback_delivered_total{din="3202"}`:                                2,
		`caddy_postback_failed_total{din="3202"}`:                                   2, // a counter: the retry does not undo it
		`caddy_postback_delivery_attempts_total{din="3202",result="success"}`:       2,
		`caddy_postback_delivery_attempts_total{din="3202",result="http_error"}`:    4,
		`caddy_postback_delivery_attempts_total{din="3203",result="network_error"}`: 3,
		`caddy_postback_queue_depth{din="3202"}`:                                    0,
		`caddy_postback_queue_depth{din="3203"}`:                                    3,
	})

	// The gauge and the stats agree.
	var det report.DeliveryDetail
	adminGet(t, "/postback/deliveries/"+failed.Deliveries[0].ID, &det)
	if det.State != storage.StateDelivered {
		t.Errorf("retried delivery is %s", det.State)
	}
}
