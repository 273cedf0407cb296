package caddymodule

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// `caddy postback retry` puts back the failed deliveries of one DIN through
// the admin API; they are delivered, another DIN's stay failed, and a
// second run puts back none.
func TestPostbackRetryCommand(t *testing.T) {
	fixed := newTestDestination(t)
	fixed.setStatus(http.StatusBadGateway)
	down := newTestDestination(t)
	down.setStatus(http.StatusBadGateway)
	newTester(t, postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 3501 {
			url %s/ok
			ca_cert %s
			retry_schedule 0s
			breaker off
		}
		destination 3502 {
			url %s/down
			ca_cert %s
			retry_schedule 0s
			breaker off
		}`, fixed.srv.URL, fixed.caFile, down.srv.URL, down.caFile)), `
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post 3501 3502
		respond "OK"
	}
}`)
	for i := range 3 {
		sendNotification(t, "/itns.php", fmt.Sprintf("sale=%d", i))
	}
	testutil.WaitFor(t, "3 failed each", 15*time.Second, func() bool {
		st := adminStats(t)
		return destStats(st, "3501").Failed == 3 && destStats(st, "3502").Failed == 3
	})
	fixed.setStatus(http.StatusOK)
	addr := fmt.Sprintf("localhost:%d", testAdminPort())
	run := func(args ...string) (string, error) {
		cmd := newPostbackCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(append([]string{"retry", "--address", addr}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	out, err := run("--din", "3501", "--state", "failed", "--since", "1h")
	if err != nil || out != "3 deliveries put back for a new attempt\n" {
		t.Fatalf("retry: %v %q", err, out)
	}
	testutil.WaitFor(t, "3501's three delivered", 15*time.Second, func() bool { return destStats(adminStats(t), "3501").Delivered == 3 })
	if st := destStats(adminStats(t), "3502"); st.Failed != 3 || st.Pending != 0 {
		t.Errorf("3502 touched: %+v", st)
	}
	if out, err := run("--din", "3501", "--state", "failed"); err != nil || !strings.HasPrefix(out, "0 deliveries") {
		t.Errorf("second run: %v %q", err, out)
	}
	if _, err := run("--state", "delivered"); err == nil || !strings.Contains(err.Error(), "only failed and spooled") {
		t.Errorf("--state delivered: %v", err)
	}
	var buf bytes.Buffer
	if err := runRetry(&buf, retryOptions{address: testutil.DeadAddr(t)}); err == nil || !strings.Contains(err.Error(), "admin API") {
		t.Errorf("dead admin address: %v", err)
	}
}
