package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
	"github.com/postbackedge/caddy-postback/storage"
)

// cardBody is a notification with card data: none of it may ever appear in
// an admin API answer or on the report page.
const cardBody = "transaction=SALE&ccustname=Jane+Roe&cc=4111111111111111&cvv=737&password=hunter2-secret&amount=19.95"

// cardSecrets are the values of cardBody that must never be shown.
var cardSecrets = []string{"4111111111111111", "737&", "hunter2-secret", "Jane Roe", "Jane+Roe"}

// adminURL is the test Caddy's admin endpoint.
func adminURL(path string) string { return fmt.Sprintf("http://localhost:%d%s", testAdminPort(), path) }

// adminDo sends one request to the admin API and returns status and body.
func adminDo(t *testing.T, method, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, adminURL(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// adminGet decodes a 200 answer into v.
func adminGet(t *testing.T, path string, v any) []byte {
	t.Helper()
	code, b := adminDo(t, http.MethodGet, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, b)
	}
	return b
}

func adminStats(t *testing.T) report.Stats {
	t.Helper()
	var st report.Stats
	adminGet(t, "/postback/stats", &st)
	return st
}

func destStats(st report.Stats, din string) report.DestinationStats {
	for _, d := range st.Destinations {
		if d.DIN == din {
			return d
		}
	}
	return report.DestinationStats{}
}

// sendNotification posts a form to the test site and wants a 200.
func sendNotification(t *testing.T, path, body string) {
	t.Helper()
	resp, err := http.Post(testURL(0, path), "application/x-www-form-urlencoded", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, b)
	}
}

func (td *testDestination) setStatus(code int) {
	td.mu.Lock()
	td.status = func(int) int { return code }
	td.mu.Unlock()
}

func assertNoSecrets(t *testing.T, what string, body []byte) {
	t.Helper()
	for _, s := range cardSecrets {
		if strings.Contains(string(body), s) {
			t.Errorf("%s shows payload data %q", what, s)
		}
	}
}

// TestAdminAPIScriptedSequence runs successes, failures and a retry through a
// real Caddy and checks that stats, listings and details tell exactly that.
func TestAdminAPIScriptedSequence(t *testing.T) {
	good := newTestDestination(t)
	bad := newTestDestination(t)
	bad.setStatus(http.StatusInternalServerError)
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 3101 {
			url %s/ok
			ca_cert %s
		}
		destination 3102 {
			url %s/flaky
			ca_cert %s
			retry_schedule 0s 50ms
		}`, good.srv.URL, good.caFile, bad.srv.URL, bad.caFile))
	newTester(t, global, `
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post 3101 3102
		respond "OK"
	}
}`)
	start := time.Now().UTC()
	for i := 0; i < 3; i++ {
		sendNotification(t, "/itns.php", fmt.Sprintf("%s&n=%d", cardBody, i))
	}
	testutil.WaitFor(t, "3 delivered to 3101 and 3 failed at 3102", 15*time.Second, func() bool {
		st := adminStats(t)
		return destStats(st, "3101").Delivered == 3 && destStats(st, "3102").Failed == 3
	})
	if n := len(bad.requests()); n != 6 {
		t.Errorf("3102 got %d attempts, want 2 per delivery", n)
	}

	var st report.Stats
	raw := adminGet(t, "/postback/stats", &st)
	assertNoSecrets(t, "stats", raw)
	ok, failing := destStats(st, "3101"), destStats(st, "3102")
	if !ok.Configured || ok.Health != report.HealthOK || ok.Pending != 0 || ok.Failed != 0 ||
		ok.LastHour.Attempts != 3 || ok.LastHour.Successes != 3 || *ok.LastHour.SuccessRate != 1 || *ok.LastDay.SuccessRate != 1 ||
		ok.LastSuccess == nil || ok.LastSuccess.Before(start.Add(-time.Second)) || ok.LastError != nil {
		t.Errorf("3101 stats: %+v", ok)
	}
	if failing.Health != report.HealthFailing || failing.Failed != 3 || failing.Delivered != 0 || failing.Pending != 0 ||
		failing.LastHour.Attempts != 6 || failing.LastHour.Successes != 0 || *failing.LastHour.SuccessRate != 0 ||
		failing.LastHour.Failed != 3 || failing.LastSuccess != nil || failing.LastError == nil ||
		!strings.HasPrefix(failing.LastError.Message, "HTTP 500") && !strings.Contains(failing.LastError.Message, "exhausted") {
		t.Errorf("3102 stats: %+v (last error %+v)", failing, failing.LastError)
	}
	if st.Totals.Delivered != 3 || st.Totals.Failed != 3 || st.Totals.LastHour.Attempts != 9 || st.Totals.Health != report.HealthFailing {
		t.Errorf("totals: %+v", st.Totals)
	}
	for _, key := range []string{`"oldest_pending_age_seconds"`, `"success_rate"`, `"last_hour"`, `"last_day"`, `"health_reason"`, `"generated_at"`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("stats JSON lacks %s", key)
		}
	}

	// Listing: newest first, filtered, paged by cursor.
	var page1, page2 report.DeliveryList
	raw = adminGet(t, "/postback/deliveries?din=3102&state=failed&limit=2", &page1)
	assertNoSecrets(t, "listing", raw)
	if page1.Count != 2 || page1.NextCursor == nil {
		t.Fatalf("page 1: %s", raw)
	}
	adminGet(t, "/postback/deliveries?din=3102&state=failed&limit=2&cursor="+url.QueryEscape(*page1.NextCursor), &page2)
	if page2.Count != 1 || page2.NextCursor != nil {
		t.Fatalf("page 2: %+v", page2)
	}
	all := append(page1.Deliveries, page2.Deliveries...)
	for i, d := range all {
		if d.DIN != "3102" || d.State != storage.StateFailed || d.Attempts != 2 || d.LastStatus != 500 ||
			!strings.HasPrefix(d.LastError, "HTTP 500") || !d.Retryable || !d.HasPayload || d.NextAttempt != nil || d.Size == 0 {
			t.Errorf("failed delivery %d: %+v", i, d)
		}
		if i > 0 && !all[i-1].Created.After(d.Created) {
			t.Errorf("not newest first: %s then %s", all[i-1].Created, d.Created)
		}
	}
	var delivered report.DeliveryList
	adminGet(t, "/postback/deliveries?din=3101", &delivered)
	if delivered.Count != 3 || delivered.Deliveries[0].State != storage.StateDelivered || delivered.Deliveries[0].LastStatus != 200 ||
		delivered.Deliveries[0].HasPayload || delivered.Deliveries[0].Retryable {
		t.Errorf("3101 listing: %+v", delivered)
	}
	var none report.DeliveryList
	adminGet(t, "/postback/deliveries?since="+url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), &none)
	if none.Count != 0 {
		t.Errorf("since in the future listed %d", none.Count)
	}
	var both report.DeliveryList
	adminGet(t, "/postback/deliveries?since=1h&until="+url.QueryEscape(time.Now().Add(time.Minute).UTC().Format(time.RFC3339)), &both)
	if both.Count != 6 {
		t.Errorf("the last hour listed %d, want 6", both.Count)
	}

	// Detail: the attempt history.
	id := all[0].ID
	var det report.DeliveryDetail
	raw = adminGet(t, "/postback/deliveries/"+id, &det)
	assertNoSecrets(t, "detail", raw)
	if det.ID != id || len(det.History) != 2 || det.History[0].Status != 500 || det.History[1].Status != 500 ||
		det.History[0].At.Before(start.Add(-time.Second)) || det.History[1].At.Before(det.History[0].At) || det.History[0].DurationMS <= 0 {
		t.Errorf("detail: %s", raw)
	}

	// Retry once the destination is back: 202, pending, then delivered.
	bad.setStatus(http.StatusOK)
	code, body := adminDo(t, http.MethodPost, "/postback/deliveries/"+id+"/retry")
	var v report.DeliveryView
	if code != http.StatusAccepted || json.Unmarshal(body, &v) != nil || v.State != storage.StatePending || v.ID != id {
		t.Fatalf("retry: %d %s", code, body)
	}
	testutil.WaitFor(t, "the retried delivery", 10*time.Second, func() bool {
		var d report.DeliveryDetail
		adminGet(t, "/postback/deliveries/"+id, &d)
		return d.State == storage.StateDelivered
	})
	adminGet(t, "/postback/deliveries/"+id, &det)
	if len(det.History) != 3 || det.History[2].Status != 200 || !det.History[2].OK || det.HasPayload {
		t.Errorf("after retry: %+v", det)
	}
	if r := bad.requests(); r[len(r)-1].Header.Get("X-Postback-Id") != id || r[len(r)-1].Header.Get("X-Postback-Attempt") != "3" {
		t.Errorf("retried attempt headers: %v", r[len(r)-1].Header)
	}
	failing = destStats(adminStats(t), "3102")
	if failing.Delivered != 1 || failing.Failed != 2 || failing.LastSuccess == nil || failing.LastHour.Successes != 1 || failing.Health != report.HealthFailing {
		t.Errorf("3102 after retry: %+v", failing)
	}

	// Refusals.
	for _, tc := range []struct {
		method, path string
		status       int
		contains     string
	}{
		{"POST", "/postback/deliveries/" + id + "/retry", 409, "was delivered"},
		{"POST", "/postback/deliveries/" + delivered.Deliveries[0].ID + "/retry", 409, "nothing to retry"},
		{"GET", "/postback/deliveries/0123456789abcdef0123456789abcdef", 404, "no such delivery"},
		{"POST", "/postback/deliveries/0123456789abcdef0123456789abcdef/retry", 404, "no such delivery"},
		{"GET", "/postback/deliveries/not-an-id", 400, "id"},
		{"GET", "/postback/deliveries?state=lost", 400, "state"},
		{"GET", "/postback/deliveries?limit=5000", 400, "limit"},
		{"GET", "/postback/deliveries?since=noon", 400, "since"},
		{"GET", "/postback/deliveries?cursor=AAAA", 400, "cursor"},
		{"GET", "/postback/deliveries?din=" + url.QueryEscape("<x>"), 400, "din"},
		{"GET", "/postback/deliveries/" + id + "/retry", 405, "POST"},
		{"DELETE", "/postback/stats", 405, "GET"},
	} {
		code, body := adminDo(t, tc.method, tc.path)
		var e struct {
			Error string `json:"error"`
		}
		if code != tc.status || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, tc.contains) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, code, body, tc.status, tc.contains)
		}
	}
}

// TestAdminAPIWithoutPostbackApp: a config without the app is a clear 503.
func TestAdminAPIWithoutPostbackApp(t *testing.T) {
	newTester(t, "", `
http://127.0.0.1:{port0} {
	respond "no postback here"
}`)
	code, body := adminDo(t, http.MethodGet, "/postback/stats")
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "not configured") {
		t.Errorf("stats without the app: %d %s", code, body)
	}
}
