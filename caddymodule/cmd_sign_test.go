package caddymodule

import (
	"bytes"
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
