package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// apiCall runs one request through API and answers errors the way Caddy's
// admin endpoint does, as {"error": message} with the error's status.
func apiCall(t *testing.T, a *API, method, target string) (int, http.Header, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	err := a.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%s %s: untyped error %v", method, target, err)
		}
		b, _ := json.Marshal(map[string]string{"error": e.Message})
		return e.Status, rec.Header(), b
	}
	return rec.Code, rec.Header(), rec.Body.Bytes()
}

func TestReportAPI(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := demoSource(now)
	a := &API{Source: func() (Source, error) { return src, nil }, Now: func() time.Time { return now }}

	code, hdr, body := apiCall(t, a, "GET", "/postback/stats")
	var st Stats
	if code != 200 || hdr.Get("Content-Type") != "application/json" || json.Unmarshal(body, &st) != nil {
		t.Fatalf("stats: %d %s", code, body)
	}
	if len(st.Destinations) != 3 || st.Totals.Failed != 6 || st.Destinations[2].Health != HealthFailing || st.Totals.LastDay.Attempts == 0 {
		t.Errorf("stats: %s", body)
	}

	// Listing: newest first, paged with the cursor until the end.
	var seen []DeliveryView
	target := "/postback/deliveries?din=1003&limit=3"
	for pages := 0; ; pages++ {
		code, _, body = apiCall(t, a, "GET", target)
		var l DeliveryList
		if code != 200 || json.Unmarshal(body, &l) != nil {
			t.Fatalf("list %s: %d %s", target, code, body)
		}
		if l.Count != len(l.Deliveries) || len(l.Deliveries) > 3 {
			t.Fatalf("page: count %d, %d items", l.Count, len(l.Deliveries))
		}
		seen = append(seen, l.Deliveries...)
		if l.NextCursor == nil {
			if !strings.Contains(string(body), `"next_cursor": null`) {
				t.Errorf("last page must have next_cursor null: %s", body)
			}
			break
		}
		target = "/postback/deliveries?din=1003&limit=3&cursor=" + *l.NextCursor
		if pages > 5 {
			t.Fatal("cursor does not end")
		}
	}
	if len(seen) != 8 {
		t.Errorf("DIN 1003 has 8 deliveries, paging gave %d", len(seen))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Created.After(seen[i-1].Created) || seen[i].DIN != "1003" {
			t.Errorf("not newest first / wrong DIN at %d: %+v", i, seen[i])
		}
	}

	var failedID string
	code, _, body = apiCall(t, a, "GET", "/postback/deliveries?state=failed&limit=1")
	var l DeliveryList
	if code != 200 || json.Unmarshal(body, &l) != nil || len(l.Deliveries) != 1 || l.Deliveries[0].State != storage.StateFailed {
		t.Fatalf("failed filter: %d %s", code, body)
	}
	failedID = l.Deliveries[0].ID

	code, _, body = apiCall(t, a, "GET", "/postback/deliveries/"+failedID)
	var det DeliveryDetail
	if code != 200 || json.Unmarshal(body, &det) != nil || len(det.History) != 3 || det.ID != failedID {
		t.Fatalf("detail: %d %s", code, body)
	}

	code, _, body = apiCall(t, a, "POST", "/postback/deliveries/"+failedID+"/retry")
	var v DeliveryView
	if code != http.StatusAccepted || json.Unmarshal(body, &v) != nil || v.State != storage.StatePending || len(src.retried) != 1 {
		t.Fatalf("retry: %d %s", code, body)
	}
	code, _, body = apiCall(t, a, "POST", "/postback/deliveries/"+failedID+"/retry")
	if code != http.StatusConflict || !strings.Contains(string(body), "already pending") {
		t.Errorf("second retry: %d %s", code, body)
	}
	delivered := seen[len(seen)-1].ID // any delivered one
	for _, d := range src.recs {
		if d.State == storage.StateDelivered {
			delivered = d.ID
		}
	}
	code, _, body = apiCall(t, a, "POST", "/postback/deliveries/"+delivered+"/retry")
	if code != http.StatusConflict || !strings.Contains(string(body), "was delivered") {
		t.Errorf("retry delivered: %d %s", code, body)
	}

	for _, tc := range []struct {
		method, target string
		status         int
		contains       string
	}{
		{"GET", "/postback/deliveries/0123456789abcdef0123456789abcdef", 404, "no such delivery"},
		{"POST", "/postback/deliveries/0123456789abcdef0123456789abcdef/retry", 404, "no such delivery"},
		{"GET", "/postback/deliveries/NOT-AN-ID", 400, "id"},
		{"POST", "/postback/deliveries/zz/retry", 400, "id"},
		{"GET", "/postback/deliveries?state=lost", 400, "state"},
		{"GET", "/postback/deliveries?limit=0", 400, "limit"},
		{"GET", "/postback/deliveries?since=noon", 400, "since"},
		{"GET", "/postback/deliveries?cursor=bogus", 400, "cursor"},
		{"GET", "/postback/deliveries?dn=1001", 400, "unknown parameter"},
		{"GET", "/postback/stats?x=1", 400, "no parameters"},
		{"GET", "/postback/deliveries/" + failedID + "?x=1", 400, "no parameters"},
		{"POST", "/postback/stats", 405, "GET"},
		{"DELETE", "/postback/deliveries/" + failedID, 405, "GET"},
		{"GET", "/postback/deliveries/" + failedID + "/retry", 405, "POST"},
		{"GET", "/postback/nothing", 404, "no route"},
		{"GET", "/postback/deliveries/a/b/c", 404, "no route"},
	} {
		code, hdr, body := apiCall(t, a, tc.method, tc.target)
		if code != tc.status || !strings.Contains(string(body), tc.contains) {
			t.Errorf("%s %s: %d %s, want %d containing %q", tc.method, tc.target, code, body, tc.status, tc.contains)
		}
		if code == 405 && hdr.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tc.method, tc.target)
		}
	}

	// A store error is a 500 with context; no app is a 503.
	src.err = errBroken
	if code, _, body := apiCall(t, a, "GET", "/postback/stats"); code != 500 || !strings.Contains(string(body), "disk on fire") {
		t.Errorf("broken store: %d %s", code, body)
	}
	a.Source = func() (Source, error) { return nil, fmt.Errorf("postback app not started") }
	if code, _, body := apiCall(t, a, "GET", "/postback/deliveries"); code != 503 || !strings.Contains(string(body), "not started") {
		t.Errorf("no app: %d %s", code, body)
	}
}

func TestReportAPINeverShowsPayload(t *testing.T) {
	now := time.Now()
	src := newFakeSource("1")
	d := src.add(storage.Delivery{DIN: "1", State: storage.StateFailed, Created: now, HasPayload: true, Size: 42,
		ContentType: "application/x-www-form-urlencoded", LastError: "HTTP 500"})
	a := &API{Source: func() (Source, error) { return src, nil }}
	for _, target := range []string{"/postback/deliveries", "/postback/deliveries/" + d.ID} {
		_, _, body := apiCall(t, a, "GET", target)
		var m any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(body), `"payload"`) || !strings.Contains(string(body), `"size": 42`) {
			t.Errorf("%s: %s", target, body)
		}
	}
}
