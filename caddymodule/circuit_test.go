package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
)

// A dead destination configured with `breaker 3 1h`: after three failed
// attempts its deliveries are held, and the stats, the report's health and
// the metrics say so.
func TestDeadDestinationOpensCircuit(t *testing.T) {
	good := newTestDestination(t)
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 2301 {
			url %s/ok
			ca_cert %s
		}
		destination 2302 {
			url https://%s/refused
			retry_schedule 0s 1h
			concurrency 1
			breaker 3 1h
		}`, good.srv.URL, good.caFile, testutil.DeadAddr(t)))
	newTester(t, global, `
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post 2301 2302
		respond "OK"
	}
}`)
	const n = 12
	for i := range n {
		sendNotification(t, "/itns.php", fmt.Sprintf("transaction=SALE&n=%d", i))
	}
	testutil.WaitFor(t, "the circuit of 2302 to open", 15*time.Second, func() bool {
		return destStats(adminStats(t), "2302").CircuitOpenSince != nil
	})
	testutil.WaitFor(t, "the good copies", 15*time.Second, func() bool { return len(good.requests()) == n })
	time.Sleep(200 * time.Millisecond) // nothing more may reach 2302
	st := adminStats(t)
	dead, ok := destStats(st, "2302"), destStats(st, "2301")
	if dead.Health != "failing" || !strings.HasPrefix(dead.HealthReason, "circuit open") || dead.Pending != n {
		t.Errorf("2302: health %s (%q), %d pending", dead.Health, dead.HealthReason, dead.Pending)
	}
	// The breaker hears each answer before the next attempt starts: with
	// concurrency 1, exactly the threshold; not one attempt per notification.
	if a := dead.LastHour.Attempts; a != 3 {
		t.Errorf("2302: %d attempts, want the threshold 3 (concurrency 1)", a)
	}
	time.Sleep(300 * time.Millisecond)
	if a := destStats(adminStats(t), "2302").LastHour.Attempts; a != dead.LastHour.Attempts {
		t.Errorf("2302: attempts went on while the circuit was open: %d → %d", dead.LastHour.Attempts, a)
	}
	if ok.CircuitOpenSince != nil || ok.Delivered != n {
		t.Errorf("2301: %+v", ok)
	}
	m := scrapeMetrics(t)
	if m[`caddy_postback_circuit_open{din="2302"}`] != 1 {
		t.Errorf("caddy_postback_circuit_open{din=\"2302\"} = %v, want 1", m[`caddy_postback_circuit_open{din="2302"}`])
	}
	if v, ok := m[`caddy_postback_circuit_open{din="2301"}`]; !ok || v != 0 {
		t.Errorf("caddy_postback_circuit_open{din=\"2301\"} = %v (present %t), want 0 from the start", v, ok)
	}
}

func TestBreakerCaddyfile(t *testing.T) {
	adapt := func(opt string) (string, error) {
		cfg := fmt.Sprintf("{\n\tpostback {\n\t\tdestination 1 {\n\t\t\turl https://partner.example/collect\n\t\t\t%s\n\t\t}\n\t}\n}\n", opt)
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
		return string(out), err
	}
	for opt, want := range map[string]string{
		"breaker 5 30s": `"breaker_threshold":5,"breaker_max_probe":30000000000`,
		"breaker 20":    `"breaker_threshold":20}`,
		"breaker off":   `"breaker_threshold":-1}`,
	} {
		out, err := adapt(opt)
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("%s: %v\n%s\nlacks %s", opt, err, out, want)
		}
	}
	for opt, want := range map[string]string{
		"breaker":         "wrong argument count",
		"breaker 0":       "want a number of failed attempts",
		"breaker off 1m":  "wrong argument count",
		"breaker 5 soon":  "bad maximum probe interval",
		"breaker 5 1m 2m": "wrong argument count",
		"breaker -1":      "want a number of failed attempts",
	} {
		if _, err := adapt(opt); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Caddyfile:5") {
			t.Errorf("%s: error %v, want %q at line 5", opt, err, want)
		}
	}
	// JSON: -1 is off, below is a load error.
	d := &Destination{URL: "https://partner.example/", BreakerThreshold: -2}
	if _, err := d.build("1", caddy.NewReplacer()); err == nil || !strings.Contains(err.Error(), "breaker_threshold") {
		t.Errorf("breaker_threshold -2: %v", err)
	}
}

// A manual retry (the report page's button, the admin API) while the circuit
// is open sends the next probe at once, even though the destination asked
// for an hour's pause; its success closes the circuit.
func TestManualRetryProbesOpenCircuit(t *testing.T) {
	partner := newTestDestination(t)
	partner.setStatus(http.StatusServiceUnavailable)
	partner.mu.Lock()
	partner.retryAfter = "3600"
	partner.mu.Unlock()
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 2401 {
			url %s/collect
			ca_cert %s
			retry_schedule 0s
			concurrency 1
			breaker 2 1h
		}`, partner.srv.URL, partner.caFile))
	newTester(t, global, `
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post 2401
		respond "OK"
	}
}`)
	for i := range 4 {
		sendNotification(t, "/itns.php", fmt.Sprintf("transaction=SALE&n=%d", i))
	}
	// One attempt each (no spool) and failed; after two the circuit opens.
	// Those enqueued after that wait for a probe, which Retry-After puts an
	// hour away.
	var before report.DestinationStats
	testutil.WaitFor(t, "the circuit of 2401 to open", 15*time.Second, func() bool {
		before = destStats(adminStats(t), "2401")
		return before.CircuitOpenSince != nil && before.Failed >= 2 && before.Failed+before.Pending == 4
	})
	partner.setStatus(http.StatusOK)
	var list struct {
		Deliveries []struct {
			ID string `json:"id"`
		} `json:"deliveries"`
	}
	adminGet(t, "/postback/deliveries?din=2401&state=failed", &list)
	if len(list.Deliveries) != before.Failed {
		t.Fatalf("%d failed deliveries listed, stats say %d", len(list.Deliveries), before.Failed)
	}
	if code, b := adminDo(t, http.MethodPost, "/postback/deliveries/"+list.Deliveries[0].ID+"/retry"); code != http.StatusAccepted {
		t.Fatalf("retry: %d %s", code, b)
	}
	testutil.WaitFor(t, "the retried delivery and the held ones, and the circuit closed", 10*time.Second, func() bool {
		d := destStats(adminStats(t), "2401")
		return d.CircuitOpenSince == nil && d.Delivered == 1+before.Pending && d.Failed == before.Failed-1
	})
}
