package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

const (
	cbSecret    = "e2e-clickbank-KEY"
	ds24Secret  = "e2e-digistore24 pass – ü"
	jvzooSecret = "e2e-jvzoo-KEY"
)

// sendersConfig puts the unchanged clickbank_ins.php (ClickBank INS 6.0+,
// encrypted JSON) and digistore24_ipn.php behind itns_verify, each with
// dedupe and a copy to DIN 1001; the scripts get their secret from the
// server, as a merchant's would hold it. The CLI signs with
// E2E_ITNS_SECRET, so it is set per signer (runSignCLI).
func sendersConfig(storeDir, destURL, caFile, root, php string, port int) string {
	return caddyfile{
		store: storeDir,
		dests: []destination{{din: "1001", url: destURL, ca: caFile, opts: "retry_schedule 0s 200ms 500ms 1s"}},
		sites: []site{{port: port, root: root, body: `route /clickbank_ins.php {
	postback_filter {
		allow 127.0.0.1
	}
	itns_verify {
		format clickbank_json
		secret {env.E2E_CB_SECRET}
		max_age 15m
		dedupe 24h
	}
	secondary_post 1001
	php_fastcgi ` + php + ` {
		env CLICKBANK_SECRET {env.E2E_CB_SECRET}
	}
}
route /digistore24_ipn.php {
	postback_filter {
		allow 127.0.0.1
	}
	itns_verify {
		algorithm digistore24
		secret {env.E2E_DS24_SECRET}
		dedupe 24h
		deny_status 200
		deny_body "ERROR: {postback.deny_reason}"
	}
	secondary_post 1001
	php_fastcgi ` + php + ` {
		env DIGISTORE24_PASSPHRASE {env.E2E_DS24_SECRET}
	}
}
route /jvzipn.php {
	postback_filter {
		allow 127.0.0.1
	}
	itns_verify {
		secret {env.E2E_JVZOO_SECRET}
		prefix c
		dedupe 24h
	}
	secondary_post 1001
	php_fastcgi ` + php + ` {
		env JVZOO_SECRET {env.E2E_JVZOO_SECRET}
	}
}
handle_errors {
	respond "refused: {postback.deny_reason}" {err.status_code}
}`}},
	}.String()
}

// cbE2ENotification is an INS 8.0 notification as ClickBank posts it, with
// umlauts, an en dash, an empty value and a literal %40.
func cbE2ENotification(receipt string, at time.Time, attempt int) string {
	b, _ := json.Marshal(map[string]any{
		"transactionTime": at.Format(time.RFC3339), "receipt": receipt, "transactionType": "SALE",
		"vendor": "e2eshop", "affiliate": "", "role": "VENDOR", "totalAccountAmount": 19.95, "currency": "EUR",
		"lineItems": []any{map[string]any{"itemNo": "1", "productTitle": "Guide – 2nd edition", "quantity": 1}},
		"customer":  map[string]any{"billing": map[string]any{"fullName": "Jürgen Müller", "email": "jm%40example.com"}},
		"version":   8.0, "attemptCount": attempt,
	})
	return string(b)
}

// A ClickBank INS notification encrypted by `caddy postback sign` reaches
// the unchanged clickbank_ins.php, which decrypts it as ClickBank's sample
// does; ClickBank's resend (a new IV, attemptCount 2) is answered from the
// first answer; a notification under another key, a stale one or a form
// never reaches PHP; DIN 1001 gets each accepted body byte for byte.
func TestPHPClickBankJSON(t *testing.T) {
	php, dest, endpoint := startSenders(t, "clickbank_ins.php")
	client := &http.Client{Timeout: 15 * time.Second}
	const jsonType = "application/json"

	now := time.Now()
	first := runSignCLI(t, cbSecret, cbE2ENotification("E2ECB001", now, 1), "--format", "clickbank_json")
	a := do(t, client, http.MethodPost, endpoint, jsonType, first)
	if a.Status != http.StatusOK || a.Body != "OK\n" {
		t.Fatalf("genuine: %s", a)
	}
	// The flat form of the CLI, with --transtime-now.
	flat := runSignCLI(t, cbSecret, "", "--format", "clickbank_json", "--transtime-now",
		"receipt=E2ECB002", "transactionType=TEST", "role=AFFILIATE", "vendor=e2eshop")
	if a := do(t, client, http.MethodPost, endpoint, jsonType, flat); a.Status != http.StatusOK || a.Body != "OK\n" {
		t.Fatalf("flat: %s", a)
	}
	recs := php.records(t, "clickbank_ins")
	if len(recs) != 2 {
		t.Fatalf("clickbank_ins.php ran %d times, want 2", len(recs))
	}
	for k, want := range map[string]any{"receipt": "E2ECB001", "transactionType": "SALE", "role": "VENDOR", "name": "Jürgen Müller", "email": "jm%40example.com", "attemptCount": 1.0} {
		if recs[0][k] != want {
			t.Errorf("clickbank_ins.php read %s = %v, ClickBank sent %v", k, recs[0][k], want)
		}
	}
	if recs[1]["receipt"] != "E2ECB002" || recs[1]["transactionType"] != "TEST" {
		t.Errorf("clickbank_ins.php read %v", recs[1])
	}

	// ClickBank's resend: new IV, higher attemptCount, the same notification.
	resend := runSignCLI(t, cbSecret, cbE2ENotification("E2ECB001", now, 2), "--format", "clickbank_json")
	if resend == first {
		t.Fatal("test bug: the resend is the same body")
	}
	if r := do(t, client, http.MethodPost, endpoint, jsonType, resend); r.Status != a.Status || r.Body != a.Body {
		t.Errorf("resend: %s, want the first answer %s", r, a)
	}

	for _, c := range []struct {
		name, ct, body, want string
		status               int
	}{
		{"another key", jsonType, runSignCLI(t, "guessed", cbE2ENotification("E2ECB003", now, 1), "--format", "clickbank_json"), "refused: decrypt_failed", 403},
		{"stale", jsonType, runSignCLI(t, cbSecret, cbE2ENotification("E2ECB004", now.Add(-time.Hour), 1), "--format", "clickbank_json"), "refused: stale", 403},
		{"a form", formContent, first, "refused: content_type", 400},
		{"not the envelope", jsonType, `{"receipt":"E2ECB005"}`, "refused: malformed", 400},
	} {
		if r := do(t, client, http.MethodPost, endpoint, c.ct, c.body); r.Status != c.status || r.Body != c.want {
			t.Errorf("%s: %s, want %d %q", c.name, r, c.status, c.want)
		}
	}
	if n := php.calls(t, "clickbank_ins"); n != 2 {
		t.Errorf("clickbank_ins.php ran %d times, want 2", n)
	}

	testutil.WaitFor(t, "both notifications at DIN 1001", 30*time.Second, func() bool {
		b, _ := dest.received()
		return b[first] > 0 && b[flat] > 0
	})
	time.Sleep(500 * time.Millisecond) // a refused copy would have arrived by now
	for _, r := range dest.requests() {
		if r.Body != first && r.Body != flat {
			t.Errorf("DIN 1001 got a body that was not accepted: %q", r.Body)
		}
		if r.ContentType != jsonType {
			t.Errorf("DIN 1001 got content type %q", r.ContentType)
		}
	}
	figures(t, "php-clickbank-json: accepted=2 resent=1 refused=4 php_calls=%d destination_requests=%d",
		php.calls(t, "clickbank_ins"), len(dest.requests()))
}

// A Digistore24 IPN signed by `caddy postback sign --algorithm digistore24`
// passes the unchanged digistore24_ipn.php's own check of sha_sign (its
// html_entity_decode included) and gets its "OK"; a replay is answered from
// the first answer, a tampered IPN in the answer Digistore24 reads, and
// neither reaches PHP.
func TestPHPDigistore24(t *testing.T) {
	php, dest, endpoint := startSenders(t, "digistore24_ipn.php")
	client := &http.Client{Timeout: 15 * time.Second}

	body := runSignCLI(t, ds24Secret, "", "--algorithm", "digistore24", "event=on_payment", "order_id=E2EDS001",
		"address_first_name=Jürgen", "address_last_name=Müller", "product_name=Guide – 2nd edition &amp; more",
		"email=jm@example.com", "custom=", "amount_brutto=19.95")
	first := do(t, client, http.MethodPost, endpoint, formContent, body)
	if first.Status != http.StatusOK || first.Body != "OK" {
		t.Fatalf("genuine: %s", first)
	}
	recs := php.records(t, "digistore24_ipn")
	if len(recs) != 1 || recs[0]["sha_ok"] != true || recs[0]["order_id"] != "E2EDS001" || recs[0]["name"] != "Jürgen Müller" ||
		recs[0]["product"] != "Guide – 2nd edition &amp; more" {
		t.Fatalf("digistore24_ipn.php recorded %v", recs)
	}
	if r := do(t, client, http.MethodPost, endpoint, formContent, body); r.Status != first.Status || r.Body != first.Body {
		t.Errorf("replay: %s, want %s", r, first)
	}
	for _, c := range []struct{ name, body, want string }{
		{"tampered", strings.Replace(body, "19.95", "0.01", 1), "ERROR: signature_mismatch"},
		{"unsigned", body[:strings.Index(body, "&sha_sign=")], "ERROR: signature_missing"},
		{"another passphrase", runSignCLI(t, "guessed", "", "--algorithm", "digistore24", "event=on_payment", "order_id=E2EDS002"), "ERROR: signature_mismatch"},
	} {
		if r := do(t, client, http.MethodPost, endpoint, formContent, c.body); r.Status != http.StatusOK || r.Body != c.want {
			t.Errorf("%s: %s, want 200 %q", c.name, r, c.want)
		}
	}
	if n := php.calls(t, "digistore24_ipn"); n != 1 {
		t.Errorf("digistore24_ipn.php ran %d times, want 1", n)
	}
	testutil.WaitFor(t, "the IPN at DIN 1001", 30*time.Second, func() bool {
		b, _ := dest.received()
		return b[body] > 0
	})
	time.Sleep(500 * time.Millisecond)
	if bodies, total := dest.received(); total != 1 || bodies[body] != 1 {
		t.Errorf("DIN 1001 got %d requests, want the accepted IPN once", total)
	}
	figures(t, "php-digistore24: accepted=1 replayed=1 refused=3 php_calls=%d destination_requests=%d",
		php.calls(t, "digistore24_ipn"), len(dest.requests()))
}

// A JVZoo JVZIPN notification (the ClickBank-compatible sorted scheme,
// prefix c) signed by `caddy postback sign` passes the unchanged jvzipn.php,
// which checks cverify as JVZoo's sample does; a replay is answered from the
// first answer, a forged one never reaches PHP.
func TestPHPJVZoo(t *testing.T) {
	php, dest, endpoint := startSenders(t, "jvzipn.php")
	client := &http.Client{Timeout: 15 * time.Second}

	body := runSignCLI(t, jvzooSecret, "", "--prefix", "c", "ccustname=Jürgen Müller", "ccustemail=jm@example.com",
		"cproditem=1707", "cprodtitle=Guide – 2nd edition", "ctransaction=SALE", "ctransreceipt=JVZE2E01",
		"ctransamount=19.95", "ctransaffiliate=")
	first := do(t, client, http.MethodPost, endpoint, formContent, body)
	if first.Status != http.StatusOK || first.Body != "OK" {
		t.Fatalf("genuine: %s", first)
	}
	recs := php.records(t, "jvzipn")
	if len(recs) != 1 || recs[0]["verified"] != true || recs[0]["receipt"] != "JVZE2E01" || recs[0]["customer"] != "Jürgen Müller" {
		t.Fatalf("jvzipn.php recorded %v", recs)
	}
	if r := do(t, client, http.MethodPost, endpoint, formContent, body); r.Status != first.Status || r.Body != first.Body {
		t.Errorf("replay: %s, want %s", r, first)
	}
	forged := runSignCLI(t, "guessed", "", "--prefix", "c", "ccustname=x", "ctransreceipt=JVZE2E02")
	if r := do(t, client, http.MethodPost, endpoint, formContent, forged); r.Status != http.StatusForbidden {
		t.Errorf("forged: %s, want 403", r)
	}
	if n := php.calls(t, "jvzipn"); n != 1 {
		t.Errorf("jvzipn.php ran %d times, want 1", n)
	}
	testutil.WaitFor(t, "the notification at DIN 1001", 30*time.Second, func() bool {
		b, _ := dest.received()
		return b[body] > 0
	})
}

// startSenders starts php-cgi, DIN 1001's sink and an edge on sendersConfig,
// and returns the URL of the script named.
func startSenders(t *testing.T, script string) (*phpServer, *sink, string) {
	t.Helper()
	php := startPHP(t)
	dir := t.TempDir()
	dest := newSink(t, dir, 0)
	port := testutil.FreePort(t)
	startCaddy(t, dir, sendersConfig(dir+"/store", dest.srv.URL+"/collect", dest.caFile, legacyRoot(t), php.addr, port),
		"E2E_CB_SECRET="+cbSecret, "E2E_DS24_SECRET="+ds24Secret, "E2E_JVZOO_SECRET="+jvzooSecret)
	return php, dest, fmt.Sprintf("http://127.0.0.1:%d/%s", port, script)
}
