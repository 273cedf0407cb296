package report

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// bulkSource holds, for 1001, five failed, one spooled with its payload,
// one spooled without, a pending and a delivered one; for 1002 two failed;
// and one failed of 1001 from two days ago.
func bulkSource(now time.Time) *fakeSource {
	src := newFakeSource("1001", "1002")
	at := now.Add(-time.Hour)
	add := func(din string, st storage.State, payload bool, created time.Time) {
		src.add(storage.Delivery{DIN: din, State: st, HasPayload: payload, Created: created})
	}
	for range 5 {
		add("1001", storage.StateFailed, true, at)
	}
	add("1001", storage.StateSpooled, true, at)
	add("1001", storage.StateSpooled, false, at)
	add("1001", storage.StatePending, true, at)
	add("1001", storage.StateDelivered, false, at)
	add("1002", storage.StateFailed, true, at)
	add("1002", storage.StateFailed, true, at)
	add("1001", storage.StateFailed, true, now.Add(-48*time.Hour))
	return src
}

func TestBulkRetryAPI(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := bulkSource(now)
	a := &API{Source: func() (Source, error) { return src, nil }, Now: func() time.Time { return now }}
	retried := func(target string) int {
		t.Helper()
		code, _, body := apiCall(t, a, "POST", target)
		var out BulkRetry
		if code != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("POST %s: %d %s", target, code, body)
		}
		return out.Retried
	}
	if n := retried("/postback/deliveries/retry?din=1001&state=failed&since=24h"); n != 5 {
		t.Errorf("1001 failed since 24h: %d retried, want 5", n)
	}
	if n := retried("/postback/deliveries/retry?din=1001&state=failed&since=24h"); n != 0 {
		t.Errorf("repeated: %d retried, want 0", n)
	}
	// No state: failed and spooled with a payload; the one spooled without
	// is not retryable, the old one is before since.
	if n := retried("/postback/deliveries/retry?din=1001&since=24h"); n != 1 {
		t.Errorf("1001 any state since 24h: %d retried, want 1 (the spooled one with its payload)", n)
	}
	if n := retried("/postback/deliveries/retry?din=1001"); n != 1 {
		t.Errorf("1001 without since: %d retried, want the old one", n)
	}
	if src.recs[firstOf(src, "1002")].State != storage.StateFailed {
		t.Error("1002 was touched by a bulk retry of 1001")
	}
	if n := retried("/postback/deliveries/retry"); n != 2 {
		t.Errorf("everything: %d retried, want 1002's two", n)
	}
	for target, want := range map[string]int{
		"/postback/deliveries/retry?state=pending":  400,
		"/postback/deliveries/retry?limit=5":        400,
		"/postback/deliveries/retry?cursor=c1":      400,
		"/postback/deliveries/retry?din=bad%20din":  400,
		"/postback/deliveries/retry?since=tomorrow": 400,
	} {
		if code, _, body := apiCall(t, a, "POST", target); code != want {
			t.Errorf("POST %s: %d %s, want %d", target, code, body, want)
		}
	}
	if code, hdr, _ := apiCall(t, a, "GET", "/postback/deliveries/retry"); code != 405 || hdr.Get("Allow") != "POST" {
		t.Errorf("GET bulk retry: %d, Allow %q", code, hdr.Get("Allow"))
	}
}

func firstOf(src *fakeSource, din string) string {
	for id, d := range src.recs {
		if d.DIN == din {
			return id
		}
	}
	return ""
}

// The list filtered by a retryable state offers "retry all matching",
// behind the same CSRF defences as one retry; its result is the list again
// with how many were put back.
func TestBulkRetryPage(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := bulkSource(now)
	srv, c := pageServer(t, src, now)
	if _, body := get(t, c, srv.URL+"/ops/report/?din=1001"); strings.Contains(body, `id="retry-all-form"`) {
		t.Error("retry all offered without a failed or spooled filter")
	}
	_, body := get(t, c, srv.URL+"/ops/report/?din=1001&state=failed&since=24h")
	if !strings.Contains(body, `id="retry-all-form"`) || !strings.Contains(body, `name="since" value="2025-11-20T14:37:00Z"`) {
		t.Fatalf("no retry all form with the resolved filter:\n%s", body)
	}
	token := tokenRE.FindStringSubmatch(body)[1]
	post := func(vals url.Values, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+"/ops/report/deliveries/retry", strings.NewReader(vals.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	form := url.Values{"din": {"1001"}, "state": {"failed"}, "since": {"2025-11-20T14:37:00Z"}}
	if resp := post(form, nil); resp.StatusCode != 403 {
		t.Errorf("without token: %d", resp.StatusCode)
	}
	form.Set(CSRFField, token)
	if resp := post(form, map[string]string{"Sec-Fetch-Site": "cross-site"}); resp.StatusCode != 403 {
		t.Errorf("cross-site: %d", resp.StatusCode)
	}
	if len(src.bulk) != 0 {
		t.Fatal("a refused post retried")
	}
	resp := post(form, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": srv.URL})
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "retried=5") || !strings.Contains(loc, "din=1001") || !strings.Contains(loc, "state=failed") {
		t.Fatalf("retry all: %d %s", resp.StatusCode, loc)
	}
	if len(src.bulk) != 1 || src.bulk[0].DIN != "1001" || src.bulk[0].State != storage.StateFailed || !src.bulk[0].Since.Equal(now.Add(-24*time.Hour)) {
		t.Errorf("bulk filter %+v", src.bulk)
	}
	_, body = get(t, c, srv.URL+loc)
	if !strings.Contains(body, "Deliveries put back for a new attempt: 5.") || strings.Contains(body, `data-state="failed"`) {
		t.Error("after retry all: no count, or failed rows still listed")
	}
	form.Set("state", "delivered")
	if resp := post(form, nil); resp.StatusCode != 400 {
		t.Errorf("state delivered: %d", resp.StatusCode)
	}
}
