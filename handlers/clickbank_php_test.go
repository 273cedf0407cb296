package handlers

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// genClickBankNotifications builds n INS notifications whose strings come
// from edgeValues (umlauts, an en dash, empty values, %40, quotes,
// control characters), as JSON texts.
func genClickBankNotifications(seed uint64, n int, now time.Time) []string {
	rng := rand.New(rand.NewPCG(seed, 0xcb))
	pick := func() string { return edgeValues[rng.IntN(len(edgeValues))] }
	out := make([]string, n)
	for i := range out {
		note := map[string]any{
			"transactionTime":    now.Add(-time.Duration(rng.IntN(600)) * time.Second).Format(time.RFC3339),
			"receipt":            fmt.Sprintf("R%07dX", rng.IntN(1e7)),
			"transactionType":    []string{"SALE", "BILL", "RFND", "CGBK", "TEST_SALE"}[rng.IntN(5)],
			"vendor":             "testvendor",
			"affiliate":          pick(),
			"role":               []string{"VENDOR", "AFFILIATE", "JV_PARTNER"}[rng.IntN(3)],
			"totalAccountAmount": float64(rng.IntN(100000)) / 100,
			"currency":           "EUR",
			"lineItems": []any{map[string]any{
				"itemNo": "1", "productTitle": pick() + " – " + pick(), "recurring": rng.IntN(2) == 0, "quantity": 1 + rng.IntN(3),
			}},
			"customer": map[string]any{"billing": map[string]any{
				"fullName": pick() + " Müller", "email": "a%40" + pick(), "address": map[string]any{"state": "", "country": "DE"},
			}},
			"vendorVariables": map[string]any{"note": pick(), "empty": ""},
			"version":         6.0,
			"attemptCount":    1 + rng.IntN(3),
		}
		b, err := json.Marshal(note)
		if err != nil {
			panic(err)
		}
		out[i] = string(b)
	}
	return out
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("%v: %s", err, a)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return reflect.DeepEqual(x, y)
}

// ClickBank's published PHP sample (openssl_decrypt) decrypts what Go
// encrypts to the same notification, and Go accepts what PHP's
// openssl_encrypt produces, under the same secret only.
func TestClickBankJSONCrossCheckPHP(t *testing.T) {
	php := testutil.NeedTool(t, "php") // php-cli with openssl
	const secret = "MY-SECRET key ü"
	now := time.Now()
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte(secret)}, MaxAge: 15 * time.Minute})
	wrong := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte(secret + "x")}})
	notes := genClickBankNotifications(1, 100, now)

	// Go encrypts, the PHP sample decrypts; a wrong secret gives PHP null.
	var bodies []string
	for i, n := range notes {
		iv := make([]byte, 16)
		iv[0], iv[1] = byte(i), byte(i>>8)
		good, err := c.Encrypt([]byte(n), iv)
		if err != nil {
			t.Fatal(err)
		}
		bad, err := wrong.Encrypt([]byte(n), iv)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, string(good), string(bad))
	}
	for _, mode := range []string{"decrypt", "decrypt_data", "decrypt_mcrypt"} {
		var got []*string
		runPHP(t, php, "clickbank.php", map[string]any{"secret": secret, "mode": mode, "items": bodies}, &got)
		if len(got) != len(bodies) {
			t.Fatalf("%s: php answered %d of %d", mode, len(got), len(bodies))
		}
		for i, g := range got {
			if i%2 == 1 {
				if g != nil {
					t.Fatalf("%s: body %d under the wrong secret decrypted to %s", mode, i, *g)
				}
				continue
			}
			if g == nil || !jsonEqual(t, *g, notes[i/2]) {
				t.Fatalf("%s: notification %d: PHP read %v, Go sent %s", mode, i/2, g, notes[i/2])
			}
		}
	}

	// PHP encrypts (as a ClickBank sender), Go decrypts.
	var phpBodies []string
	runPHP(t, php, "clickbank.php", map[string]any{"secret": secret, "mode": "encrypt", "items": notes}, &phpBodies)
	if len(phpBodies) != len(notes) {
		t.Fatalf("php encrypted %d of %d", len(phpBodies), len(notes))
	}
	for i, body := range phpBodies {
		n, err := c.Check("application/json", []byte(body), now)
		if err != nil {
			t.Fatalf("notification %d: Go refuses PHP's: %v\n%s", i, err, body)
		}
		var want map[string]any
		_ = json.Unmarshal([]byte(notes[i]), &want)
		if n.Receipt != want["receipt"] || n.TransactionType != want["transactionType"] || n.Role != want["role"] {
			t.Fatalf("notification %d: read as %+v", i, n)
		}
		if _, err := wrong.Check("application/json", []byte(body), now); denialReason(err) != ReasonDecryptFailed {
			t.Fatalf("notification %d under the wrong secret: %v", i, err)
		}
	}

	// A zero-padded notification (mcrypt's way): accepted here as the
	// mcrypt-era sample read it; the current openssl sample refuses it (null),
	// which fails safe.
	zero := cbRaw(t, secret, `{"receipt":"Z1","transactionType":"SALE","transactionTime":"`+now.Format(time.RFC3339)+`"}`)
	if _, err := c.Check("", []byte(zero), now); err != nil {
		t.Fatalf("zero padding: %v", err)
	}
	for mode, wantNull := range map[string]bool{"decrypt": true, "decrypt_mcrypt": false} {
		var got []*string
		runPHP(t, php, "clickbank.php", map[string]any{"secret": secret, "mode": mode, "items": []string{zero}}, &got)
		if (got[0] == nil) != wantNull {
			t.Errorf("zero padding, %s: PHP read %v", mode, got[0])
		}
	}

	// The published test notification, decrypted by the PHP sample too.
	var sample []*string
	runPHP(t, php, "clickbank.php", map[string]any{"secret": cbSampleSecret, "mode": "decrypt", "items": []string{cbSampleBody}}, &sample)
	if sample[0] == nil || !strings.Contains(*sample[0], `"receipt":"********"`) {
		t.Fatalf("PHP reads the published sample as %v", sample[0])
	}
}

// openssl enc with the key's 32 ASCII bytes in hex is a third
// implementation of the same cipher.
func TestClickBankJSONCrossCheckOpenSSL(t *testing.T) {
	openssl := testutil.NeedTool(t, "openssl")
	const secret = "openssl-secret-ß"
	now := time.Now()
	c := mustClickBank(t, ClickBankJSONConfig{Secrets: [][]byte{[]byte(secret)}, MaxAge: 15 * time.Minute})
	keyHex := hex.EncodeToString(ClickBankKey([]byte(secret)))
	run := func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	for i, note := range genClickBankNotifications(2, 20, now) {
		iv := bytes.Repeat([]byte{byte(i + 1)}, 16)
		ivHex := hex.EncodeToString(iv)
		// openssl encrypts, Go verifies.
		ct := run([]byte(note), "enc", "-aes-256-cbc", "-K", keyHex, "-iv", ivHex)
		body := fmt.Sprintf(`{"notification":%q,"iv":%q}`, base64.StdEncoding.EncodeToString(ct), base64.StdEncoding.EncodeToString(iv))
		if _, err := c.Check("", []byte(body), now); err != nil {
			t.Fatalf("notification %d: Go refuses openssl's: %v", i, err)
		}
		// Go encrypts, openssl decrypts (and checks the PKCS#7 padding).
		goBody, err := c.Encrypt([]byte(note), iv)
		if err != nil {
			t.Fatal(err)
		}
		var env struct{ Notification string }
		_ = json.Unmarshal(goBody, &env)
		raw, _ := base64.StdEncoding.DecodeString(env.Notification)
		if !bytes.Equal(raw, ct) {
			t.Fatalf("notification %d: Go's ciphertext differs from openssl's", i)
		}
		if plain := run(raw, "enc", "-d", "-aes-256-cbc", "-K", keyHex, "-iv", ivHex); string(plain) != note {
			t.Fatalf("notification %d: openssl decrypts Go's to %q", i, plain)
		}
	}
}
