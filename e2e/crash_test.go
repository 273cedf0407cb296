package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// edgeConfig is an edge that copies /post to DIN 1001 at dest.
func edgeConfig(storeDir, dest, caFile string, port int) string {
	return caddyfile{
		store: storeDir,
		dests: []destination{{din: "1001", url: dest, ca: caFile, opts: `timeout 5s
retry_schedule 0s 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms`}},
		sites: []site{{port: port, body: `route /post {
	secondary_post 1001
	respond "OK"
}`}},
	}.String()
}

func postNotification(client *http.Client, port, i int) (string, error) {
	body := url.Values{
		"transaction": {"SALE"},
		"tranreceipt": {fmt.Sprintf("R%08d", i)},
		"custemail":   {fmt.Sprintf("buyer%d@example.com", i)},
		"cc":          {"4111111111111111"},
		"note":        {"Jürgen – 50% off & more"},
	}.Encode()
	resp, err := client.Post(fmt.Sprintf("http://127.0.0.1:%d/post", port), "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		return body, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("status %d", resp.StatusCode)
	}
	return body, nil
}

// With the destination down, notifications are accepted; the edge is killed
// with SIGKILL; the destination comes back and the edge restarts: every
// notification the sender saw accepted arrives, intact.
func TestCrashWhileDestinationDownLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	dir := t.TempDir()
	destPort, edgePort := testutil.FreePort(t), testutil.FreePort(t)
	caFile := testutil.HTTPTestCA(t, dir)
	cfg := edgeConfig(dir+"/store", fmt.Sprintf("https://127.0.0.1:%d/collect", destPort), caFile, edgePort)

	edge := startCaddy(t, dir, cfg)
	client := &http.Client{Timeout: 10 * time.Second}
	const n = 300
	accepted := map[string]bool{}
	for i := 0; i < n; i++ {
		body, err := postNotification(client, edgePort, i)
		if err != nil {
			t.Fatalf("notification %d: %v", i, err)
		}
		accepted[body] = true
	}
	edge.kill9()

	dest := newSink(t, dir, destPort)
	startCaddy(t, dir, cfg)
	testutil.WaitFor(t, "every accepted notification at the destination", 60*time.Second, func() bool {
		bodies, _ := dest.received()
		for b := range accepted {
			if bodies[b] == 0 {
				return false
			}
		}
		return true
	})
	bodies, total := dest.received()
	for b := range bodies {
		if !accepted[b] {
			t.Errorf("destination got a body nobody sent: %q", b)
		}
	}
	t.Logf("crash test: sent %d, accepted %d, delivered %d distinct, %d requests (%d duplicates)",
		n, len(accepted), len(bodies), total, total-len(bodies))
}
