package caddymodule

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/cdp"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// reportPage is a headless Chromium page that sends the report's basic
// auth, for the tests that drive the report as an operator does.
type reportPage struct {
	t    *testing.T
	ctx  context.Context
	page *cdp.Page
}

// openReportPage starts Chromium (bin) and opens a page; both go when the
// test ends. Every step is bounded by 90 s in all.
func openReportPage(t *testing.T, bin string) *reportPage {
	t.Helper()
	b, err := cdp.Start(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	page, err := b.NewPage(ctx)
	if err != nil {
		t.Fatalf("%v\n%s", err, b.Stderr())
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(reportUser+":"+reportPass))
	if err := page.SetHeaders(ctx, map[string]string{"Authorization": auth}); err != nil {
		t.Fatal(err)
	}
	return &reportPage{t: t, ctx: ctx, page: page}
}

// eval runs expr in the page, its value into out (nil: none).
func (p *reportPage) eval(expr string, out any) {
	p.t.Helper()
	if err := p.page.Eval(p.ctx, expr, out); err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
}

// step runs expr and waits for the page it leads to.
func (p *reportPage) step(what, expr string) {
	p.t.Helper()
	mark := p.page.Mark()
	p.eval(expr, nil)
	if err := p.page.WaitLoaded(p.ctx, mark); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// The report page driven in headless Chromium as an operator uses it:
// the failed deliveries filtered, then a cross-site page that posts a
// bulk retry with the operator's credentials (the browser sends Basic auth
// to any site) is refused and retries nothing, then "Retry all matching"
// clicked on the page itself puts every failed delivery back and they are
// delivered.
func TestReportBulkRetryInBrowser(t *testing.T) {
	bin := testutil.NeedTool(t, "chromium", os.Getenv("CHROMIUM"), "/usr/bin/chromium", "chromium-browser")
	dest := newTestDestination(t)
	dest.setStatus(http.StatusInternalServerError)
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 1001 {
			url %s/collect
			ca_cert %s
			retry_schedule 0s
			breaker off
		}`, dest.srv.URL, dest.caFile))
	newTester(t, global, reportSite("1001", "Shop postbacks", 50))

	const n = 4
	for i := range n {
		sendNotification(t, "/itns.php", fmt.Sprintf("sale=%d", i))
	}
	testutil.WaitFor(t, "every copy failed", 20*time.Second, func() bool {
		return destStats(adminStats(t), "1001").Failed == n
	})

	// The attacker's page: another origin that posts the bulk retry form
	// once it has loaded.
	reportBase := testURL(0, "/ops/report")
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<form id="f" method="post" action="%s/deliveries/retry">
<input type="hidden" name="state" value="failed"><input type="hidden" name="csrf_token" value="forged">
</form><script>addEventListener("load", () => setTimeout(() => document.getElementById("f").submit(), 0))</script>`, reportBase)
	}))
	defer evil.Close()

	rp := openReportPage(t, bin)
	ctx, page, eval := rp.ctx, rp.page, rp.eval

	// The list filtered to failed deliveries, as the filter form does.
	if err := page.Navigate(ctx, reportBase+"/"); err != nil {
		t.Fatal(err)
	}
	mark := page.Mark()
	eval(`(() => { const f = document.querySelector("form.filters");
		f.querySelector("select[name=state]").value = "failed"; f.requestSubmit(); })()`, nil)
	if err := page.WaitLoaded(ctx, mark); err != nil {
		t.Fatal(err)
	}
	var rows int
	eval(`document.querySelectorAll('#deliveries-table tr[data-state="failed"]').length`, &rows)
	if rows != n {
		t.Fatalf("%d failed rows on the filtered page, want %d", rows, n)
	}
	var href string
	eval(`location.search`, &href)
	if !strings.Contains(href, "state=failed") {
		t.Fatalf("the filter form led to %q", href)
	}

	// The cross-site post, with the credentials: refused, nothing retried.
	dest.setStatus(http.StatusOK)
	mark = page.Mark()
	if err := page.Navigate(ctx, evil.URL); err != nil {
		t.Fatal(err)
	}
	if err := page.WaitLoaded(ctx, mark+1); err != nil { // the evil page, then the post's answer
		t.Fatal(err)
	}
	var text string
	eval(`document.body.innerText`, &text)
	if !strings.Contains(text, "did not come from this page") {
		t.Fatalf("the cross-site post was not refused; the page says:\n%s", text)
	}
	if st := destStats(adminStats(t), "1001"); st.Failed != n || st.Pending != 0 {
		t.Fatalf("after the cross-site post: %+v, want %d still failed", st, n)
	}

	// The operator's own click.
	if err := page.Navigate(ctx, reportBase+"/?state=failed#deliveries"); err != nil {
		t.Fatal(err)
	}
	mark = page.Mark()
	eval(`document.querySelector("#retry-all-form button").click()`, nil)
	if err := page.WaitLoaded(ctx, mark); err != nil {
		t.Fatal(err)
	}
	eval(`document.body.innerText`, &text)
	if !strings.Contains(text, fmt.Sprintf("Deliveries put back for a new attempt: %d.", n)) {
		t.Fatalf("after Retry all matching the page says:\n%s", text)
	}
	testutil.WaitFor(t, "every retried copy delivered", 20*time.Second, func() bool {
		return destStats(adminStats(t), "1001").Delivered == n
	})
}
