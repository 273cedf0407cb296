package caddymodule

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
	"github.com/postbackedge/caddy-postback/storage"
)

// notelogSite has the three postback handlers on one route, a route whose
// allowlist refuses everyone, and the report page.
func startNotelogSite(t *testing.T, refusedPerHour int) {
	t.Helper()
	t.Setenv("POSTBACK_TEST_ITNS_NEW", itnsNewSecret)
	dest := newTestDestination(t)
	newTester(t, postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		label ctransreceipt ctransaction
		log_refused_per_hour %d
		destination 2601 {
			url %s/collect
			ca_cert %s
		}`, refusedPerHour, dest.srv.URL, dest.caFile)), fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /ipn.php {
		postback_filter {
			allow 127.0.0.1
		}
		itns_verify {
			secret {env.POSTBACK_TEST_ITNS_NEW}
			prefix c
			dedupe 1h
		}
		secondary_post 2601
		respond "SALE OK"
	}
	route /closed.php {
		postback_filter {
			allow 192.0.2.1
			deny_body "NOT ALLOWED IP"
			deny_status 200
		}
		respond "OK"
	}
	route /ops/report* {
		basic_auth {
			%s %s
		}
		postback_report
	}
}`, reportUser, reportHash))
}

// notifications reads GET /postback/notifications with q.
func notifications(t *testing.T, q string) []storage.Notification {
	t.Helper()
	var l report.NotificationList
	adminGet(t, "/postback/notifications?"+q, &l)
	return l.Notifications
}

// Every request a postback handler sees gets one record, however many of
// them it passes: accepted with the script's status, its delivery and its
// labels; a replay; a bad signature; a sender outside the allowlist. No
// payload. Refusals over the hourly budget are dropped and counted.
func TestNotificationLog(t *testing.T) {
	startNotelogSite(t, 3)
	hour := time.Now().Unix() / 3600
	base := scrapeMetrics(t)
	body := sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctransreceipt=NL-0001", "ccustemail=jane@example.com", "ccustcc=4111111111111111")
	ipn := testURL(0, "/ipn.php")
	for _, c := range []struct{ body, want string }{
		{body, "SALE OK"}, // accepted
		{body, "SALE OK"}, // the replay, answered
	} {
		if r := itnsPost(t, ipn, itnsFormType, strings.NewReader(c.body)); r.status != 200 || r.body != c.want {
			t.Fatalf("POST /ipn.php: %d %q", r.status, r.body)
		}
	}
	forged := strings.Replace(body, "NL-0001", "NL-0002", 1)
	if r := itnsPost(t, ipn, itnsFormType, strings.NewReader(forged)); r.status != 403 {
		t.Fatalf("forged: %d %q, want 403", r.status, r.body)
	}
	for range 4 {
		if r := itnsPost(t, testURL(0, "/closed.php"), itnsFormType, strings.NewReader("ctransreceipt=NL-0003")); r.body != "NOT ALLOWED IP" {
			t.Fatalf("closed.php: %d %q", r.status, r.body)
		}
	}

	// 1 accepted, then 1 replay and 5 refused: the budget of 3 for records
	// not accepted keeps the replay, the forged one and one from closed.php.
	var all []storage.Notification
	testutil.WaitFor(t, "the records", 20*time.Second, func() bool {
		all = notifications(t, "limit=100")
		return len(all) >= 4
	})
	sameHour := time.Now().Unix()/3600 == hour
	if sameHour && len(all) != 4 {
		t.Fatalf("%d records, want 4 (one per request, 3 not accepted within the budget): %+v", len(all), all)
	}
	var dl report.DeliveryList
	raw := adminGet(t, "/postback/deliveries?din=2601", &dl)
	deliveries := dl.Deliveries
	if len(deliveries) != 1 {
		t.Fatalf("%d deliveries, want 1: %s", len(deliveries), raw)
	}

	accepted := notifications(t, "outcome=accepted")
	if len(accepted) != 1 {
		t.Fatalf("%d accepted records: %+v", len(accepted), accepted)
	}
	a := accepted[0]
	if a.Status != 200 || a.Method != "POST" || a.Path != "/ipn.php" || a.IP != "127.0.0.1" || !strings.HasPrefix(a.Host, "127.0.0.1:") ||
		len(a.Deliveries) != 1 || a.Deliveries[0] != deliveries[0].ID ||
		a.Labels["ctransreceipt"] != "NL-0001" || a.Labels["ctransaction"] != "SALE" || len(a.Labels) != 2 {
		t.Errorf("accepted record %+v (delivery %s)", a, deliveries[0].ID)
	}
	if got := notifications(t, "delivery="+deliveries[0].ID); len(got) != 1 || got[0].ID != a.ID {
		t.Errorf("delivery= finds %+v, want the accepted record", got)
	}
	if got := notifications(t, "outcome=replay_answered&label=NL-0001"); len(got) != 1 || got[0].Status != 200 || len(got[0].Deliveries) != 0 {
		t.Errorf("replay records %+v, want one answered 200 without a delivery", got)
	}
	refused := notifications(t, "outcome=refused")
	reasons := map[string]int{}
	for _, n := range refused {
		reasons[n.Reason+" "+n.Path]++
	}
	if reasons["signature_mismatch /ipn.php"] != 1 || (sameHour && reasons["ip /closed.php"] != 1) {
		t.Errorf("refused records %v, want the forged one and 1 from closed.php (budget 3)", reasons)
	}
	// The deny_status the legacy sender got is what is recorded; the body of
	// a sender outside the allowlist is never read, so it has no labels.
	if got := notifications(t, "path=/closed.php"); len(got) == 0 || got[0].Status != 200 || got[0].Labels != nil {
		t.Errorf("closed.php records %+v, want them with status 200 and no labels", got)
	}
	_, b := adminDo(t, "GET", "/postback/notifications?limit=100")
	for _, secret := range []string{"jane@example.com", "4111111111111111", "jane%40example.com"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("the log holds %q: %s", secret, b)
		}
	}

	m := scrapeMetrics(t)
	grew := func(series string) float64 { return m[series] - base[series] }
	if v := grew(`caddy_postback_notifications_total{outcome="accepted"}`); v != 1 {
		t.Errorf("notifications_total{accepted} grew by %v, want 1", v)
	}
	if v := grew(`caddy_postback_notifications_dropped_total{reason="budget"}`); sameHour && v != 3 {
		t.Errorf("notifications_dropped_total{budget} grew by %v, want 3", v)
	}

	// Bad filters are the caller's error, named.
	for q, want := range map[string]string{"outcome=maybe": "outcome", "delivery=xyz": "not a delivery id", "colour=red": "unknown parameter"} {
		if code, b := adminDo(t, "GET", "/postback/notifications?"+q); code != 400 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %s, want 400 naming %q", q, code, b, want)
		}
	}
}

// Labels named like card data or secrets are refused at load, with the line.
func TestNotificationLabelsCaddyfile(t *testing.T) {
	adapt := func(opts string) (string, error) {
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte("{\n\tpostback {\n"+opts+"\n\t}\n}\n"), nil)
		return string(out), err
	}
	out, err := adapt("label ctransreceipt\nlabel ctransaction\nlog_refused_per_hour 500")
	if err != nil || !strings.Contains(out, `"labels":["ctransreceipt","ctransaction"]`) || !strings.Contains(out, `"log_refused_per_hour":500`) {
		t.Errorf("adapted %s, %v", out, err)
	}
	for opts, want := range map[string]string{
		"label ctransreceipt ccustcc":       "label ccustcc: the field is named like card data",
		"label cpassword":                   "label cpassword",
		"label order_ref\nredact order_ref": "label order_ref",
		"label a a":                         "given twice",
		"log_refused_per_hour 0":            "log_refused_per_hour",
	} {
		if _, err := adapt(opts); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: %v, want an error with %q and its line", opts, err, want)
		}
	}
}

// The notifications view in headless Chromium: filtered by outcome with
// its form, an accepted row's delivery link leads to the delivery, and the
// delivery's link leads back to its notification.
func TestReportNotificationsInBrowser(t *testing.T) {
	bin := testutil.NeedTool(t, "chromium", os.Getenv("CHROMIUM"), "/usr/bin/chromium", "chromium-browser")
	startNotelogSite(t, 100)
	body := sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctransreceipt=NB-0001")
	if r := itnsPost(t, testURL(0, "/ipn.php"), itnsFormType, strings.NewReader(body)); r.status != 200 {
		t.Fatalf("POST: %d", r.status)
	}
	for range 2 {
		itnsPost(t, testURL(0, "/closed.php"), itnsFormType, strings.NewReader("a=1"))
	}
	testutil.WaitFor(t, "the records", 20*time.Second, func() bool { return len(notifications(t, "")) == 3 })

	rp := openReportPage(t, bin)
	ctx, page, eval, step := rp.ctx, rp.page, rp.eval, rp.step
	rows := func(sel string) int {
		t.Helper()
		var n int
		eval(`document.querySelectorAll('#notifications-table `+sel+`').length`, &n)
		return n
	}

	if err := page.Navigate(ctx, testURL(0, "/ops/report/")); err != nil {
		t.Fatal(err)
	}
	step("the Notifications link", `document.getElementById("nav-notifications").click()`)
	if n := rows("tr[data-outcome]"); n != 3 {
		t.Fatalf("%d rows, want 3", n)
	}
	step("the filter form", `(() => { const f = document.querySelector("form.filters");
		f.querySelector("select[name=outcome]").value = "refused"; f.requestSubmit(); })()`)
	if n, all := rows(`tr[data-outcome="refused"]`), rows("tr[data-outcome]"); n != 2 || all != 2 {
		t.Fatalf("filtered: %d refused of %d rows, want 2 of 2", n, all)
	}
	var search string
	eval(`location.search`, &search)
	if q, _ := url.ParseQuery(strings.TrimPrefix(search, "?")); q.Get("outcome") != "refused" {
		t.Fatalf("the form led to %q", search)
	}

	step("the accepted view", `location.href = "`+testURL(0, "/ops/report/notifications?outcome=accepted")+`"`)
	var id string
	eval(`document.querySelector('#notifications-table tr[data-outcome="accepted"] a.delivery-link').title`, &id)
	step("the delivery link", `document.querySelector('#notifications-table a.delivery-link').click()`)
	var detail string
	eval(`document.getElementById("detail").dataset.id`, &detail)
	if detail != id || id == "" {
		t.Fatalf("the delivery link led to %q, want %q", detail, id)
	}
	step("the notification link", `document.getElementById("notification-link").click()`)
	var text string
	eval(`document.getElementById("notifications-table").textContent`, &text)
	if n := rows("tr[data-outcome]"); n != 1 || !strings.Contains(text, "NB-0001") || !strings.Contains(text, "accepted") {
		t.Fatalf("back from the delivery: %d rows:\n%s", n, text)
	}
}
