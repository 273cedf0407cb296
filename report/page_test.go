package report

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// pageServer mounts a Page at /ops/report/ the way the Caddy handler does.
func pageServer(t *testing.T, src *fakeSource, now time.Time) (*httptest.Server, *http.Client) {
	t.Helper()
	c, err := NewCSRF(NewCSRFKey())
	if err != nil {
		t.Fatal(err)
	}
	p := &Page{Source: func() (Source, error) { return src, nil }, CSRF: c, Now: func() time.Time { return now }, PageSize: 10}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/ops/report")
		if !ok {
			http.NotFound(w, r)
			return
		}
		user, _, _ := r.BasicAuth()
		rel := RelPath(rest)
		if err := p.Serve(w, r, Mount{Base: strings.TrimSuffix(r.URL.Path, rel), Rel: rel, User: user}); err != nil {
			t.Errorf("serve %s: %v", r.URL, err)
		}
	}))
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return srv, client
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var tokenRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

func TestReportPageIndex(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := demoSource(now)
	srv, c := pageServer(t, src, now)
	resp, body := get(t, c, srv.URL+"/ops/report/")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for _, want := range []string{
		`<article class="card card-ok" data-din="1001" data-health="ok">`,
		`<article class="card card-degraded" data-din="1002"`,
		`<article class="card card-failing" data-din="1003"`,
		`6 failed deliveries wait for a retry`,
		`<svg class="chart" id="chart"`,
		`<rect class="seg seg-delivered"`,
		`<table class="deliveries" id="deliveries-table">`,
		`href="/ops/report/deliveries/`,
		`href="/ops/report/?din=1003#deliveries"`,
		`action="/ops/report/deliveries/`,
		`rel="next"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("index lacks %q", want)
		}
	}
	if n := strings.Count(body, "<g class=\"bar\""); n != 24 {
		t.Errorf("%d chart bars, want 24", n)
	}
	if n := strings.Count(body, "<tr data-id="); n != 10 {
		t.Errorf("%d table rows, want the page size 10", n)
	}
	// Security headers, and the style sheet carries the CSP nonce.
	csp := resp.Header.Get("Content-Security-Policy")
	m := regexp.MustCompile(`style-src 'nonce-([^']+)'`).FindStringSubmatch(csp)
	if m == nil || !strings.Contains(body, `<style nonce="`+m[1]+`">`) || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q does not match the style nonce", csp)
	}
	if strings.Contains(body, "<script") || strings.Contains(body, ` style="`) {
		t.Error("the page must need neither scripts nor inline style attributes (CSP)")
	}
	for h, want := range map[string]string{"Cache-Control": "no-store", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "same-origin", "Content-Type": "text/html; charset=utf-8"} {
		if resp.Header.Get(h) != want {
			t.Errorf("%s = %q, want %q", h, resp.Header.Get(h), want)
		}
	}
	if ck := resp.Cookies(); len(ck) != 1 || ck[0].Name != CSRFCookie || ck[0].Path != "/ops/report/" {
		t.Errorf("cookies %+v", ck)
	}

	// Paging: the Older link leads to the next 10, with a link back to the newest.
	older := regexp.MustCompile(`href="([^"]+)" rel="next"`).FindStringSubmatch(body)[1]
	older = strings.ReplaceAll(older, "&amp;", "&")
	resp, body2 := get(t, c, srv.URL+older)
	if resp.StatusCode != 200 || !strings.Contains(body2, "« Newest") || strings.Count(body2, "<tr data-id=") != 10 {
		t.Errorf("second page: %d", resp.StatusCode)
	}
	firstIDs := regexp.MustCompile(`<tr data-id="([0-9a-f]+)"`).FindAllStringSubmatch(body, -1)
	secondIDs := regexp.MustCompile(`<tr data-id="([0-9a-f]+)"`).FindAllStringSubmatch(body2, -1)
	if firstIDs[9][1] <= secondIDs[0][1] {
		t.Errorf("second page does not continue after the first: %s then %s", firstIDs[9][1], secondIDs[0][1])
	}

	// Filters: state and DIN, reflected in the form; the chart follows the DIN.
	_, body = get(t, c, srv.URL+"/ops/report/?din=1003&state=failed")
	if n := strings.Count(body, `data-state="failed" data-din="1003"`); n != 6 || strings.Count(body, "<tr data-id=") != 6 {
		t.Errorf("filtered rows: %d", n)
	}
	if !strings.Contains(body, `<option value="1003" selected>`) || !strings.Contains(body, `<option value="failed" selected>`) ||
		!strings.Contains(body, "Deliveries per hour, last 24 h · DIN 1003") || !strings.Contains(body, "Clear filters") {
		t.Error("filter state not reflected")
	}
	_, body = get(t, c, srv.URL+"/ops/report/?since=30m")
	if !strings.Contains(body, `name="since" value="2025-11-21T14:07"`) {
		t.Error("relative since not shown as the time it means")
	}
	_, body = get(t, c, srv.URL+"/ops/report/?limit=5")
	if !strings.Contains(body, `<input type="hidden" name="limit" value="5">`) || strings.Count(body, "<tr data-id=") != 5 {
		t.Error("a custom limit is not kept through the filter form")
	}
	resp, body = get(t, c, srv.URL+"/ops/report/?state=lost")
	if resp.StatusCode != 400 || !strings.Contains(body, `class="flash flash-error"`) || !strings.Contains(body, "Filter not applied") {
		t.Errorf("bad filter: %d", resp.StatusCode)
	}
	resp, body = get(t, c, srv.URL+"/ops/report/?cursor=zz")
	if resp.StatusCode != 400 || !strings.Contains(body, "cursor") {
		t.Errorf("bad cursor: %d", resp.StatusCode)
	}
}

func TestReportPageEscapes(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := newFakeSource("1001")
	evil := `<script>alert(1)</script>"><img src=x onerror=alert(2)>`
	src.counters["1001"] = storage.DINStats{Failed: 1, LastError: now, LastErrorText: evil}
	d := src.add(storage.Delivery{DIN: "1001", State: storage.StateFailed, Created: now, HasPayload: true, LastError: evil,
		Attempts: []storage.Attempt{{At: now, Error: evil}}, ContentType: evil, SpoolFile: evil})
	srv, c := pageServer(t, src, now)
	for _, u := range []string{"/ops/report/", "/ops/report/deliveries/" + d.ID, "/ops/report/?din=" + url.QueryEscape(evil),
		"/ops/report/deliveries/" + url.PathEscape(evil)} {
		_, body := get(t, c, srv.URL+u)
		if strings.Contains(body, "<script>") || strings.Contains(body, "<img") {
			t.Errorf("%s: unescaped markup in the page", u)
		}
		if !strings.Contains(body, "&lt;script&gt;") {
			t.Errorf("%s: escaped text missing", u)
		}
	}
}

func TestReportPageDetailAndRetry(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := demoSource(now)
	var failed, delivered string
	for id, d := range src.recs {
		switch d.State {
		case storage.StateFailed:
			failed = id
		case storage.StateDelivered:
			delivered = id
		}
	}
	srv, c := pageServer(t, src, now)
	resp, body := get(t, c, srv.URL+"/ops/report/deliveries/"+failed)
	if resp.StatusCode != 200 {
		t.Fatalf("detail: %d", resp.StatusCode)
	}
	for _, want := range []string{`id="detail" data-id="` + failed + `" data-state="failed"`, `id="attempts"`, `id="retry-form"`,
		"timeout after 15s", "retry schedule exhausted after 3 attempts", "HTTP 502", "Bad Gateway", "87 ms", "never shown here"} {
		if !strings.Contains(body, want) {
			t.Errorf("detail lacks %q", want)
		}
	}
	if n := strings.Count(body, `<tr class="bad">`); n != 3 {
		t.Errorf("%d failed attempts shown, want 3", n)
	}
	token := tokenRE.FindStringSubmatch(body)[1]
	retryURL := srv.URL + "/ops/report/deliveries/" + failed + "/retry"
	postForm := func(u string, vals url.Values, hdr map[string]string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", u, strings.NewReader(vals.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	// Refused: no token, and a cross-site post with a valid token.
	if resp, _ := postForm(retryURL, nil, nil); resp.StatusCode != 403 {
		t.Errorf("post without token: %d", resp.StatusCode)
	}
	if resp, _ := postForm(retryURL, url.Values{CSRFField: {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}); resp.StatusCode != 403 {
		t.Errorf("cross-site post: %d", resp.StatusCode)
	}
	if len(src.retried) != 0 {
		t.Fatal("a refused post retried")
	}
	resp, _ = postForm(retryURL, url.Values{CSRFField: {token}}, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": srv.URL})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ops/report/deliveries/"+failed+"?retried=1" {
		t.Fatalf("retry: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if len(src.retried) != 1 || src.retried[0] != failed {
		t.Errorf("retried %v", src.retried)
	}
	_, body = get(t, c, srv.URL+resp.Header.Get("Location"))
	if !strings.Contains(body, "Delivery queued for a new attempt.") || !strings.Contains(body, `data-state="pending"`) || strings.Contains(body, `id="retry-form"`) {
		t.Error("after retry: no confirmation, not pending, or still offering a retry")
	}
	// Again: now pending, so 409 with the reason, rendered in the page.
	resp, body = postForm(retryURL, url.Values{CSRFField: {token}}, nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "already pending") {
		t.Errorf("second retry: %d", resp.StatusCode)
	}
	resp, body = postForm(srv.URL+"/ops/report/deliveries/"+delivered+"/retry", url.Values{CSRFField: {token}}, nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(body, "was delivered") {
		t.Errorf("retry of a delivered one: %d", resp.StatusCode)
	}

	for u, want := range map[string]int{
		"/ops/report/deliveries/0123456789abcdef0123456789abcdef": 404,
		"/ops/report/deliveries/XYZ":                              400,
	} {
		if resp, _ := get(t, c, srv.URL+u); resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", u, resp.StatusCode, want)
		}
	}
	if resp, _ := get(t, c, retryURL); resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET retry: %d allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if resp, _ := postForm(srv.URL+"/ops/report/", nil, nil); resp.StatusCode != 405 {
		t.Errorf("POST index: %d", resp.StatusCode)
	}
	resp, err := c.Head(srv.URL + "/ops/report/")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("HEAD: %v %v", resp, err)
	}

	// Store trouble renders an error page with the status, not a blank 500.
	src.err = errBroken
	resp, body = get(t, c, srv.URL+"/ops/report/")
	if resp.StatusCode != 500 || !strings.Contains(body, "disk on fire") || !strings.Contains(body, `id="error"`) {
		t.Errorf("broken store: %d", resp.StatusCode)
	}
}

func TestReportRelPathAndBase(t *testing.T) {
	for p, want := range map[string]string{
		"/": "/", "": "/", "/r/": "/", "/r": "/", "/r/deliveries/ab": "/deliveries/ab", "/r/deliveries/ab/retry": "/deliveries/ab/retry",
		"/r/deliveries/": "/", "/r/deliveries/ab/other": "/", "/r/notifications": "/notifications", "/r/notifications/x": "/", "/r/deliveries/retry": "/deliveries/retry", "/deliveries/ab": "/deliveries/ab", "/x/deliveries/ab/deliveries/cd": "/deliveries/cd",
	} {
		if got := RelPath(p); got != want {
			t.Errorf("RelPath(%q) = %q, want %q", p, got, want)
		}
	}
	src := newFakeSource()
	p := &Page{Source: func() (Source, error) { return src, nil }}
	for base, want := range map[string]string{"//evil.example": `href="/evil.example/"`, `/\evil.example`: `href="/evil.example/"`, "/ok/": `href="/ok/"`} {
		rec := httptest.NewRecorder()
		if err := p.Serve(rec, httptest.NewRequest("GET", "/", nil), Mount{Base: base, Rel: "/"}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("base %q: page lacks %s", base, want)
		}
	}
}

// A filter that matches nothing among the records the store searched in one
// page says so and links on, instead of saying that nothing matches.
func TestReportPageRareFilterSearchesOn(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := newFakeSource("1", "2")
	rare := []storage.Delivery{
		src.add(storage.Delivery{DIN: "2", State: storage.StateDelivered, Created: now.Add(-2 * time.Hour)}),
		src.add(storage.Delivery{DIN: "2", State: storage.StateDelivered, Created: now.Add(-time.Hour - time.Minute)}),
	}
	for i := range 25 {
		src.add(storage.Delivery{DIN: "1", State: storage.StateDelivered, Created: now.Add(-time.Duration(i+1) * time.Minute)})
	}
	src.budget = 10
	srv, c := pageServer(t, src, now)

	link := regexp.MustCompile(`None among the newest records searched\. <a href="([^"]+)">Search older ones »</a>`)
	_, body := get(t, c, srv.URL+"/ops/report/?din=2")
	if strings.Contains(body, "No deliveries match") {
		t.Fatalf("first page says nothing matches although the search stopped early:\n%s", body)
	}
	found := map[string]bool{}
	for pages := 1; ; pages++ {
		for _, d := range rare {
			if strings.Contains(body, d.ID[:12]) {
				found[d.ID] = true
			}
		}
		if len(found) == len(rare) {
			break
		}
		m := link.FindStringSubmatch(body)
		if m == nil || pages > 5 {
			t.Fatalf("page %d: no rows of DIN 2 and no link to search on (found %d):\n%s", pages, len(found), body)
		}
		_, body = get(t, c, srv.URL+strings.ReplaceAll(m[1], "&amp;", "&"))
	}
}

// A fleet's history shows each delivery's node, filters by it and keeps
// the filter through the pager; a single edge's page shows neither.
func TestReportPageNodeColumnAndFilter(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := newFakeSource("1001")
	for i := range 24 {
		node := "edge-a"
		if i%2 == 1 {
			node = "edge-b"
		}
		src.add(storage.Delivery{DIN: "1001", State: storage.StateFailed, Node: node, Created: now.Add(-time.Duration(i+1) * time.Minute)})
	}
	srv, c := pageServer(t, src, now)
	_, body := get(t, c, srv.URL+"/ops/report/?node=edge-b&state=failed")
	if n := strings.Count(body, `<td class="node">`); n != 10 || strings.Contains(body, ">edge-a<") {
		t.Errorf("node=edge-b: %d node cells, want a page of 10, all edge-b", n)
	}
	if !regexp.MustCompile(`href="[^"]*cursor=[^"]*node=edge-b[^"]*" rel="next"`).MatchString(body) {
		t.Errorf("the next page's link lost the node filter: %s", regexp.MustCompile(`<nav class="pager".*`).FindString(body))
	}
	if !strings.Contains(body, `name="node" value="edge-b"`) || !strings.Contains(body, "<th>Node</th>") {
		t.Errorf("the node filter or column is missing")
	}
	// The bulk retry acts on this edge's queue: no node in its form.
	if i := strings.Index(body, `action="/ops/report/deliveries/retry`); i < 0 || strings.Contains(body[i:i+300], "edge-b") {
		t.Errorf("the retry-all form: %q", body[max(i, 0):max(i, 0)+300])
	}

	one := newFakeSource("1001")
	d := one.add(storage.Delivery{DIN: "1001", State: storage.StateDelivered, Created: now.Add(-time.Minute)})
	srv1, c1 := pageServer(t, one, now)
	if _, body := get(t, c1, srv1.URL+"/ops/report/"); strings.Contains(body, "<th>Node</th>") || strings.Contains(body, `name="node"`) {
		t.Errorf("a single edge's page shows the node column or filter")
	}
	if _, body := get(t, c1, srv1.URL+"/ops/report/deliveries/"+d.ID); strings.Contains(body, "<dt>Node</dt>") {
		t.Errorf("a single edge's delivery shows a node")
	}
}
