package handlers

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// cbSampleSecret and cbSampleBody are a ClickBank INS 6.0 test notification
// published with its secret key (receipt "********", vendor
// TestVendorNickname): ClickBank's encryption, not ours.
const (
	cbSampleSecret = "G3B7H7T87J2E0VFN"
	cbSampleBody   = `{"notification":"TR6oRInlNZ4Wg+se+8c1wcN/G/1sJ0xObOOLojbwylpOWZiZslQomEg4ztyJAJkvWZiC5tAqgQhiIrFRngZkwXdQ1jOsQ2/fpCdo+RTZDStdQZJqSnZSe8PaaW4UmP5+ib9i/SsRU2Cqa3N1uJDSJGcTYmBvD0DNeY8PsPfY3xhOh2BzF2auc3mZyNzy/crnJTOhnp6APycB3KCcDde1IKXkMIhjNjOU+ea3KspQZXESK3IzwnqS1ugeiCH6m3FJUI+DYHfg5vXBm0HV6l1kH5vx27WPObQVMw6VOVA4Wbxu/ZVCwm4ff12wFEvq1QwYhNCwaeq8XBevnLHkbWO3Om4nL7XjMR/iMcIfYMytdUh0pj3LuTbpYd2A+/EtGJzcFgUZ9QBXVsv0bvN9U2leS7X+mdNPOnJcYVjIBQt/Vuz8InLdy2CAUclP6sA4lkheZdhEgZrLHlktYOxP+lBaPhXxL/ooKytd85jEnnDrKjlbDY9ptMukI+rpDk+d6HJuoMLIy8P1t9aYAHIEsoEbjmderUJyCA2T5uSRLRRf9lHw0NH0KFNnbjJ/lVZjZXcSHdgvsqNDtKNewW2/uErBdIl+WPYxGrmqjdCilcZ7hyj6ZT4m/zvhw45T7ReBQuUAZjQkGErsSS2ZekvE1b6RKdxOM4RHmx7/LpTTEILyDddP6+F5JA83LdmNASheQxK9HGqOyy+3dZg3z0R80UCNkfkv2ZAQKid6ZrJJ+vunvDWAVXPX2quWKT+BDNT/orecbqIg6jkNkn9+7NsLAR0+f1vq8WHrNnYecAUWhxI2/ra8cTlfGRHNthz+D5P8ClpEOBxVS1ORXehO3lzY6A+o3nlkuM1s9chuh7FrxB3ovB0M/UOskt04wwy95l0Jfs94TTOOEFXAQSxlXNR8OsadlBfurf2fUCIBIRsMfAZL5LJMsDedSesOTtesUpgftbgrmydVcLjdiN27r4/bNjk5CmHIl8BNAC5LRVzWd3fiGkEjDDiGnSv6bmCjEbQIvCHL", "iv":"TTBFd1FUWkRNamxCUlE9PQ=="}`
)

func mustClickBank(t testing.TB, cfg ClickBankJSONConfig) *ClickBankJSON {
	t.Helper()
	c, err := NewClickBankJSON(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cbNotification is an INS 6.0 notification with the values the design
// asks to cover: umlauts, an en dash, empty values, a literal %40.
func cbNotification(receipt string, at time.Time, attempt int) string {
	return fmt.Sprintf(`{"transactionTime":%q,"receipt":%q,"transactionType":"SALE","vendor":"testvendor","affiliate":"","role":"VENDOR",`+
		`"totalAccountAmount":19.95,"paymentMethod":"VISA","totalOrderAmount":23.74,"currency":"EUR",`+
		`"lineItems":[{"itemNo":"1","productTitle":"Guide – 2nd edition (Müller)","shippable":false,"recurring":false,"accountAmount":19.95,"quantity":1}],`+
		`"customer":{"billing":{"firstName":"Jürgen","lastName":"Müller","fullName":"Jürgen Müller","email":"j%%40example.com","address":{"state":"","postalCode":"50667","country":"DE"}}},`+
		`"trackingCodes":[],"vendorVariables":{"note":""},"version":6.0,"attemptCount":%d}`,
		at.Format(time.RFC3339), receipt, attempt)
}

func cbEncrypt(t testing.TB, c *ClickBankJSON, plaintext string, iv byte) string {
	t.Helper()
	body, err := c.Encrypt([]byte(plaintext), bytes.Repeat([]byte{iv}, 16))
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// cbRaw encrypts plaintext with key exactly as given (no padding added),
// for bodies Encrypt refuses to make.
func cbRaw(t testing.TB, secret, plaintext string) string {
	t.Helper()
	if len(plaintext)%16 != 0 { // zero padding, as mcrypt did
		plaintext += strings.Repeat("\x00", 16-len(plaintext)%16)
	}
	b, _ := aes.NewCipher(ClickBankKey([]byte(secret)))
	iv := []byte("0123456789abcdef")
	buf := []byte(plaintext)
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(buf, buf)
	return fmt.Sprintf(`{"notification":%q,"iv":%q}`, base64.StdEncoding.EncodeToString(buf), base64.StdEncoding.EncodeToString(iv))
}

func pkcs7(s string) string {
	n := 16 - len(s)%16
	return s + strings.Repeat(string(rune(n)), n)
}

func TestClickBankKey(t *testing.T) {
	// php -r 'echo substr(sha1("G3B7H7T87J2E0VFN"), 0, 32);'
	if got := string(ClickBankKey([]byte(cbSampleSecret))); got != "5c4cb16b116f92f7f500caa4774103d8" {
		t.Fatalf("key %q", got)
	}
}

func TestClickBankJSONPublishedSample(t *testing.T) {
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte("other"), []byte(cbSampleSecret)}})
	n, err := c.Check("application/json", []byte(cbSampleBody), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if n.SecretIndex != 1 || n.Receipt != "********" || n.TransactionType != "SALE" || n.Role != "VENDOR" || n.Fields != 15 {
		t.Fatalf("got %+v", n)
	}
	// Its transactionTime is 2023-07-28T02:07:57+00:00.
	at := time.Date(2023, 7, 28, 2, 7, 57, 0, time.UTC)
	aged := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte(cbSampleSecret)}, MaxAge: 15 * time.Minute})
	if _, err := aged.Check("", []byte(cbSampleBody), at.Add(10*time.Minute)); err != nil {
		t.Fatalf("fresh: %v", err)
	}
	if _, err := aged.Check("", []byte(cbSampleBody), at.Add(16*time.Minute)); denialReason(err) != ReasonStale {
		t.Fatalf("16 minutes later: %v, want stale", err)
	}
	if _, err := aged.Check("", []byte(cbSampleBody), at.Add(-3*time.Minute)); denialReason(err) != ReasonFuture {
		t.Fatalf("3 minutes before: %v, want future", err)
	}
}

func TestClickBankJSONCheck(t *testing.T) {
	const secret = "MYSECRETKEY"
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte(secret)}, MaxAge: 15 * time.Minute})
	genuine := cbEncrypt(t, c, cbNotification("ABCD1234", now.Add(-time.Minute), 1), 7)
	other := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte("another key")}})
	noTime := `{"receipt":"ABCD1234","transactionType":"SALE"}`
	cases := []struct {
		name, ct, body, reason string
		status                 int
	}{
		{"genuine", "application/json", genuine, "", 0},
		{"charset", "application/json; charset=UTF-8", genuine, "", 0},
		{"no content type", "", genuine, "", 0},
		{"text/plain", "text/plain;charset=utf-8", genuine, "", 0},
		{"zero padding (mcrypt era)", "", cbRaw(t, secret, `{"receipt":"X1","transactionType":"SALE","transactionTime":"`+now.Format(time.RFC3339)+`"}`), "", 0},
		{"form", "application/x-www-form-urlencoded", genuine, ReasonContentType, 400},
		{"xml", "application/xml", genuine, ReasonContentType, 400},
		{"not JSON", "", "notification=abc&iv=def", ReasonMalformed, 400},
		{"empty", "", "", ReasonMalformed, 400},
		{"array", "", `[` + genuine + `]`, ReasonMalformed, 400},
		{"two objects", "", genuine + genuine, ReasonMalformed, 400},
		{"no iv", "", `{"notification":"AAAAAAAAAAAAAAAAAAAAAA=="}`, ReasonMalformed, 400},
		{"iv not a string", "", `{"notification":"AAAAAAAAAAAAAAAAAAAAAA==","iv":16}`, ReasonMalformed, 400},
		{"short iv", "", `{"notification":"AAAAAAAAAAAAAAAAAAAAAA==","iv":"AAAA"}`, ReasonMalformed, 400},
		{"not base64", "", `{"notification":"%%%","iv":"AAAAAAAAAAAAAAAAAAAAAA=="}`, ReasonMalformed, 400},
		{"iv twice", "", strings.Replace(genuine, `"iv":`, `"iv":"AAAAAAAAAAAAAAAAAAAAAA==","iv":`, 1), ReasonMalformed, 400},
		{"envelope not UTF-8", "", strings.Replace(genuine, `"iv"`, "\"iv\xff\":1,\"iv\"", 1), ReasonMalformed, 400},
		{"wrong secret", "", cbEncrypt(t, other, cbNotification("ABCD1234", now, 1), 7), ReasonDecryptFailed, 403},
		{"not whole blocks", "", `{"notification":"AAAAAAAAAAAAAAAAAAAA","iv":"AAAAAAAAAAAAAAAAAAAAAA=="}`, ReasonDecryptFailed, 403},
		{"no ciphertext", "", `{"notification":"","iv":"AAAAAAAAAAAAAAAAAAAAAA=="}`, ReasonDecryptFailed, 403},
		{"random ciphertext", "", `{"notification":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, 64)) + `","iv":"AAAAAAAAAAAAAAAAAAAAAA=="}`, ReasonDecryptFailed, 403},
		{"plaintext not JSON", "", cbRaw(t, secret, pkcs7("receipt=ABCD1234")), ReasonDecryptFailed, 403},
		{"plaintext invalid UTF-8", "", cbRaw(t, secret, pkcs7("{\"receipt\":\"AB\xffD\",\"transactionType\":\"SALE\"}")), ReasonDecryptFailed, 403},
		{"member twice", "", cbRaw(t, secret, pkcs7(`{"receipt":"A","receipt":"B","transactionType":"SALE"}`)), ReasonDecryptFailed, 403},
		{"nested member twice", "", cbRaw(t, secret, pkcs7(`{"receipt":"A","transactionType":"SALE","customer":{"email":"a","email":"b"}}`)), ReasonDecryptFailed, 403},
		{"no receipt", "", cbRaw(t, secret, pkcs7(`{"transactionType":"SALE","transactionTime":"2026-03-01T12:00:00+01:00"}`)), ReasonNotANotification, 403},
		{"empty receipt", "", cbRaw(t, secret, pkcs7(`{"receipt":"","transactionType":"SALE"}`)), ReasonNotANotification, 403},
		{"receipt a number", "", cbRaw(t, secret, pkcs7(`{"receipt":1234,"transactionType":"SALE"}`)), ReasonNotANotification, 403},
		{"no transactionType", "", cbRaw(t, secret, pkcs7(`{"receipt":"ABCD1234"}`)), ReasonNotANotification, 403},
		{"no time", "", cbRaw(t, secret, pkcs7(noTime)), ReasonTimeMissing, 403},
		{"time without offset", "", cbEncrypt(t, c, strings.Replace(cbNotification("T1", now, 1), now.Format(time.RFC3339), now.Format("2006-01-02T15:04:05"), 1), 1), ReasonTimeMissing, 403},
		{"time a number", "", cbEncrypt(t, c, strings.Replace(cbNotification("T1", now, 1), `"`+now.Format(time.RFC3339)+`"`, "1772362800", 1), 1), ReasonTimeMissing, 403},
		{"stale", "", cbEncrypt(t, c, cbNotification("T1", now.Add(-16*time.Minute), 1), 1), ReasonStale, 403},
		{"future", "", cbEncrypt(t, c, cbNotification("T1", now.Add(3*time.Minute), 1), 1), ReasonFuture, 403},
		{"within the skew", "", cbEncrypt(t, c, cbNotification("T1", now.Add(time.Minute), 1), 1), "", 0},
		{"UTC", "", cbEncrypt(t, c, cbNotification("T1", now.UTC(), 1), 1), "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := c.Check(tc.ct, []byte(tc.body), now)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if n.SecretIndex != 0 || n.TransactionType != "SALE" {
					t.Fatalf("accepted as %+v", n)
				}
				return
			}
			if denialReason(err) != tc.reason || denialStatus(err) != tc.status {
				t.Fatalf("got %v (reason %q, status %d), want %s %d", err, denialReason(err), denialStatus(err), tc.reason, tc.status)
			}
			if strings.Contains(err.Error(), "ABCD") || strings.Contains(err.Error(), "Müller") {
				t.Fatalf("error shows a value: %v", err)
			}
		})
	}
	if http.StatusBadRequest != 400 {
		t.Fatal("unreachable")
	}
}

func TestClickBankJSONReplayKey(t *testing.T) {
	now := time.Now()
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte("k")}, RequireTime: true})
	check := func(body string) Notification {
		t.Helper()
		n, err := c.Check("", []byte(body), now)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := check(cbEncrypt(t, c, cbNotification("R1", now, 1), 1))
	// ClickBank's resend: a new IV and a higher attemptCount.
	resend := check(cbEncrypt(t, c, cbNotification("R1", now, 2), 2))
	if first.ReplayKey() == nil || string(first.ReplayKey()) != string(resend.ReplayKey()) {
		t.Fatalf("a resend has another key: %s, %s", first.ReplayKey(), resend.ReplayKey())
	}
	for name, body := range map[string]string{
		"receipt": cbNotification("R2", now, 1),
		"time":    cbNotification("R1", now.Add(-time.Second), 1),
		"type":    strings.Replace(cbNotification("R1", now, 1), `"SALE"`, `"RFND"`, 1),
		"role":    strings.Replace(cbNotification("R1", now, 1), `"VENDOR"`, `"AFFILIATE"`, 1),
		"vendor":  strings.Replace(cbNotification("R1", now, 1), `"testvendor"`, `"othervendor"`, 1),
	} {
		if n := check(cbEncrypt(t, c, body, 3)); string(n.ReplayKey()) == string(first.ReplayKey()) {
			t.Errorf("another %s, the same key", name)
		}
	}
	// Not a form's key: the schemes share the store.
	if !strings.HasPrefix(string(first.ReplayKey()), clickBankKeyPrefix) {
		t.Fatalf("key %s", first.ReplayKey())
	}
	// With dedupe the identity must be complete.
	if _, err := c.Check("", []byte(cbRaw(t, "k", pkcs7(`{"receipt":"R1","transactionType":"SALE"}`))), now); denialReason(err) != ReasonTimeMissing {
		t.Fatalf("no transactionTime under dedupe: %v", err)
	}
}

func TestClickBankJSONPlaceholdersSafe(t *testing.T) {
	now := time.Now()
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte("k")}})
	body := strings.NewReplacer(`"receipt":"R1"`, `"receipt":"R1\n\"forged\": x"`, `"VENDOR"`, `"Jürgen"`).Replace(cbNotification("R1", now, 1))
	n, err := c.Check("", []byte(cbEncrypt(t, c, body, 1)), now)
	if err != nil {
		t.Fatal(err)
	}
	if n.Receipt != "" || n.Role != "" || n.TransactionType != "SALE" {
		t.Fatalf("unsafe identifiers shown: %+v", n)
	}
	for _, s := range []string{"ABCD1234", "ABCD1234-B01", "********", "CANCEL-REBILL", "JV_PARTNER", "6.0"} {
		if !SafeIdentifier(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "a b", "a\nb", "a=b", "Müller", "<script>", strings.Repeat("A", 65), "a@b"} {
		if SafeIdentifier(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestClickBankJSONRotation(t *testing.T) {
	now := time.Now()
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte("new"), []byte("old")}})
	old := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte("old")}})
	n, err := c.Check("", []byte(cbEncrypt(t, old, cbNotification("R1", now, 1), 1)), now)
	if err != nil || n.SecretIndex != 1 {
		t.Fatalf("old secret: %+v, %v", n, err)
	}
	n, err = c.Check("", []byte(cbEncrypt(t, c, cbNotification("R1", now, 1), 1)), now)
	if err != nil || n.SecretIndex != 0 {
		t.Fatalf("new secret: %+v, %v", n, err)
	}
}

func TestClickBankJSONDepth(t *testing.T) {
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte("k")}})
	nest := func(depth int) string {
		// The top-level object is depth 1, as PHP counts.
		return `{"receipt":"R","transactionType":"SALE","x":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
	}
	if _, err := c.Check("", []byte(cbEncrypt(t, c, nest(512), 1)), time.Now()); err != nil {
		t.Fatalf("depth 512 (PHP's limit): %v", err)
	}
	if _, err := c.Check("", []byte(cbRaw(t, "k", pkcs7(nest(513)))), time.Now()); denialReason(err) != ReasonDecryptFailed {
		t.Fatalf("depth 513: %v", err)
	}
}

func TestClickBankJSONEncryptRefuses(t *testing.T) {
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte("k")}})
	iv := make([]byte, 16)
	for _, bad := range []string{``, `[]`, `{"receipt":"R"}`, `{"receipt":"R","transactionType":"SALE","receipt":"S"}`, `{"receipt":"R","transactionType":"SALE"} x`} {
		if _, err := c.Encrypt([]byte(bad), iv); err == nil {
			t.Errorf("Encrypt(%q) accepted", bad)
		}
	}
	if _, err := c.Encrypt([]byte(`{"receipt":"R","transactionType":"SALE"}`), iv[:8]); err == nil {
		t.Error("an 8-byte IV accepted")
	}
	var env map[string]string
	body, err := c.Encrypt([]byte(`{"receipt":"R","transactionType":"SALE"}`), iv)
	if err != nil || json.Unmarshal(body, &env) != nil || len(env) != 2 || env["iv"] != "AAAAAAAAAAAAAAAAAAAAAA==" {
		t.Fatalf("%s, %v", body, err)
	}
	for _, bad := range []ClickBankJSONConfig{{}, {Secrets: [][]byte{{}}}, {Secrets: [][]byte{[]byte("k")}, MaxAge: -1}} {
		if _, err := NewClickBankJSON(bad); err == nil {
			t.Errorf("NewClickBankJSON(%+v) accepted", bad)
		}
	}
}
