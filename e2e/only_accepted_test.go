package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// only_accepted with the built binary: an edge killed with SIGKILL while
// the script has not answered yet (the copies are written, held) sends
// those copies after its restart, once each, with one X-Postback-Id per
// notification: at-least-once wins. After the restart, a notification the
// script refuses is never copied and one it accepts is.
func TestOnlyAcceptedKilledBeforeTheAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	dir := t.TempDir()
	destPort, edgePort := testutil.FreePort(t), testutil.FreePort(t)
	caFile := testutil.HTTPTestCA(t, dir)

	// The legacy script: it hangs while hang is set (the edge dies before
	// it answers), then accepts a sale and refuses a chargeback.
	var mu sync.Mutex
	hang, seen := true, 0
	release := make(chan struct{})
	script := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen++
		h := hang
		mu.Unlock()
		if h {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		if strings.Contains(string(b), "transaction=RFND") {
			http.Error(w, "SALE DECLINED", http.StatusForbidden)
			return
		}
		fmt.Fprint(w, "OK")
	}))
	defer script.Close()
	defer close(release)

	cfg := caddyfile{
		store: dir + "/store",
		dests: []destination{{din: "1001", url: fmt.Sprintf("https://127.0.0.1:%d/collect", destPort), ca: caFile, opts: "retry_schedule 0s 200ms 200ms 200ms 200ms 200ms"}},
		sites: []site{{port: edgePort, body: fmt.Sprintf(`route /post {
	secondary_post 1001 {
		only_accepted
	}
	reverse_proxy %s
}`, script.Listener.Addr())}},
	}.String()
	edge := startCaddy(t, dir, cfg)

	post := func(client *http.Client, receipt, transaction string) (string, int, error) {
		body := url.Values{"transaction": {transaction}, "tranreceipt": {receipt}, "cc": {"4111111111111111"}}.Encode()
		resp, err := client.Post(fmt.Sprintf("http://127.0.0.1:%d/post", edgePort), "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			return body, 0, err
		}
		resp.Body.Close()
		return body, resp.StatusCode, nil
	}
	const n = 5
	inFlight := map[string]bool{}
	var wg sync.WaitGroup
	var inMu sync.Mutex
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _, _ := post(&http.Client{Timeout: time.Minute}, fmt.Sprintf("H%03d", i), "SALE")
			inMu.Lock()
			inFlight[body] = true
			inMu.Unlock()
		}()
	}
	testutil.WaitFor(t, "every notification at the (hanging) script", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen == n
	})
	edge.kill9()
	wg.Wait() // the senders saw the connection die: to them, not accepted

	mu.Lock()
	hang = false
	mu.Unlock()
	dest := newSink(t, dir, destPort)
	edge = startCaddy(t, dir, cfg)
	testutil.WaitFor(t, "the held copies sent after the restart", 30*time.Second, func() bool {
		bodies, _ := dest.received()
		for b := range inFlight {
			if bodies[b] == 0 {
				return false
			}
		}
		return true
	})
	if !strings.Contains(edge.logs.String(), "deliveries left held by the previous run were released") {
		t.Errorf("the restart did not log the released copies:\n%s", edge.logs.String())
	}

	client := &http.Client{Timeout: 10 * time.Second}
	refund, code, err := post(client, "R001", "RFND")
	if err != nil || code != http.StatusForbidden {
		t.Fatalf("refused notification: %d, %v; want the script's 403", code, err)
	}
	sale, code, err := post(client, "S001", "SALE")
	if err != nil || code != http.StatusOK {
		t.Fatalf("accepted notification: %d, %v", code, err)
	}
	testutil.WaitFor(t, "the accepted copy", 30*time.Second, func() bool {
		bodies, _ := dest.received()
		return bodies[sale] > 0
	})
	// The stats count the refused copy as cancelled: it was resolved
	// before the accepted one's answer went out, so it is settled by now.
	var stats struct {
		Destinations []struct {
			DIN       string `json:"din"`
			Cancelled int    `json:"cancelled"`
			Held      int    `json:"held"`
		} `json:"destinations"`
	}
	if err := getJSON(client, edge.adminURL("/postback/stats"), &stats); err != nil {
		t.Fatal(err)
	}
	if len(stats.Destinations) != 1 || stats.Destinations[0].Cancelled != 1 || stats.Destinations[0].Held != 0 {
		t.Errorf("stats after the run: %+v, want 1 cancelled and none held", stats.Destinations)
	}
	bodies, _ := dest.received()
	if bodies[refund] != 0 {
		t.Errorf("the refused notification was copied")
	}
	for body, ids := range dest.idsByBody() {
		if len(ids) != 1 {
			t.Errorf("notification %q arrived with %d ids: %v", body, len(ids), ids)
		}
	}
}
