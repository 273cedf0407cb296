package caddymodule

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/postbackedge/caddy-postback/handlers"
)

func runPostbackCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newPostbackCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestSignCommandRegistered(t *testing.T) {
	c, ok := caddycmd.Commands()["postback"]
	if !ok || c.CobraFunc == nil {
		t.Fatal("caddy postback is not registered")
	}
	names := map[string]bool{}
	for _, sub := range newPostbackCommand().Commands() {
		names[sub.Name()] = true
	}
	if !names["sign"] {
		t.Fatalf("caddy postback has no sign subcommand: %v", names)
	}
}

func TestSignCommandOutputVerifies(t *testing.T) {
	t.Setenv("POSTBACK_TEST_SIGN_SECRET", "s3cret")
	cases := []struct {
		name   string
		args   []string
		prefix string
		alg    handlers.Algorithm
	}{
		{"affilicon", []string{"--secret", "{env.POSTBACK_TEST_SIGN_SECRET}"}, "", handlers.AlgorithmSorted},
		{"clickbank", []string{"--secret", "s3cret", "--prefix", "c"}, "c", handlers.AlgorithmSorted},
		{"clickbank v1", []string{"--secret", "s3cret", "--prefix", "c", "--algorithm", "v1"}, "c", handlers.AlgorithmV1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.prefix
			args := append([]string{"sign"}, tc.args...)
			args = append(args, p+"transaction=SALE", p+"custemail=jane@example.com", p+"prodtitle=Guide – Müller & Co",
				p+"custname= Jane ", p+"note=", p+"formula=a=b")
			out, err := runPostbackCommand(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
				t.Fatalf("output %q: want one line", out)
			}
			body := strings.TrimSuffix(out, "\n")
			v, err := handlers.NewITNS(handlers.ITNSConfig{Secrets: [][]byte{[]byte("s3cret")}, Prefix: p, Algorithm: tc.alg})
			if err != nil {
				t.Fatal(err)
			}
			form, _, err := v.Check("application/x-www-form-urlencoded", []byte(body), time.Now())
			if err != nil {
				t.Fatalf("%s: %v", body, err)
			}
			for name, want := range map[string]string{"prodtitle": "Guide – Müller & Co", "custname": " Jane ", "note": "", "formula": "a=b"} {
				if got, _ := form.Get(p + name); got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
			if !strings.HasPrefix(body, p+"transaction=SALE&") {
				t.Errorf("argument order not kept: %s", body)
			}
		})
	}
}

func TestSignCommandTranstimeNow(t *testing.T) {
	out, err := runPostbackCommand(t, "sign", "--secret", "k", "--prefix", "c", "--transtime-now", "ctransaction=SALE")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := handlers.NewITNS(handlers.ITNSConfig{Secrets: [][]byte{[]byte("k")}, Prefix: "c", MaxAge: time.Minute})
	if _, _, err := v.Check("application/x-www-form-urlencoded", []byte(strings.TrimSpace(out)), time.Now()); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
}

func TestSignCommandErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"no secret":            {"sign", "a=1"},
		"no fields":            {"sign", "--secret", "k"},
		"not name=value":       {"sign", "--secret", "k", "transaction"},
		"empty name":           {"sign", "--secret", "k", "=x"},
		"duplicate":            {"sign", "--secret", "k", "a=1", "a=2"},
		"signature given":      {"sign", "--secret", "k", "--prefix", "c", "cverify=ABCDEF12"},
		"bad algorithm":        {"sign", "--secret", "k", "--algorithm", "v3", "a=1"},
		"bad prefix":           {"sign", "--secret", "k", "--prefix", "c_", "a=1"},
		"unset variable":       {"sign", "--secret", "{env.POSTBACK_TEST_UNSET_VARIABLE}", "a=1"},
		"transtime twice":      {"sign", "--secret", "k", "--transtime-now", "transtime=1"},
		"post to nowhere":      {"sign", "--secret", "k", "--post", "http://127.0.0.1:1/itns.php", "--timeout", "2s", "a=1"},
		"post to a bad scheme": {"sign", "--secret", "k", "--post", "ftp://example.invalid/", "a=1"},
	} {
		out, err := runPostbackCommand(t, args...)
		if err == nil {
			t.Errorf("%s: accepted, printed %q", name, out)
		}
		if strings.Contains(out, "k=") || (name == "unset variable" && out != "") {
			t.Errorf("%s: printed %q", name, out)
		}
	}
}

func TestSignCommandPost(t *testing.T) {
	var got []byte
	var ctype string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		ctype = r.Header.Get("Content-Type")
		if r.URL.Path == "/refuse" {
			http.Error(w, "SALE DECLINED", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, "OK")
	}))
	defer srv.Close()

	out, err := runPostbackCommand(t, "sign", "--secret", "k", "--prefix", "c", "--post", srv.URL+"/itns.php", "ctransaction=SALE")
	if err != nil {
		t.Fatal(err)
	}
	if out != "HTTP/1.1 200 OK\nOK" {
		t.Fatalf("output %q", out)
	}
	v, _ := handlers.NewITNS(handlers.ITNSConfig{Secrets: [][]byte{[]byte("k")}, Prefix: "c"})
	if _, _, err := v.Check(ctype, got, time.Now()); err != nil {
		t.Fatalf("posted %q (%s): %v", got, ctype, err)
	}

	out, err = runPostbackCommand(t, "sign", "--secret", "k", "--post", srv.URL+"/refuse", "transaction=SALE")
	if err == nil || !strings.Contains(out, "403") || !strings.Contains(out, "SALE DECLINED") {
		t.Fatalf("refused post: %q, %v; want the response printed and an error", out, err)
	}
}

func runPostbackCommandIn(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newPostbackCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// decryptClickBank opens a clickbank_json body the way the sample does,
// for the tests to read what the command encrypted.
func decryptClickBank(t *testing.T, secret, body string) string {
	t.Helper()
	var env struct{ Notification, IV string }
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	ct, _ := base64.StdEncoding.DecodeString(env.Notification)
	iv, _ := base64.StdEncoding.DecodeString(env.IV)
	b, _ := aes.NewCipher(handlers.ClickBankKey([]byte(secret)))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(ct, ct)
	return string(ct[:len(ct)-int(ct[len(ct)-1])])
}

func TestSignCommandClickBankJSON(t *testing.T) {
	t.Setenv("POSTBACK_TEST_CB_SECRET", "cb-secret")
	c, _ := handlers.NewClickBankJSON(handlers.ClickBankJSONConfig{Secrets: [][]byte{[]byte("cb-secret")}, MaxAge: time.Minute})
	args := []string{"sign", "--format", "clickbank_json", "--secret", "{env.POSTBACK_TEST_CB_SECRET}", "--transtime-now",
		"receipt=TEST1234", "transactionType=TEST", "role=VENDOR", "vendor=myshop", "note=Guide – Müller a%40b", "empty="}
	out, err := runPostbackCommand(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("output %q: want one line", out)
	}
	n, err := c.Check("application/json", []byte(strings.TrimSpace(out)), time.Now())
	if err != nil || n.Receipt != "TEST1234" || n.TransactionType != "TEST" || n.Role != "VENDOR" {
		t.Fatalf("%s: %+v, %v", out, n, err)
	}
	plain := decryptClickBank(t, "cb-secret", strings.TrimSpace(out))
	if !strings.HasPrefix(plain, `{"receipt":"TEST1234","transactionType":"TEST","role":"VENDOR","vendor":"myshop","note":"Guide – Müller a%40b","empty":"","transactionTime":"`) {
		t.Fatalf("plaintext %s", plain)
	}
	again, _ := runPostbackCommand(t, args...)
	if again == out {
		t.Fatal("the same IV twice")
	}

	// A notification on standard input is encrypted as it is.
	note := `{"transactionTime":"2026-03-01T12:00:00+01:00","receipt":"STDIN1","transactionType":"SALE","lineItems":[{"itemNo":"1"}],"version":8.0}`
	out, err = runPostbackCommandIn(t, note+"\n", "sign", "--format", "clickbank_json", "--secret", "cb-secret")
	if err != nil {
		t.Fatal(err)
	}
	if got := decryptClickBank(t, "cb-secret", strings.TrimSpace(out)); got != note {
		t.Fatalf("stdin: encrypted %s, want %s", got, note)
	}
	out, err = runPostbackCommandIn(t, `{"receipt":"STDIN2","transactionType":"SALE"}`, "sign", "--format", "clickbank_json", "--secret", "cb-secret", "--transtime-now")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check("", []byte(strings.TrimSpace(out)), time.Now()); err != nil {
		t.Fatalf("stdin with --transtime-now: %v", err)
	}
}

func TestSignCommandDigistore24(t *testing.T) {
	out, err := runPostbackCommand(t, "sign", "--algorithm", "digistore24", "--secret", "ds-pass",
		"event=on_payment", "order_id=A3NXHEHF", "product_name=Guide – Müller &amp; Co", "custom=", "tags[0]=vip")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := handlers.NewDigistore24(handlers.Digistore24Config{Secrets: [][]byte{[]byte("ds-pass")}})
	body := strings.TrimSpace(out)
	if _, err := d.Check("application/x-www-form-urlencoded", []byte(body), time.Now()); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	if !strings.HasPrefix(body, "event=on_payment&order_id=A3NXHEHF&") || !strings.Contains(body, "&sha_sign=") {
		t.Fatalf("body %s", body)
	}
}

func TestSignCommandSenderErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		stdin string
		args  []string
	}{
		"json with a prefix":           {"", []string{"sign", "--secret", "k", "--format", "clickbank_json", "--prefix", "c", "receipt=R", "transactionType=SALE"}},
		"json with v1":                 {"", []string{"sign", "--secret", "k", "--format", "clickbank_json", "--algorithm", "v1", "receipt=R", "transactionType=SALE"}},
		"unknown format":               {"", []string{"sign", "--secret", "k", "--format", "xml", "a=1"}},
		"json without receipt":         {"", []string{"sign", "--secret", "k", "--format", "clickbank_json", "transactionType=SALE"}},
		"json field twice":             {"", []string{"sign", "--secret", "k", "--format", "clickbank_json", "receipt=R", "receipt=S", "transactionType=SALE"}},
		"json nothing on stdin":        {"", []string{"sign", "--secret", "k", "--format", "clickbank_json"}},
		"json stdin not an object":     {"[1,2]", []string{"sign", "--secret", "k", "--format", "clickbank_json"}},
		"json stdin member twice":      {`{"receipt":"R","receipt":"S","transactionType":"SALE"}`, []string{"sign", "--secret", "k", "--format", "clickbank_json"}},
		"json transtime twice":         {`{"receipt":"R","transactionType":"SALE","transactionTime":"2026-01-01T00:00:00Z"}`, []string{"sign", "--secret", "k", "--format", "clickbank_json", "--transtime-now"}},
		"digistore24 with a prefix":    {"", []string{"sign", "--secret", "k", "--algorithm", "digistore24", "--prefix", "c", "a=1"}},
		"digistore24 transtime":        {"", []string{"sign", "--secret", "k", "--algorithm", "digistore24", "--transtime-now", "a=1"}},
		"digistore24 signature given":  {"", []string{"sign", "--secret", "k", "--algorithm", "digistore24", "sha_sign=X"}},
		"digistore24 value and array":  {"", []string{"sign", "--secret", "k", "--algorithm", "digistore24", "a=1", "a[b]=2"}},
		"json no secret":               {"", []string{"sign", "--format", "clickbank_json", "receipt=R", "transactionType=SALE"}},
		"json secret variable not set": {"", []string{"sign", "--format", "clickbank_json", "--secret", "{env.POSTBACK_TEST_UNSET_VARIABLE}", "receipt=R", "transactionType=SALE"}},
	} {
		out, err := runPostbackCommandIn(t, tc.stdin, tc.args...)
		if err == nil {
			t.Errorf("%s: accepted, printed %q", name, out)
		}
	}
}

func TestSignCommandPostJSON(t *testing.T) {
	var ctype string
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		ctype = r.Header.Get("Content-Type")
		_, _ = io.WriteString(w, "OK")
	}))
	defer srv.Close()
	if _, err := runPostbackCommand(t, "sign", "--format", "clickbank_json", "--secret", "k", "--post", srv.URL, "receipt=R1", "transactionType=TEST"); err != nil {
		t.Fatal(err)
	}
	c, _ := handlers.NewClickBankJSON(handlers.ClickBankJSONConfig{Secrets: [][]byte{[]byte("k")}})
	if _, err := c.Check(ctype, got, time.Now()); err != nil || ctype != "application/json" {
		t.Fatalf("posted %q (%s): %v", got, ctype, err)
	}
}
