package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// TestMakeRunDemo runs the demo exactly as `make run` does (scripts/run-demo.sh
// on Caddyfile.example) and makes the requests the README shows: an allowed
// signed post, a 405 and a NOT ALLOWED IP, and the copy reaching DIN 1001.
func TestMakeRunDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end demo")
	}
	testutil.NeedTool(t, "php-cgi")
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.1:8443", "127.0.0.1:9123", "127.0.0.1:2019"} {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			testutil.SkipOrFail(t, "%s is in use (a `make run` of yours?); the demo needs it", addr)
		}
	}
	runDir := t.TempDir()
	// Not CommandContext: its SIGKILL at the end of the test would leave the
	// script no chance to stop php-cgi; Cleanup below stops it with SIGTERM.
	cmd := exec.Command("./scripts/run-demo.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "RUN_DIR="+runDir, "BIN="+caddyBin, "XDG_CONFIG_HOME="+filepath.Join(runDir, "config"),
		"XDG_DATA_HOME="+filepath.Join(runDir, "data"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // caddy goes with it; the script stops php-cgi
	cmd.WaitDelay = 5 * time.Second                       // php-cgi may hold the output pipe a moment
	logs := &testutil.LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	client := &http.Client{Timeout: 10 * time.Second}
	started := false
	defer func() {
		if !started {
			t.Logf("demo log:\n%s", logs)
		}
	}()
	testutil.WaitFor(t, "the demo to start (its admin API to answer)", 2*time.Minute, func() bool {
		resp, err := client.Get("http://127.0.0.1:2019/config/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	started = true

	checkBannerMatchesREADME(t, logs.String(), runDir)

	signed := strings.TrimSpace(string(runCLI(t, "postback", "sign", "--secret", "demo-secret", "transaction=SALE",
		"tranreceipt=DEMO0001", "prodid=1707", "custemail=anna@example.com", "custfullname=Anna Muster",
		fmt.Sprintf("transtime=%d", time.Now().Unix()))))
	const form = "application/x-www-form-urlencoded"
	if a := do(t, client, "POST", "http://127.0.0.1:8080/itns.php", form, signed); a.Status != 200 || a.Body != "OK\n" {
		t.Errorf("signed ITNS post: %s\n%s", a, logs)
	}
	// itns.php reads AffiliCon's field names: the receipt it logs is the one
	// signed, not "" (it was, when the README signed "transreceipt").
	if b, err := os.ReadFile(filepath.Join(runDir, "legacy-data", "itns.log")); err != nil ||
		!strings.Contains(string(b), `"receipt":"DEMO0001"`) || !strings.Contains(string(b), `"name":"Anna Muster"`) {
		t.Errorf("itns.log does not show the notification as signed (%v):\n%s", err, b)
	}
	if a := do(t, client, "POST", "http://127.0.0.1:8080/itns.php", form, "transaction=SALE&prodid=1707"); a.Status != 403 {
		t.Errorf("unsigned ITNS post: %s", a)
	}
	resp, err := client.Get("http://127.0.0.1:8080/itns.php")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET itns.php: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	gateway := "xs_nats=ref&username=u&password=p&email=u@example.com&cc=4111111111111111&cvv=123"
	if a := do(t, client, "POST", "http://127.0.0.1:8080/signup/process_gateway.php", form, gateway); a.Status != 200 ||
		a.Body != "SALE DECLINED\nNOT ALLOWED IP\n" {
		t.Errorf("gateway from an unlisted sender: %s", a)
	}
	if a := do(t, client, "GET", "http://127.0.0.1:8080/signup/process_extended.php?extended_id=demo&action=SALE&transid=T1", "", ""); a.Status != 200 ||
		a.Body != "OK\nSALE\n" {
		t.Errorf("extended sale by GET: %s", a)
	}
	// Both accepted posts reach the demo's HTTPS destination (sink.php).
	sinkLog := filepath.Join(runDir, "legacy-data", "sink.log")
	testutil.WaitFor(t, "two copies at DIN 1001", 20*time.Second, func() bool {
		b, err := os.ReadFile(sinkLog)
		return err == nil && strings.Count(string(b), `"din":"1001"`) == 2
	})
	stats := string(runCLI(t, "postback", "stats", "--address", "localhost:2019"))
	if !strings.Contains(stats, "1001") {
		t.Errorf("caddy postback stats:\n%s", stats)
	}
	// `caddy adapt` and `caddy validate` on the example, while the demo holds
	// the store: validate provisions everything (keys, certificates, DINs)
	// but must not need Badger's lock.
	key, err := os.ReadFile(filepath.Join(runDir, "db.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"adapt", "validate"} {
		c := exec.Command(caddyBin, sub, "--config", "Caddyfile.example", "--adapter", "caddyfile")
		c.Dir = ".."
		c.Env = append(os.Environ(), "DEMO_DIR="+runDir, "POSTBACK_DB_KEY="+string(key), "ITNS_SECRET=demo-secret")
		if out, err := c.CombinedOutput(); err != nil {
			t.Errorf("caddy %s Caddyfile.example while the demo runs: %v\n%s", sub, err, out)
		}
	}

	req, _ := http.NewRequest("GET", "http://127.0.0.1:8080/postback-report/", nil)
	req.SetBasicAuth("ops", "demo")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("report page: %d", resp.StatusCode)
	}
}

// runCLI runs the built binary with args and returns its standard output.
func runCLI(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, caddyBin, args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("caddy %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// checkBannerMatchesREADME compares what `make run` prints with README's
// Quick start: the same commands (comments and sample output aside) and the
// same URLs, so that neither tells the user to run or open what the other
// does not.
func checkBannerMatchesREADME(t *testing.T, logs, runDir string) {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	quick, _, _ := strings.Cut(string(readme)[strings.Index(string(readme), "It prints what to try"):], "`make test` needs")
	fence := strings.Index(quick, "```console\n")
	if fence < 0 {
		t.Fatal("README Quick start: no console block after \"It prints what to try\"")
	}
	block, _, _ := strings.Cut(quick[fence+len("```console\n"):], "```")
	var readmeCmds []string
	for _, c := range joinContinued(strings.Split(block, "\n")) {
		if cmd, ok := strings.CutPrefix(c, "$ "); ok && !strings.HasPrefix(cmd, "#") {
			readmeCmds = append(readmeCmds, cmd)
		}
	}

	start := strings.Index(logs, "Try, in another shell:")
	end := strings.Index(logs, "The report page is at")
	if start < 0 || end < start {
		t.Fatalf("the demo printed no banner:\n%s", logs)
	}
	banner := strings.NewReplacer(caddyBin, "./caddy", runDir, ".run").Replace(logs[start:end])
	var bannerCmds []string
	for _, c := range joinContinued(strings.Split(banner, "\n")[1:]) {
		if strings.HasPrefix(c, "  ") && !strings.HasPrefix(strings.TrimSpace(c), "#") {
			bannerCmds = append(bannerCmds, strings.TrimSpace(c))
		}
	}
	if strings.Join(readmeCmds, "\n") != strings.Join(bannerCmds, "\n") {
		t.Errorf("README Quick start and the `make run` banner differ:\nREADME:\n%s\nbanner:\n%s",
			strings.Join(readmeCmds, "\n"), strings.Join(bannerCmds, "\n"))
	}

	url := regexp.MustCompile(`https?://[^\s'"<>)]+`)
	reportLine, _, _ := strings.Cut(logs[end:], "\n")
	if r, b := url.FindAllString(quick, -1), url.FindAllString(logs[start:end]+reportLine, -1); strings.Join(uniq(r), " ") != strings.Join(uniq(b), " ") {
		t.Errorf("README Quick start names the URLs %v, the `make run` banner %v", uniq(r), uniq(b))
	}
}

// joinContinued joins shell lines ending in a backslash with the next and
// collapses runs of white space, so that indentation does not count.
func joinContinued(lines []string) []string {
	var out []string
	cur := ""
	for _, l := range lines {
		cur += l
		if strings.HasSuffix(cur, "\\") {
			cur = strings.TrimSuffix(cur, "\\") + " "
			continue
		}
		lead := cur[:len(cur)-len(strings.TrimLeft(cur, " "))]
		out = append(out, lead+strings.Join(strings.Fields(cur), " "))
		cur = ""
	}
	return out
}

// uniq returns the sorted distinct strings of s.
func uniq(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}
