package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
	"github.com/postbackedge/caddy-postback/storage"
)

// The report page's user: basic_auth with a cost-4 bcrypt hash of
// reportPass, so that each request does not spend a second hashing.
const (
	reportUser = "ops"
	reportPass = "report-pass"
	reportHash = "$2a$04$ymx4aPXsQAGl82aFGwWTYOXvNq4zvnMpZcG/wZD2SMIyNn5k1EF52"
)

// reportClient keeps the CSRF cookie and does not follow redirects, so that
// a test sees the 303 of a retry.
type reportClient struct {
	t    *testing.T
	c    *http.Client
	auth bool
}

func newReportClient(t *testing.T) *reportClient {
	jar, _ := cookiejar.New(nil)
	return &reportClient{t: t, auth: true, c: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (rc *reportClient) do(method, target string, form url.Values, hdr map[string]string) (*http.Response, string) {
	rc.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		rc.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if rc.auth {
		req.SetBasicAuth(reportUser, reportPass)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := rc.c.Do(req)
	if err != nil {
		rc.t.Fatalf("%s %s: %v", method, target, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

var (
	csrfTokenRE = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
	rowIDRE     = regexp.MustCompile(`<tr data-id="([0-9a-f]+)" data-state="(\w+)" data-din="(\w+)">`)
)

// reportSite mounts the page three ways: under a path with basic_auth, in
// handle_path, and with the prefix option that lets other paths through.
func reportSite(dins, title string, pageSize int) string {
	return fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post %s
		respond "OK"
	}
	route /ops/report* {
		basic_auth {
			%s %s
		}
		postback_report {
			title %q
			page_size %d
		}
	}
	handle_path /stripped/* {
		route {
			basic_auth {
				%s %s
			}
			postback_report
		}
	}
	route /rp* {
		basic_auth {
			%s %s
		}
		postback_report {
			prefix /rp
		}
	}
	respond "next handler"
}`, dins, reportUser, reportHash, title, pageSize, reportUser, reportHash, reportUser, reportHash)
}

func TestReportPageOnCaddy(t *testing.T) {
	good := newTestDestination(t)
	bad := newTestDestination(t)
	bad.setStatus(http.StatusBadGateway)
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 3301 {
			url %s/down
			ca_cert %s
			retry_schedule 0s
		}
		destination 3302 {
			url %s/up
			ca_cert %s
		}`, bad.srv.URL, bad.caFile, good.srv.URL, good.caFile))
	newTester(t, global, reportSite("3301 3302", "Shop <postbacks>", 3))
	for i := 0; i < 2; i++ {
		sendNotification(t, "/itns.php", fmt.Sprintf("%s&n=%d", cardBody, i))
	}
	testutil.WaitFor(t, "2 failed at 3301, 2 delivered to 3302", 15*time.Second, func() bool {
		st := adminStats(t)
		return destStats(st, "3301").Failed == 2 && destStats(st, "3302").Delivered == 2
	})

	rc := newReportClient(t)
	rc.auth = false
	if resp, _ := rc.do("GET", testURL(0, "/ops/report/"), nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without credentials: %d", resp.StatusCode)
	}
	rc.auth = true
	resp, page := rc.do("GET", testURL(0, "/ops/report/"), nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("report: %d %s", resp.StatusCode, page)
	}
	assertNoSecrets(t, "report page", []byte(page))
	for _, want := range []string{
		"<title>Shop &lt;postbacks&gt;</title>",
		`<article class="card card-failing" data-din="3301" data-health="failing">`,
		`<article class="card card-ok" data-din="3302" data-health="ok">`,
		"2 failed deliveries wait for a retry",
		`<svg class="chart" id="chart"`,
		`<rect class="seg seg-delivered"`,
		`<rect class="seg seg-failed"`,
		`Delivered <strong>2</strong>`,
		`Failed <strong>2</strong>`,
		`href="/ops/report/deliveries/`,
		`rel="next"`, // 4 deliveries, 3 per page
	} {
		if !strings.Contains(page, want) {
			t.Errorf("report page lacks %q", want)
		}
	}
	rows := rowIDRE.FindAllStringSubmatch(page, -1)
	if len(rows) != 3 {
		t.Fatalf("%d rows on the first page, want 3", len(rows))
	}

	// The failed deliveries, filtered.
	_, page = rc.do("GET", testURL(0, "/ops/report/?din=3301&state=failed"), nil, nil)
	rows = rowIDRE.FindAllStringSubmatch(page, -1)
	if len(rows) != 2 || rows[0][2] != "failed" || rows[1][3] != "3301" {
		t.Fatalf("filtered rows: %v", rows)
	}
	id := rows[0][1]

	// Detail with the attempt history and the retry form.
	detailURL := testURL(0, "/ops/report/deliveries/"+id)
	resp, page = rc.do("GET", detailURL, nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `data-state="failed"`) || !strings.Contains(page, "HTTP 502") ||
		!strings.Contains(page, "Bad Gateway") || !strings.Contains(page, `id="retry-form"`) {
		t.Fatalf("detail: %d %s", resp.StatusCode, page)
	}
	assertNoSecrets(t, "detail page", []byte(page))
	m := csrfTokenRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token in the detail page")
	}
	token := m[1]
	retryURL := detailURL + "/retry"
	origin := map[string]string{"Origin": "http://" + strings.TrimPrefix(testURL(0, ""), "http://")}

	// Forged posts are refused and change nothing.
	for name, tc := range map[string]struct {
		form url.Values
		hdr  map[string]string
	}{
		"no token":       {url.Values{}, origin},
		"wrong token":    {url.Values{"csrf_token": {"1." + strings.Repeat("A", 43)}}, origin},
		"foreign origin": {url.Values{"csrf_token": {token}}, map[string]string{"Origin": "https://evil.example"}},
		"cross-site":     {url.Values{"csrf_token": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
	} {
		if resp, _ := rc.do("POST", retryURL, tc.form, tc.hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, resp.StatusCode)
		}
	}
	var det report.DeliveryDetail
	adminGet(t, "/postback/deliveries/"+id, &det)
	if det.State != storage.StateFailed {
		t.Fatalf("a refused post changed the delivery: %s", det.State)
	}

	// The real one: 303 to the detail, then delivered.
	bad.setStatus(http.StatusOK)
	resp, _ = rc.do("POST", retryURL, url.Values{"csrf_token": {token}}, origin)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ops/report/deliveries/"+id+"?retried=1" {
		t.Fatalf("retry: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, page = rc.do("GET", testURL(0, resp.Header.Get("Location")), nil, nil)
	if !strings.Contains(page, "Delivery queued for a new attempt.") {
		t.Error("no confirmation after the retry")
	}
	testutil.WaitFor(t, "the delivery retried from the page", 10*time.Second, func() bool {
		adminGet(t, "/postback/deliveries/"+id, &det)
		return det.State == storage.StateDelivered
	})
	// Retrying it again is a 409 shown in the page.
	resp, page = rc.do("POST", retryURL, url.Values{"csrf_token": {token}}, origin)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(page, "was delivered") {
		t.Errorf("second retry: %d", resp.StatusCode)
	}
	for target, want := range map[string]int{
		"/ops/report/deliveries/0123456789abcdef0123456789abcdef": 404,
		"/ops/report/deliveries/NOPE":                             400,
		"/ops/report/?limit=0":                                    400,
	} {
		if resp, _ := rc.do("GET", testURL(0, target), nil, nil); resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", target, resp.StatusCode, want)
		}
	}

	// Mounted in handle_path: links keep the stripped prefix.
	resp, page = rc.do("GET", testURL(0, "/stripped/"), nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `href="/stripped/deliveries/`) || !strings.Contains(page, "<title>Postback deliveries</title>") {
		t.Errorf("handle_path mount: %d", resp.StatusCode)
	}
	if resp, page = rc.do("GET", testURL(0, "/stripped/deliveries/"+id), nil, nil); resp.StatusCode != 200 || !strings.Contains(page, `action="/stripped/deliveries/`) && !strings.Contains(page, `href="/stripped/?din=3301`) {
		t.Errorf("handle_path detail: %d", resp.StatusCode)
	}
	// With prefix: the root redirects to its slash form, other paths go on.
	if resp, _ := rc.do("GET", testURL(0, "/rp"), nil, nil); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/rp/" {
		t.Errorf("/rp: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, page := rc.do("GET", testURL(0, "/rpx"), nil, nil); resp.StatusCode != 200 || page != "next handler" {
		t.Errorf("/rpx: %d %q", resp.StatusCode, page)
	}
	if resp, page := rc.do("GET", testURL(0, "/rp/deliveries/"+id), nil, nil); resp.StatusCode != 200 || !strings.Contains(page, `href="/rp/?din=3301#deliveries"`) {
		t.Errorf("/rp detail: %d", resp.StatusCode)
	}
}

// runChromium runs headless Chromium once with a fresh profile.
func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	profile, err := os.MkdirTemp("", "postback-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(profile)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir=" + profile}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

// seedHistory writes a day of deliveries into a store folder, with the
// store's clock moved back in time, so that the page has history to show.
func seedHistory(t *testing.T, dir string, now time.Time) {
	t.Helper()
	var mu sync.Mutex
	clock := now
	at := func(tm time.Time) { mu.Lock(); clock = tm; mu.Unlock() }
	s, err := storage.Open(storage.Options{Dir: dir, Clock: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	enqueue := func(din string, created time.Time) storage.Delivery {
		at(created)
		recs, err := s.Enqueue(ctx, []storage.NewDelivery{{DIN: din, ContentType: "application/x-www-form-urlencoded", Payload: []byte(cardBody)}})
		if err != nil {
			t.Fatal(err)
		}
		return recs[0]
	}
	complete := func(d storage.Delivery, when time.Time, status int, errText string, out storage.Outcome) {
		at(when)
		a := storage.Attempt{At: when, Status: status, Error: errText, Duration: time.Duration(40+when.Second()*3) * time.Millisecond}
		if _, err := s.Complete(d.ID, a, out); err != nil {
			t.Fatal(err)
		}
	}
	// The store's ids follow its clock and never go back, so the story is
	// told in creation order.
	type step struct {
		created time.Time
		run     func(created time.Time)
	}
	var steps []step
	plan := func(created time.Time, run func(created time.Time)) {
		if !created.After(now) {
			steps = append(steps, step{created, run})
		}
	}
	hour := now.Truncate(time.Hour)
	for h := 23; h >= 0; h-- {
		base := hour.Add(-time.Duration(h) * time.Hour)
		n := 3 + (h*5)%6
		for i := 0; i < n; i++ {
			created := base.Add(time.Duration(i*53+7) * time.Second)
			plan(created, func(c time.Time) {
				d := enqueue("1001", c)
				complete(d, c.Add(300*time.Millisecond), 200, "", storage.Outcome{State: storage.StateDelivered})
			})
			if i%2 == 0 {
				retried := i%4 == 0
				plan(created.Add(time.Second), func(c time.Time) {
					d := enqueue("1002", c)
					if retried {
						complete(d, c.Add(time.Second), 503, "HTTP 503 Service Unavailable", storage.Outcome{State: storage.StatePending, NextAttempt: c.Add(11 * time.Second)})
					}
					complete(d, c.Add(12*time.Second), 200, "", storage.Outcome{State: storage.StateDelivered})
				})
			}
			if i == 0 {
				down := h <= 3
				plan(created.Add(2*time.Second), func(c time.Time) {
					d := enqueue("1003", c)
					if !down {
						complete(d, c.Add(time.Second), 200, "", storage.Outcome{State: storage.StateDelivered})
						return
					}
					complete(d, c.Add(time.Second), 0, "dial tcp 198.51.100.7:443: connect: connection refused", storage.Outcome{State: storage.StatePending, NextAttempt: c.Add(time.Minute)})
					complete(d, c.Add(time.Minute), 0, "timeout after 15s", storage.Outcome{State: storage.StateFailed, Error: "retry schedule exhausted after 2 attempts"})
				})
			}
		}
		if h == 9 {
			plan(base.Add(20*time.Minute), func(c time.Time) {
				d := enqueue("1002", c)
				complete(d, c.Add(time.Minute), 500, "HTTP 500 Internal Server Error",
					storage.Outcome{State: storage.StateSpooled, SpoolFile: "/srv/saft/1002/1002-" + d.ID + ".asc"})
			})
		}
	}
	// Two waiting for 1003, which is down.
	for _, ago := range []time.Duration{25 * time.Minute, 15 * time.Minute} {
		plan(now.Add(-ago), func(c time.Time) {
			d := enqueue("1003", c)
			complete(d, c.Add(time.Minute), 0, "dial tcp 198.51.100.7:443: connect: connection refused",
				storage.Outcome{State: storage.StatePending, NextAttempt: now.Add(time.Hour)})
		})
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i].created.Before(steps[j].created) })
	for _, st := range steps {
		st.run(st.created)
	}
	at(now)
}

// TestReportPageInBrowser loads the page from a running Caddy in headless
// Chromium, checks the rendered DOM for the cards, the chart and the table,
// and takes the screenshot used in the README (docs/report.png, rewritten
// when POSTBACK_UPDATE_SCREENSHOT=1).
func TestReportPageInBrowser(t *testing.T) {
	bin := testutil.NeedTool(t, "chromium", os.Getenv("CHROMIUM"), "/usr/bin/chromium", "chromium-browser")
	good := newTestDestination(t)
	store := testDir(t, "store")
	seedHistory(t, store, time.Now())
	global := postbackGlobal(store, fmt.Sprintf(`
		destination 1001 {
			url %s/a
			ca_cert %s
		}
		destination 1002 {
			url %s/b
			ca_cert %s
		}
		destination 1003 {
			url https://%s/down
			retry_schedule 0s 1h 5h
		}`, good.srv.URL, good.caFile, good.srv.URL, good.caFile, testutil.DeadAddr(t)))
	newTester(t, global, reportSite("1001 1002 1003", "Shop postbacks", 8))

	// Chromium sends credentials from the URL on a top-level navigation.
	pageURL := strings.Replace(testURL(0, "/ops/report/"), "http://", "http://"+reportUser+":"+reportPass+"@", 1)
	dom := string(runChromium(t, bin, "--dump-dom", pageURL))
	for _, want := range []string{
		`data-din="1001" data-health="ok"`,
		`data-din="1002" data-health="degraded"`,
		`data-din="1003" data-health="failing"`,
		`<svg class="chart" id="chart"`,
		`<table class="deliveries" id="deliveries-table">`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	if n := strings.Count(dom, `<g class="bar"`); n != 24 {
		t.Errorf("%d chart bars in the DOM, want 24", n)
	}
	if n := strings.Count(dom, `<rect class="seg seg-`); n < 24 {
		t.Errorf("%d chart segments in the DOM, want one per hour at least", n)
	}
	if rows := rowIDRE.FindAllStringSubmatch(dom, -1); len(rows) != 8 {
		t.Errorf("%d table rows in the DOM, want the page size 8", len(rows))
	}
	assertNoSecrets(t, "rendered DOM", []byte(dom))

	shot := filepath.Join(t.TempDir(), "report.png")
	runChromium(t, bin, "--screenshot="+shot, "--window-size=1280,1480", pageURL)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 1480 {
		t.Errorf("screenshot is %v", b)
	}
	if os.Getenv("POSTBACK_UPDATE_SCREENSHOT") == "1" {
		data, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "docs", "report.png"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
