package caddymodule

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// The ClickBank INS 6.0+ and Digistore24 senders of itns_verify: options,
// the rules on combining them, and a real Caddy in front of an upstream.

func TestITNSVerifyCaddyfileSenders(t *testing.T) {
	v := new(ITNSVerify)
	if err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`itns_verify {
		format clickbank_json
		secret {file./etc/caddy/cb.secret}
		max_age 15m
		future_skew 1m
		dedupe 24h
	}`)); err != nil {
		t.Fatal(err)
	}
	if v.Format != "clickbank_json" || v.MaxAge != caddy.Duration(15*time.Minute) || v.Dedupe != caddy.Duration(24*time.Hour) {
		t.Fatalf("%+v", *v)
	}
	v = new(ITNSVerify)
	// future_skew before max_age is fine: only the end of the block decides
	// what is missing.
	if err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser("itns_verify {\n\tfuture_skew 1m\n\tmax_age 5m\n\tsecret s\n}")); err != nil {
		t.Fatal(err)
	}
	v = new(ITNSVerify)
	if err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser("itns_verify {\n\talgorithm digistore24\n\tsecret s\n\tmax_fields 200\n}")); err != nil || v.Algorithm != "digistore24" {
		t.Fatalf("%+v, %v", *v, err)
	}

	// Each conflict names the line of the option that makes it.
	for in, want := range map[string]string{
		"itns_verify {\n\tformat clickbank_json\n\tsecret s\n\tprefix c\n}":       "no field prefix (\"c\"): its fields are JSON members, at Testfile:4",
		"itns_verify {\n\tprefix c\n\tsecret s\n\tformat clickbank_json\n}":       "no field prefix (\"c\"): its fields are JSON members, at Testfile:4",
		"itns_verify {\n\tformat clickbank_json\n\talgorithm v1\n\tsecret s\n}":   "takes no algorithm (\"v1\"), at Testfile:3",
		"itns_verify {\n\tformat clickbank_json\n\tmax_fields 10\n\tsecret s\n}":  "max_fields does not apply, at Testfile:3",
		"itns_verify {\n\tsecret s\n\tmax_age 15m\n\talgorithm digistore24\n}":    "max_age cannot be checked",
		"itns_verify {\n\tsecret s\n\talgorithm digistore24\n\tprefix c\n}":       "algorithm digistore24 has no field prefix (\"c\"), at Testfile:4",
		"itns_verify {\n\tsecret s\n\tformat json\n}":                             "unknown format \"json\" (want form or clickbank_json), at Testfile:3",
		"itns_verify {\n\tsecret s\n\tformat clickbank_json\n\tformat form\n}":    "format already specified, at Testfile:4",
		"itns_verify {\n\tsecret s\n\tformat clickbank_json extra\n}":             "wrong argument count",
		"itns_verify {\n\tsecret s\n\talgorithm sha1\n}":                          "unknown ITNS algorithm \"sha1\" (want sorted, v1 or digistore24), at Testfile:3",
		"itns_verify {\n\tsecret s\n\tfuture_skew 1m\n\tformat clickbank_json\n}": "future_skew without max_age",
	} {
		err := new(ITNSVerify).UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// A JSON config gets the same rules, at load.
func TestITNSVerifyJSONConfigRules(t *testing.T) {
	for name, v := range map[string]ITNSVerify{
		"json with a prefix":       {Secrets: []string{"s"}, Format: "clickbank_json", Prefix: "c"},
		"json with v1":             {Secrets: []string{"s"}, Format: "clickbank_json", Algorithm: "v1"},
		"digistore24 with max_age": {Secrets: []string{"s"}, Algorithm: "digistore24", MaxAge: caddy.Duration(time.Minute)},
		"unknown format":           {Secrets: []string{"s"}, Format: "xml"},
		"unknown algorithm":        {Secrets: []string{"s"}, Algorithm: "md5"},
	} {
		if err := v.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
	ok := ITNSVerify{Secrets: []string{"s"}, Format: "clickbank_json", MaxAge: caddy.Duration(time.Minute)}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

// signClickBank encrypts notification as ClickBank does (what `caddy
// postback sign --format clickbank_json` prints).
func signClickBank(t *testing.T, secret, notification string) string {
	t.Helper()
	body, err := signOptions{secret: secret, format: handlers.FormatClickBankJSON}.signJSON([]byte(notification), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func cbNote(receipt string, at time.Time, attempt int) string {
	return `{"transactionTime":"` + at.Format(time.RFC3339) + `","receipt":"` + receipt + `","transactionType":"SALE","vendor":"myshop","role":"VENDOR",` +
		`"lineItems":[{"itemNo":"1","productTitle":"Guide – Müller"}],"customer":{"billing":{"fullName":"Jürgen Müller","email":"jm%40example.com"}},` +
		`"version":8.0,"attemptCount":` + string(rune('0'+attempt)) + `}`
}

func TestITNSIntegrationClickBankJSON(t *testing.T) {
	t.Setenv("POSTBACK_TEST_CB_NEW", "cb-new-secret")
	up := newITNSUpstream(t)
	accessLog := testDir(t, "cb-access") + "/access.log"
	newTester(t, "postback {\n\t\tstorage_dir "+testDir(t, "cb-store")+"\n\t}", strings.NewReplacer("UPSTREAM", up.addr(), "ACCESSLOG", accessLog).Replace(`
http://127.0.0.1:{port0} {
	log {
		output file ACCESSLOG
	}
	route /ins.php {
		# Before itns_verify: log_append reads the placeholders on the way
		# back, also for a replay or a refusal, which go no further.
		log_append receipt {postback.receipt}
		log_append transaction_type {postback.transaction_type}
		log_append role {postback.role}
		itns_verify {
			format clickbank_json
			secret {env.POSTBACK_TEST_CB_NEW} cb-old-secret
			max_age 15m
			dedupe 1h
		}
		reverse_proxy UPSTREAM
	}
	handle_errors {
		respond "refused: {postback.deny_reason}" {err.status_code}
	}
}
`))
	url := testURL(0, "/ins.php")
	now := time.Now()
	genuine := signClickBank(t, "cb-new-secret", cbNote("CBJSON01", now, 1))
	first := itnsPost(t, url, "application/json", strings.NewReader(genuine))
	if first.status != 200 || first.body != "SALE OK\nmember 1" {
		t.Fatalf("genuine: %d %q", first.status, first.body)
	}
	// The body goes on byte for byte.
	up.mu.Lock()
	if up.bodies[0] != genuine || up.types[0] != "application/json" {
		t.Errorf("upstream saw %q (%s)", up.bodies[0], up.types[0])
	}
	up.mu.Unlock()
	// ClickBank's resend (new IV, higher attemptCount) is a replay.
	resend := signClickBank(t, "cb-new-secret", cbNote("CBJSON01", now, 2))
	if r := itnsPost(t, url, "", strings.NewReader(resend)); r.status != 200 || r.body != first.body {
		t.Fatalf("resend: %d %q, want the first answer", r.status, r.body)
	}
	// The old secret, text/plain.
	if r := itnsPost(t, url, "text/plain", strings.NewReader(signClickBank(t, "cb-old-secret", cbNote("CBJSON02", now, 1)))); r.status != 200 || r.body != "SALE OK\nmember 2" {
		t.Fatalf("old secret: %d %q", r.status, r.body)
	}

	for _, c := range []struct {
		name, ct, body, want string
	}{
		{"form", itnsFormType, genuine, "refused: content_type"},
		{"not the envelope", "application/json", `{"receipt":"X"}`, "refused: malformed"},
		{"other secret", "application/json", signClickBank(t, "guessed", cbNote("CBJSON03", now, 1)), "refused: decrypt_failed"},
		{"not a notification", "application/json", signClickBankRaw(t, "cb-new-secret", `{"hello":"world"}`), "refused: not_a_notification"},
		{"stale", "application/json", signClickBank(t, "cb-new-secret", cbNote("CBJSON04", now.Add(-time.Hour), 1)), "refused: stale"},
		{"no time", "application/json", signClickBank(t, "cb-new-secret", `{"receipt":"CBJSON05","transactionType":"SALE"}`), "refused: transtime_missing"},
	} {
		if r := itnsPost(t, url, c.ct, strings.NewReader(c.body)); r.body != c.want {
			t.Errorf("%s: %d %q, want %q", c.name, r.status, r.body, c.want)
		}
	}
	if up.hits.Load() != 2 {
		t.Errorf("upstream hits %d, want 2", up.hits.Load())
	}

	var b []byte
	defer func() {
		if t.Failed() {
			t.Logf("access log:\n%s", b)
		}
	}()
	testutil.WaitFor(t, "the identifiers in the access log", 5*time.Second, func() bool {
		b, _ = os.ReadFile(accessLog)
		return strings.Count(string(b), `"receipt":"CBJSON01"`) == 2 && strings.Count(string(b), `"transaction_type":"SALE"`) == 3 &&
			strings.Count(string(b), `"role":"VENDOR"`) == 3 && strings.Contains(string(b), `"receipt":"CBJSON02"`) &&
			strings.Count(string(b), `"receipt":null`) == 6
	})
	for _, secret := range []string{"Müller", "jm%40", "cb-new-secret", "Jürgen"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("access log shows %q", secret)
		}
	}
}

// signClickBankRaw encrypts any JSON object, even one that is not a
// notification (which Encrypt refuses to make), PKCS#7 padded.
func signClickBankRaw(t *testing.T, secret, plain string) string {
	t.Helper()
	b, err := aes.NewCipher(handlers.ClickBankKey([]byte(secret)))
	if err != nil {
		t.Fatal(err)
	}
	pad := 16 - len(plain)%16
	buf := []byte(plain + strings.Repeat(string(rune(pad)), pad))
	iv := []byte("fedcba9876543210")
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(buf, buf)
	return `{"notification":"` + base64.StdEncoding.EncodeToString(buf) + `","iv":"` + base64.StdEncoding.EncodeToString(iv) + `"}`
}

func TestITNSIntegrationDigistore24(t *testing.T) {
	up := newITNSUpstream(t)
	newTester(t, "postback {\n\t\tstorage_dir "+testDir(t, "ds24-store")+"\n\t}", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	route /ipn.php {
		itns_verify {
			algorithm digistore24
			secret ds24-pass-new ds24-pass-old
			dedupe 1h
			deny_status 200
			deny_body "ERROR: {postback.deny_reason}"
		}
		reverse_proxy UPSTREAM
	}
}
`, "UPSTREAM", up.addr()))
	url := testURL(0, "/ipn.php")
	sign := func(secret string, fields ...string) string {
		t.Helper()
		body, err := signArgs(secret, "", "digistore24", mustFields(t, fields), false, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	fields := []string{"event=on_payment", "order_id=DS24ORDER1", "product_name=Guide – Müller &amp; Co", "email=jm@example.com", "custom=", "tags[0]=vip"}
	genuine := sign("ds24-pass-new", fields...)
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(genuine)); r.status != 200 || r.body != "SALE OK\nmember 1" {
		t.Fatalf("genuine: %d %q", r.status, r.body)
	}
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(genuine)); r.body != "SALE OK\nmember 1" {
		t.Fatalf("replay: %d %q", r.status, r.body)
	}
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(sign("ds24-pass-old", fields[1:]...))); r.body != "SALE OK\nmember 2" {
		t.Fatalf("old passphrase: %d %q", r.status, r.body)
	}
	for _, c := range []struct{ name, body, want string }{
		{"tampered", strings.Replace(genuine, "DS24ORDER1", "DS24ORDER9", 1), "ERROR: signature_mismatch"},
		{"unsigned", genuine[:strings.Index(genuine, "&sha_sign=")], "ERROR: signature_missing"},
		{"other passphrase", sign("guessed", fields...), "ERROR: signature_mismatch"},
		{"value and array", genuine + "&tags=x", "ERROR: duplicate_field"},
	} {
		if r := itnsPost(t, url, itnsFormType, strings.NewReader(c.body)); r.status != 200 || r.body != c.want {
			t.Errorf("%s: %d %q, want %q", c.name, r.status, r.body, c.want)
		}
	}
	if up.hits.Load() != 2 {
		t.Errorf("upstream hits %d, want 2", up.hits.Load())
	}
}
