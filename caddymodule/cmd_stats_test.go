package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
)

// runStatsCommand runs `postback stats args...` as Caddy's command tree would.
func runStatsCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newPostbackCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"stats"}, args...))
	err := cmd.Execute()
	return out.String(), err
}

func TestPostbackStatsCommand(t *testing.T) {
	good := newTestDestination(t)
	bad := newTestDestination(t)
	bad.setStatus(http.StatusServiceUnavailable)
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 3401 {
			url %s/ok
			ca_cert %s
		}
		destination 3402 {
			url %s/down
			ca_cert %s
			retry_schedule 0s
		}`, good.srv.URL, good.caFile, bad.srv.URL, bad.caFile))
	newTester(t, global, `
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post 3401 3402
		respond "OK"
	}
}`)
	sendNotification(t, "/itns.php", cardBody)
	testutil.WaitFor(t, "1 delivered, 1 failed", 15*time.Second, func() bool {
		st := adminStats(t)
		return destStats(st, "3401").Delivered == 1 && destStats(st, "3402").Failed == 1
	})
	addr := fmt.Sprintf("localhost:%d", testAdminPort())

	// A failed delivery: the table says which, and the exit status is 2.
	out, err := runStatsCommand(t, "--address", addr)
	if err == nil || !strings.Contains(err.Error(), "status 2") {
		t.Errorf("with a failed delivery: error %v, want exit status 2", err)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || !strings.Contains(lines[0], "DIN") || !strings.Contains(lines[0], "FAILED") || !strings.Contains(lines[0], "OK 24H") {
		t.Fatalf("table:\n%s", out)
	}
	fields := func(prefix string) []string {
		for _, l := range lines {
			if f := strings.Fields(l); len(f) > 0 && f[0] == prefix {
				return f
			}
		}
		t.Fatalf("no line for %s in\n%s", prefix, out)
		return nil
	}
	// DIN HEALTH PENDING DELIVERED FAILED SPOOLED OLDEST OK1H OK24H LAST-SUCCESS...
	if f := fields("3401"); f[1] != "ok" || f[2] != "0" || f[3] != "1" || f[4] != "0" || f[5] != "0" || f[6] != "-" || f[7] != "100%" {
		t.Errorf("3401 line %v", f)
	}
	if f := fields("3402"); f[1] != "failing" || f[3] != "0" || f[4] != "1" || f[7] != "0%" || f[9] != "never" {
		t.Errorf("3402 line %v", f)
	}
	if f := fields("TOTAL"); f[1] != "failing" || f[3] != "1" || f[4] != "1" || f[7] != "50.0%" {
		t.Errorf("TOTAL line %v", f)
	}
	if !strings.Contains(out, "3402 failing: 1 failed delivery waits for a retry") || !regexp.MustCompile(`\n    last error \d+s ago: \S`).MatchString(out) ||
		strings.Contains(out, "Usage:") {
		t.Errorf("no explanation for 3402:\n%s", out)
	}
	assertNoSecrets(t, "stats table", []byte(out))

	// --json is the API's document.
	out, err = runStatsCommand(t, "--address", addr, "--json")
	var st report.Stats
	if err == nil || json.Unmarshal([]byte(out), &st) != nil || destStats(st, "3402").Failed != 1 || st.Totals.Delivered != 1 {
		t.Errorf("--json: %v\n%s", err, out)
	}
	if code, err := runStats(&bytes.Buffer{}, statsOptions{address: addr}); code != statsExitFailed || err != nil {
		t.Errorf("runStats: %d %v", code, err)
	}

	// The admin address from a config file, as `caddy reload --config` finds it.
	cfg := filepath.Join(testDir(t, "cfg"), "Caddyfile")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("{\n\tadmin %s\n}\n", addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, err := runStats(&bytes.Buffer{}, statsOptions{config: cfg, adapter: "caddyfile"}); code != statsExitFailed || err != nil {
		t.Errorf("--config: %d %v", code, err)
	}

	// Retried and delivered: all clear, exit status 0.
	bad.setStatus(http.StatusOK)
	var failed report.DeliveryList
	adminGet(t, "/postback/deliveries?din=3402&state=failed", &failed)
	if code, body := adminDo(t, http.MethodPost, "/postback/deliveries/"+failed.Deliveries[0].ID+"/retry"); code != http.StatusAccepted {
		t.Fatalf("retry: %d %s", code, body)
	}
	testutil.WaitFor(t, "the retry", 10*time.Second, func() bool { return destStats(adminStats(t), "3402").Delivered == 1 })
	out, err = runStatsCommand(t, "--address", addr)
	if err != nil || !strings.Contains(out, "TOTAL") {
		t.Errorf("all delivered: %v\n%s", err, out)
	}

	// Unreachable admin API: exit status 1 with the address in the error.
	dead := testutil.DeadAddr(t)
	code, err := runStats(&bytes.Buffer{}, statsOptions{address: dead})
	if code != statsExitError || err == nil || !strings.Contains(err.Error(), dead) {
		t.Errorf("dead admin address: %d %v", code, err)
	}
}

func TestStatsTableLayout(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 0, 0, 0, time.UTC)
	age := 754.0
	rate := 0.987
	ok := report.DestinationStats{DIN: "1001", Configured: true, Health: report.HealthOK}
	ok.Delivered = 12345
	ok.LastHour.SuccessRate = &rate
	gone := report.DestinationStats{DIN: "77", Health: report.HealthDegraded, HealthReason: "oldest pending delivery waits for 12m 34s"}
	gone.Pending, gone.OldestPendingAgeSeconds = 3, &age
	gone.LastError = &report.LastError{At: now.Add(-90 * time.Second), Message: "HTTP 502 Bad Gateway"}
	st := report.Stats{GeneratedAt: now, Destinations: []report.DestinationStats{ok, gone}}
	st.Totals.Health, st.Totals.Pending, st.Totals.Delivered = report.HealthDegraded, 3, 12345

	var buf bytes.Buffer
	if err := writeStatsTable(&buf, st); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	want := []string{
		"DIN           HEALTH    PENDING  DELIVERED  FAILED  SPOOLED  OLDEST PENDING  OK 1H  OK 24H  LAST SUCCESS",
		"1001          ok              0      12345       0        0               -  98.7%       –  never",
		"77 (removed)  degraded        3          0       0        0         12m 34s      –       –  never",
		"TOTAL         degraded        3      12345       0        0               -      –       –  never",
		"",
		"77 degraded: oldest pending delivery waits for 12m 34s",
		"    last error 1m 30s ago: HTTP 502 Bad Gateway",
	}
	for i, w := range want {
		if i >= len(lines) || lines[i] != w {
			t.Errorf("line %d:\n got %q\nwant %q", i, lines[min(i, len(lines)-1)], w)
		}
	}

	buf.Reset()
	if err := writeStatsTable(&buf, report.Stats{GeneratedAt: now}); err != nil || !strings.Contains(buf.String(), "no destinations configured") {
		t.Errorf("empty: %v %q", err, buf.String())
	}
}
