package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/postbackedge/caddy-postback/alert"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// alertSink is a local webhook that records the alerts it is posted.
type alertSink struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []alert.Body
	auth   []string
}

func newAlertSink(t *testing.T) *alertSink {
	t.Helper()
	s := &alertSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		var b alert.Body
		if err := json.Unmarshal(data, &b); err != nil {
			t.Errorf("alert body %q: %v", data, err)
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, b)
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// of returns the alerts of kind for din, in the order received.
func (s *alertSink) of(kind alert.Kind, din string) []alert.Body {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []alert.Body
	for _, b := range s.bodies {
		if b.Event == kind && b.DIN == din {
			out = append(out, b)
		}
	}
	return out
}

// Every event reaches the webhook as JSON with a text: failed deliveries
// debounced into one alert at once and one that counts the rest, a circuit
// opened and closed, a pending delivery too old, the store refusing writes.
func TestAlertsReachWebhook(t *testing.T) {
	sink := newAlertSink(t)
	t.Setenv("POSTBACK_TEST_ALERT_TOKEN", "Bearer s3cret")
	flaky := newTestDestination(t)
	flaky.status = func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	dead := testutil.DeadAddr(t)
	dir := testDir(t, "store")
	newTester(t, postbackGlobal(dir, fmt.Sprintf(`
		alert {
			webhook %s/hook {
				header Authorization {env.POSTBACK_TEST_ALERT_TOKEN}
			}
			min_interval 3s
			max_pending_age 1s
		}
		destination 2501 {
			url https://%s/gone
			retry_schedule 0s
			breaker off
		}
		destination 2502 {
			url %s/flaky
			ca_cert %s
			retry_schedule 0s 100ms 100ms 100ms 100ms
			concurrency 1
			breaker 2 1s
		}
		destination 2503 {
			url https://%s/later
			retry_schedule 0s 1h
			breaker off
		}
		destination 2504 {
			url https://%s/idle
		}`, sink.srv.URL, dead, flaky.srv.URL, flaky.caFile, dead, dead)), `
http://127.0.0.1:{port0} {
	route /a.php {
		secondary_post 2501
		respond "OK"
	}
	route /b.php {
		secondary_post 2502 2503
		respond "OK"
	}
}`)
	base := scrapeMetrics(t)
	for i := range 5 {
		sendNotification(t, "/a.php", fmt.Sprintf("transaction=SALE&n=%d", i))
	}
	sendNotification(t, "/b.php", "transaction=SALE&n=b")

	testutil.WaitFor(t, "the folded delivery_failed alert", 30*time.Second, func() bool {
		total := 0
		for _, b := range sink.of(alert.DeliveryFailed, "2501") {
			total += b.Count
		}
		return total == 5
	})
	failed := sink.of(alert.DeliveryFailed, "2501")
	if failed[0].Count != 1 || !strings.Contains(failed[0].Text, "destination 2501") {
		t.Errorf("first alert %+v: want it at once, count 1, a text naming the destination", failed[0])
	}
	folded := false
	for _, b := range failed[1:] {
		folded = folded || (b.Count > 1 && b.FirstAt != "")
	}
	if !folded || len(failed) >= 5 {
		t.Errorf("%d delivery_failed alerts for 5 failures (%+v): want the later ones folded into one with a count", len(failed), failed)
	}
	testutil.WaitFor(t, "circuit_open and circuit_closed of 2502", 30*time.Second, func() bool {
		return len(sink.of(alert.CircuitOpen, "2502")) > 0 && len(sink.of(alert.CircuitClosed, "2502")) > 0
	})
	testutil.WaitFor(t, "pending_too_old of 2503", 30*time.Second, func() bool {
		return len(sink.of(alert.PendingTooOld, "2503")) > 0
	})
	if b := sink.of(alert.PendingTooOld, "2503")[0]; b.OldestPending == "" || b.PendingFor == "" {
		t.Errorf("pending_too_old without its age: %+v", b)
	}
	// 2501 and 2502 may have waited past the second too on a busy machine;
	// 2504 never had anything pending.
	if n := len(sink.of(alert.PendingTooOld, "2504")); n != 0 {
		t.Errorf("%d pending_too_old alerts for a destination with nothing pending", n)
	}

	// Break the store under the running config: the 503 is an alert too.
	enginePool.Range(func(_, v any) bool {
		if e := v.(*pooledEngine); e.dir == dir {
			_ = e.store.Close()
		}
		return true
	})
	resp, err := http.Post(testURL(0, "/a.php"), "application/x-www-form-urlencoded", strings.NewReader("transaction=SALE&n=x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("closed store: %d, want 503", resp.StatusCode)
	}
	testutil.WaitFor(t, "store_refusing_writes", 30*time.Second, func() bool {
		return len(sink.of(alert.StoreRefusingWrites, "2501")) > 0
	})

	sink.mu.Lock()
	for i, a := range sink.auth {
		if a != "Bearer s3cret" {
			t.Errorf("alert %d: Authorization %q, want the header from {env.…}", i, a)
		}
	}
	sink.mu.Unlock()
	m := scrapeMetrics(t)
	if d := m[`caddy_postback_alerts_sent_total{event="delivery_failed"}`] - base[`caddy_postback_alerts_sent_total{event="delivery_failed"}`]; d != float64(len(failed)) {
		t.Errorf("alerts_sent_total{delivery_failed} grew by %v, want %d", d, len(failed))
	}
	if d := m[`caddy_postback_alerts_suppressed_total{event="delivery_failed"}`] - base[`caddy_postback_alerts_suppressed_total{event="delivery_failed"}`]; d != 4 {
		// Only the first was sent at once: each window that ends with events
		// folded opens the next, so the other four were folded.
		t.Errorf("alerts_suppressed_total{delivery_failed} grew by %v, want 4", d)
	}
}

func TestAlertCaddyfile(t *testing.T) {
	adapt := func(block string) (string, error) {
		cfg := "{\n\tpostback {\n\t\talert {\n" + block + "\n\t\t}\n\t}\n}\n"
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
		return string(out), err
	}
	out, err := adapt("webhook https://hooks.slack.com/services/T/B/X {\nheader X-Token {env.T}\n}\nwebhook https://ops.example.com/a\nmin_interval 5m\nmax_pending_age 2h")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"alert":{"webhooks":[{"url":"https://hooks.slack.com/services/T/B/X","header":{"X-Token":["{env.T}"]}},{"url":"https://ops.example.com/a"}]`,
		`"min_interval":300000000000`, `"max_pending_age":7200000000000`} {
		if !strings.Contains(out, want) {
			t.Errorf("adapted %s\nwant %s", out, want)
		}
	}
	for block, want := range map[string]string{
		"min_interval 5m":  "at least one webhook",
		"webhook ftp://x/": `scheme "ftp"`,
		"webhook https://a/\nmin_interval 1m\nmin_interval 2m": "min_interval already specified",
		"webhook https://a/ {\nretry 3\n}":                     `unrecognized webhook option "retry"`,
		"webhook https://a/\nchannel ops":                      `unrecognized alert option "channel"`,
	} {
		if _, err := adapt(block); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: %v, want an error with %q and its line", block, err, want)
		}
	}
}
