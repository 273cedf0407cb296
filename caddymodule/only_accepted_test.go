package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
)

// only_accepted: the copy of a notification the script answers 2xx is
// delivered; one it refuses (an HTTP error, or a handler error such as a
// dead upstream) is cancelled, never sent, and shows as cancelled in the
// listing, the stats and the metrics.
func TestOnlyAcceptedCopies(t *testing.T) {
	dest := newTestDestination(t)
	script := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), "sale=bad") {
			http.Error(w, "SALE DECLINED", http.StatusForbidden)
			return
		}
		fmt.Fprint(w, "SALE OK\n")
	})
	up := httptest.NewServer(script)
	t.Cleanup(up.Close)
	newTester(t, postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 3201 {
			url %s/collect
			ca_cert %s
		}`, dest.srv.URL, dest.caFile)), fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /ipn.php {
		secondary_post 3201 {
			only_accepted
		}
		reverse_proxy %s
	}
	route /down.php {
		secondary_post 3201 {
			only_accepted
		}
		reverse_proxy %s
	}
}`, up.Listener.Addr(), testutil.DeadAddr(t)))

	sendNotification(t, "/ipn.php", "sale=good&amount=1")
	if code := postStatus(t, "/ipn.php", "sale=bad&amount=2"); code != http.StatusForbidden {
		t.Fatalf("refused sale answered %d, want the script's 403", code)
	}
	if code := postStatus(t, "/down.php", "sale=lost&amount=3"); code != http.StatusBadGateway {
		t.Fatalf("dead upstream answered %d, want 502", code)
	}
	testutil.WaitFor(t, "the accepted copy delivered and two cancelled", 20*time.Second, func() bool {
		st := destStats(adminStats(t), "3201")
		return st.Delivered == 1 && st.Cancelled == 2 && st.Held == 0
	})
	if got := dest.requests(); len(got) != 1 || got[0].Body != "sale=good&amount=1" {
		t.Fatalf("destination received %d copies, want the accepted one only: %+v", len(got), got)
	}
	var page report.DeliveryList
	adminGet(t, "/postback/deliveries?state=cancelled", &page)
	if len(page.Deliveries) != 2 {
		t.Fatalf("cancelled listing: %d deliveries, want 2", len(page.Deliveries))
	}
	reasons := page.Deliveries[0].LastError + " | " + page.Deliveries[1].LastError
	for _, want := range []string{"the script answered 403 Forbidden", "the script answered 502 Bad Gateway"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("cancelled reasons %q lack %q", reasons, want)
		}
	}
	for _, d := range page.Deliveries {
		if d.HasPayload || d.Attempts != 0 {
			t.Errorf("cancelled delivery %s kept its payload or was attempted: %+v", d.ID, d)
		}
	}
	if v := scrapeMetrics(t)[`caddy_postback_cancelled_total{din="3201"}`]; v != 2 {
		t.Errorf("caddy_postback_cancelled_total = %v, want 2", v)
	}
	var held struct {
		Count int `json:"count"`
	}
	if adminGet(t, "/postback/deliveries?state=held", &held); held.Count != 0 {
		t.Errorf("%d deliveries still held", held.Count)
	}
}

// postStatus posts a form to the test site and returns the status.
func postStatus(t *testing.T, path, body string) int {
	t.Helper()
	resp, err := http.Post(testURL(0, path), "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
