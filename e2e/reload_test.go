package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// reloadConfig is itns.php behind the edge, copying to DIN 1001 at
// destURL; a reload changes only the destination.
func reloadConfig(storeDir, destURL, caFile, itemCode, root, php string, port int) string {
	return caddyfile{
		store:    storeDir,
		postback: "encryption_key {env.E2E_DB_KEY}",
		dests: []destination{{din: "1001", url: destURL, ca: caFile,
			opts: "item_code " + itemCode + "\nretry_schedule 0s 100ms 200ms 500ms 1s 1s 1s"}},
		sites: []site{{port: port, root: root, body: itnsRoute("allow 127.0.0.1", "dedupe 1h", "1001", php)}},
	}.String()
}

// While signed notifications flow, `caddy reload` moves DIN 1001 from one
// collector to another and back, three times. No request is refused, every
// accepted notification reaches a collector, and what is accepted after a
// reload goes to the new one.
func TestReloadUnderLoadLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end reload test under load (about 12s)")
	}
	php := startPHP(t)
	dir := t.TempDir()
	sinkA, sinkB := newSink(t, dir, 0), newSink(t, dir, 0)
	port := testutil.FreePort(t)
	cfg := func(s *sink, item string) string {
		return reloadConfig(dir+"/store", s.srv.URL+"/collect", s.caFile, item, legacyRoot(t), php.addr, port)
	}
	edge := startCaddy(t, dir, cfg(sinkA, "AAAA"), "E2E_ITNS_SECRET="+itnsSecret, "E2E_DB_KEY="+e2eDBKey)

	sender := newLoadSender(t, fmt.Sprintf("http://127.0.0.1:%d/itns.php", port))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); sender.run(stop) }()
	}
	plan := []struct {
		to   *sink
		item string
	}{{sinkB, "BBBB"}, {sinkA, "AAAA"}, {sinkB, "BBBB"}}
	var lastReload time.Time
	for i, step := range plan {
		time.Sleep(2500 * time.Millisecond)
		start := time.Now()
		edge.reload(t, dir, cfg(step.to, step.item))
		lastReload = time.Now()
		t.Logf("%s reload %d to %s took %s", time.Now().Format("15:04:05.000"), i+1, step.item, lastReload.Sub(start).Round(time.Millisecond))
	}
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	wg.Wait()

	sender.mu.Lock()
	sent, accepted, attempts := len(sender.sent), len(sender.accepted), sender.attempts
	errs := fmt.Sprint(sender.errs)
	sender.mu.Unlock()
	// A reload closes the old server's idle keep-alive connections; a
	// request the client had just sent on one fails in transport (HTTP/1.1's
	// keep-alive race; Go does not retry a POST by itself) and the sender
	// retries it. What must not happen is a refusal: an HTTP error answer.
	sender.mu.Lock()
	for kind, n := range sender.errs {
		if strings.HasPrefix(kind, "HTTP ") {
			t.Errorf("%d requests refused with %s during the reloads", n, kind)
		}
	}
	sender.mu.Unlock()
	if accepted != sent {
		t.Errorf("%d notifications sent, only %d accepted", sent, accepted)
	}

	testutil.WaitFor(t, "every accepted notification at a collector", time.Minute, func() bool {
		a, _ := sinkA.received()
		b, _ := sinkB.received()
		for body := range sender.accepted {
			if a[body] == 0 && b[body] == 0 {
				return false
			}
		}
		return true
	})
	a, totalA := sinkA.received()
	b, totalB := sinkB.received()
	late, lateAtA := 0, 0
	for body, at := range sender.at {
		// Accepted once the last reload had answered (with a margin for the
		// old config's last requests): the new destination's.
		if at.After(lastReload.Add(200 * time.Millisecond)) {
			late++
			if a[body] > 0 || b[body] == 0 {
				lateAtA++
			}
		}
	}
	if late == 0 {
		t.Error("nothing was accepted after the last reload")
	}
	if lateAtA > 0 {
		t.Errorf("%d of the %d notifications accepted after the last reload went to the old destination", lateAtA, late)
	}
	for _, r := range append(sinkA.requests(), sinkB.requests()...) {
		if !sender.sent[r.Body] {
			t.Errorf("a collector got a body nobody sent: %q", r.Body)
		}
	}
	if strings.Contains(edge.logs.String(), "panic") {
		t.Errorf("the edge logged a panic:\n%s", edge.logs.String())
	}
	dup := totalA + totalB - len(a) - len(b)
	for body := range a {
		if b[body] > 0 {
			dup++
		}
	}
	figures(t, "reload: reloads=%d sent=%d requests=%d accepted=%d delivered_A=%d delivered_B=%d duplicates=%d accepted_after_last_reload=%d failed_requests=%s",
		len(plan), sent, attempts, accepted, len(a), len(b), dup, late, errs)
}

// A notification whose request is in flight on the old config while a
// reload stops it must still be served: Caddy starts the new config, then
// stops the old config's apps in no fixed order, so the postback app of the
// old config may be stopped while the old server is still draining that
// request. Each round holds a request open across a reload (its body is
// sent in two parts, the second after the reload has begun) and expects the
// script's answer, not a 503.
func TestReloadRequestInFlightIsServed(t *testing.T) {
	php := startPHP(t)
	dir := t.TempDir()
	sinkA, sinkB := newSink(t, dir, 0), newSink(t, dir, 0)
	port := testutil.FreePort(t)
	cfg := func(s *sink, item string) string {
		return reloadConfig(dir+"/store", s.srv.URL+"/collect", s.caFile, item, legacyRoot(t), php.addr, port)
	}
	edge := startCaddy(t, dir, cfg(sinkA, "AAAA"), "E2E_ITNS_SECRET="+itnsSecret, "E2E_DB_KEY="+e2eDBKey)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	client := &http.Client{Timeout: 30 * time.Second}

	// Caddy's map order decides which app of the old config stops first;
	// eight rounds make a refusal near certain if it can happen.
	const rounds = 8
	refused := 0
	var bodies []string
	for i := 0; i < rounds; i++ {
		body := signITNS(t, itnsSecret, "", itnsFields("", fmt.Sprintf("INFLIGHT-%d", i), time.Now()))
		bodies = append(bodies, body)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		head := fmt.Sprintf("POST /itns.php HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", addr, formContent, len(body))
		if _, err := io.WriteString(c, head+body[:20]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the old server is now reading the body
		next, item := sinkB, "BBBB"
		if i%2 == 1 {
			next, item = sinkA, "AAAA"
		}
		reloaded := make(chan error, 1)
		go func() { reloaded <- reloadErr(edge, dir, cfg(next, item)) }()
		time.Sleep(400 * time.Millisecond) // the new config runs; the old one is stopping
		if _, err := io.WriteString(c, body[20:]); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		if err := <-reloaded; err != nil {
			t.Fatalf("round %d: caddy reload: %v", i, err)
		}
		if resp.StatusCode != http.StatusOK || string(got) != "OK\n" {
			refused++
			t.Errorf("round %d: the request in flight across the reload got %d %q (Retry-After %q), want 200 \"OK\\n\"",
				i, resp.StatusCode, got, resp.Header.Get("Retry-After"))
			// The sender retries, as senders do: the notification must go
			// through now, not be held as "in flight" by a dead config.
			a := do(t, client, http.MethodPost, "http://"+addr+"/itns.php", formContent, body)
			if a.Status != http.StatusOK {
				t.Errorf("round %d: the sender's retry got %s (Retry-After %q)", i, a, a.Header.Get("Retry-After"))
			}
		}
	}
	if refused > 0 {
		t.Logf("edge log:\n%s", grepLines(edge.logs.String(), "enqueue failed", "dedupe", "in-flight"))
	}
	testutil.WaitFor(t, "the notifications at a collector", 30*time.Second, func() bool {
		a, _ := sinkA.received()
		b, _ := sinkB.received()
		for _, body := range bodies {
			if a[body] == 0 && b[body] == 0 {
				return false
			}
		}
		return true
	})
}

// reloadErr is caddyProc.reload for a goroutine: it returns the error.
func reloadErr(p *caddyProc, dir, caddyfile string) error {
	path, err := p.writeConfig(dir, caddyfile)
	if err != nil {
		return err
	}
	cmd := exec.Command(caddyBin, "reload", "--config", path, "--adapter", "caddyfile",
		"--address", fmt.Sprintf("127.0.0.1:%d", p.adminPort))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
