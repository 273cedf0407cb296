package caddymodule

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/postbackedge/caddy-postback/handlers"
)

// provisionFilter provisions f outside a running Caddy and returns the
// observed log.
func provisionFilter(t *testing.T, f *PostbackFilter) (*observer.ObservedLogs, error) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	core, logs := observer.New(zapcore.DebugLevel)
	if err := f.provision(ctx, zap.New(core)); err != nil {
		return logs, err
	}
	return logs, f.Validate()
}

func mustProvision(t *testing.T, f *PostbackFilter) *observer.ObservedLogs {
	t.Helper()
	logs, err := provisionFilter(t, f)
	if err != nil {
		t.Fatalf("provision %+v: %v", f, err)
	}
	return logs
}

// filteredCount reads caddy_postback_filtered_total{reason}.
func filteredCount(t *testing.T, f *PostbackFilter, reason string) float64 {
	t.Helper()
	var m dto.Metric
	if err := f.denier.metrics.Filtered.WithLabelValues(reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// recordingNext is the rest of the chain: it records what it was given.
type recordingNext struct {
	called  int
	body    []byte
	rawBody io.ReadCloser
}

func (n *recordingNext) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.called++
	n.rawBody = r.Body
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	n.body = b
	w.WriteHeader(http.StatusOK)
	_, err = w.Write([]byte("SALE OK\n1234"))
	return err
}

// newRequest builds a request as Caddy's server hands it to handlers: with
// a replacer and the client IP Caddy determined.
func newRequest(method, target, clientIP string, body io.Reader) *http.Request {
	r := httptest.NewRequest(method, target, body)
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{
		caddyhttp.ClientIPVarKey: clientIP,
	})
	return r.WithContext(ctx)
}

func serve(f *PostbackFilter, r *http.Request) (*httptest.ResponseRecorder, *recordingNext, error) {
	w := httptest.NewRecorder()
	next := &recordingNext{}
	err := f.ServeHTTP(w, r, next)
	return w, next, err
}

// handlerStatus is the status of a caddyhttp.HandlerError, 0 if err is not one.
func handlerStatus(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		return he.StatusCode
	}
	return 0
}

const postBody = "xs_nats=ref&username=u&password=secretpw&cc=4111111111111111&cvv=123"

func TestFilterAllowsListedSenderWithBodyIntact(t *testing.T) {
	f := &PostbackFilter{Allow: []string{"203.0.113.10", "2001:db8::/32"}}
	mustProvision(t, f)
	for _, ip := range []string{"203.0.113.10", "::ffff:203.0.113.10", "2001:db8::7"} {
		r := newRequest("POST", "/signup/process_gateway.php", ip, strings.NewReader(postBody))
		w, next, err := serve(f, r)
		if err != nil {
			t.Fatalf("%s: %v", ip, err)
		}
		if next.called != 1 || string(next.body) != postBody || w.Code != 200 {
			t.Errorf("%s: next called %d times with %q (status %d)", ip, next.called, next.body, w.Code)
		}
		// Later handlers get the captured body and do not read the wire again.
		if _, ok := next.rawBody.(*handlers.CapturedBody); !ok {
			t.Errorf("%s: next got body of type %T", ip, next.rawBody)
		}
		if r.ContentLength != int64(len(postBody)) {
			t.Errorf("ContentLength = %d", r.ContentLength)
		}
	}
}

func TestFilterDeniesUnlistedSenderAsHandlerError(t *testing.T) {
	f := &PostbackFilter{Allow: []string{"203.0.113.10"}}
	logs := mustProvision(t, f)
	before := filteredCount(t, f, handlers.ReasonIP)
	for _, ip := range []string{"203.0.113.11", "", "@", "not-an-ip"} {
		r := newRequest("POST", "/itns.php?cc=4111111111111111&password=hunter2", ip, strings.NewReader(postBody))
		w, next, err := serve(f, r)
		if next.called != 0 {
			t.Errorf("%q: reached the script", ip)
		}
		if handlerStatus(err) != http.StatusForbidden {
			t.Errorf("%q: err = %v, want a 403 handler error", ip, err)
		}
		if d, ok := asDenial(err); !ok || d.Reason != handlers.ReasonIP {
			t.Errorf("%q: err %v does not carry the ip Denial", ip, err)
		}
		if w.Body.Len() != 0 {
			t.Errorf("%q: wrote %q; the error handler should write", ip, w.Body.String())
		}
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if v, _ := repl.GetString("postback.deny_reason"); v != handlers.ReasonIP {
			t.Errorf("{postback.deny_reason} = %q", v)
		}
	}
	if got := filteredCount(t, f, handlers.ReasonIP) - before; got != 4 {
		t.Errorf("filtered_total{reason=ip} went up by %v, want 4", got)
	}
	denials := logs.FilterMessage("request denied").All()
	if len(denials) != 4 {
		t.Fatalf("%d denial log lines, want 4 (one per request)", len(denials))
	}
	e := denials[0].ContextMap()
	want := map[string]any{"reason": "ip", "client_ip": "203.0.113.11", "method": "POST", "path": "/itns.php", "status": int64(403)}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("log field %s = %v, want %v", k, e[k], v)
		}
	}
	// Neither query values nor the body may reach the log.
	for _, entry := range logs.All() {
		line, _ := json.Marshal(entry.ContextMap())
		for _, secret := range []string{"4111111111111111", "hunter2", "secretpw", "cvv"} {
			if strings.Contains(entry.Message+string(line), secret) {
				t.Errorf("log line %s %s leaks %q", entry.Message, line, secret)
			}
		}
	}
}

func TestFilterMethodPolicy(t *testing.T) {
	f := &PostbackFilter{} // default: POST only, any sender
	mustProvision(t, f)
	for _, m := range []string{"GET", "HEAD", "OPTIONS", "PUT", "post"} {
		w, next, err := serve(f, newRequest(m, "/process_gateway.php", "198.51.100.1", nil))
		if next.called != 0 {
			t.Errorf("%s reached the script", m)
		}
		if handlerStatus(err) != http.StatusMethodNotAllowed {
			t.Errorf("%s: err = %v, want 405", m, err)
		}
		if got := w.Header().Get("Allow"); got != "POST" {
			t.Errorf("%s: Allow = %q, want POST", m, got)
		}
	}

	// NATS extended sales: GET or POST. A GET without a body is passed on
	// untouched.
	g := &PostbackFilter{Methods: []string{"get", "POST"}}
	mustProvision(t, g)
	r := newRequest("GET", "/process_extended.php?extended_id=x&action=SALE", "198.51.100.1", nil)
	r.Body = http.NoBody
	_, next, err := serve(g, r)
	if err != nil || next.called != 1 || next.rawBody != http.NoBody {
		t.Errorf("GET: err %v, called %d, body %T", err, next.called, next.rawBody)
	}
	w, _, err := serve(g, newRequest("DELETE", "/process_extended.php", "198.51.100.1", nil))
	if handlerStatus(err) != 405 || w.Header().Get("Allow") != "GET, POST" {
		t.Errorf("DELETE: err %v, Allow %q", err, w.Header().Get("Allow"))
	}
}

func TestFilterChecksSenderBeforeMethod(t *testing.T) {
	f := &PostbackFilter{Allow: []string{"203.0.113.10"}}
	mustProvision(t, f)
	w, _, err := serve(f, newRequest("GET", "/", "192.0.2.1", nil))
	if handlerStatus(err) != 403 || w.Header().Get("Allow") != "" {
		t.Errorf("unknown sender with GET: err %v, Allow %q; want 403 and no Allow", err, w.Header().Get("Allow"))
	}
}

func TestFilterMaxBody(t *testing.T) {
	f := &PostbackFilter{MaxBody: 16}
	mustProvision(t, f)
	before := filteredCount(t, f, handlers.ReasonBodyTooLarge)

	exact := strings.Repeat("a", 16)
	_, next, err := serve(f, newRequest("POST", "/", "192.0.2.1", strings.NewReader(exact)))
	if err != nil || string(next.body) != exact {
		t.Errorf("exactly max_body: err %v, next got %q", err, next.body)
	}

	// Known length over the limit, and unknown length (chunked) over it.
	over := strings.Repeat("a", 17)
	known := newRequest("POST", "/", "192.0.2.1", strings.NewReader(over))
	chunked := newRequest("POST", "/", "192.0.2.1", io.NopCloser(strings.NewReader(over)))
	chunked.ContentLength = -1
	for name, r := range map[string]*http.Request{"known": known, "chunked": chunked} {
		_, next, err := serve(f, r)
		if next.called != 0 || handlerStatus(err) != http.StatusRequestEntityTooLarge {
			t.Errorf("%s length: called %d, err %v; want 413 and no script", name, next.called, err)
		}
	}
	if got := filteredCount(t, f, handlers.ReasonBodyTooLarge) - before; got != 2 {
		t.Errorf("filtered_total{reason=body_too_large} went up by %v, want 2", got)
	}

	// Default is 1 MiB.
	d := &PostbackFilter{}
	mustProvision(t, d)
	_, next, err = serve(d, newRequest("POST", "/", "192.0.2.1", bytes.NewReader(make([]byte, 1<<20))))
	if err != nil || len(next.body) != 1<<20 {
		t.Errorf("1 MiB body under the default: err %v, %d bytes passed", err, len(next.body))
	}
	_, _, err = serve(d, newRequest("POST", "/", "192.0.2.1", bytes.NewReader(make([]byte, 1<<20+1))))
	if handlerStatus(err) != 413 {
		t.Errorf("1 MiB + 1 under the default: err %v, want 413", err)
	}
}

type brokenBody struct{}

func (brokenBody) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
func (brokenBody) Close() error             { return nil }

func TestFilterUnreadableBody(t *testing.T) {
	f := &PostbackFilter{}
	logs := mustProvision(t, f)
	r := newRequest("POST", "/", "192.0.2.1", nil)
	r.Body, r.ContentLength = brokenBody{}, -1
	_, next, err := serve(f, r)
	if next.called != 0 || handlerStatus(err) != http.StatusBadRequest {
		t.Errorf("broken body: called %d, err %v; want 400", next.called, err)
	}
	if n := logs.FilterField(zap.String("reason", handlers.ReasonBodyUnreadable)).Len(); n != 1 {
		t.Errorf("%d log lines for the unreadable body, want 1", n)
	}
}

func TestFilterDenyResponse(t *testing.T) {
	// The NATS process gateway answers a refused sender in its own words.
	f := &PostbackFilter{
		Allow:        []string{"203.0.113.10"},
		DenyResponse: DenyResponse{Status: "200", Body: "SALE DECLINED\nNOT ALLOWED IP"},
	}
	mustProvision(t, f)
	w, next, err := serve(f, newRequest("POST", "/", "192.0.2.1", strings.NewReader(postBody)))
	if err != nil || next.called != 0 {
		t.Fatalf("err %v, called %d", err, next.called)
	}
	if w.Code != 200 || w.Body.String() != "SALE DECLINED\nNOT ALLOWED IP" {
		t.Errorf("got %d %q", w.Code, w.Body.String())
	}

	// Without deny_status the denial's own status is kept; the reason is a
	// placeholder; a 405 still carries Allow.
	g := &PostbackFilter{DenyResponse: DenyResponse{Body: "denied: {postback.deny_reason}"}}
	mustProvision(t, g)
	w, _, err = serve(g, newRequest("PUT", "/", "192.0.2.1", nil))
	if err != nil || w.Code != 405 || w.Body.String() != "denied: method" || w.Header().Get("Allow") != "POST" {
		t.Errorf("got err %v, %d %q Allow %q", err, w.Code, w.Body.String(), w.Header().Get("Allow"))
	}
}

func TestFilterTooEarly(t *testing.T) {
	f := &PostbackFilter{Allow: []string{"203.0.113.10"}}
	mustProvision(t, f)
	r := newRequest("POST", "/", "203.0.113.10", strings.NewReader(postBody))
	r.TLS = &tls.ConnectionState{HandshakeComplete: false}
	_, next, err := serve(f, r)
	if next.called != 0 || handlerStatus(err) != http.StatusTooEarly {
		t.Errorf("0-RTT request: called %d, err %v; want 425", next.called, err)
	}
	r.TLS = &tls.ConnectionState{HandshakeComplete: true}
	if _, next, err = serve(f, r); err != nil || next.called != 1 {
		t.Errorf("after handshake: called %d, err %v", next.called, err)
	}
}

func TestFilterProvisionWarnsOnEmptyAllowlist(t *testing.T) {
	logs := mustProvision(t, &PostbackFilter{})
	warn := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("every sender").Len()
	if warn != 1 {
		t.Errorf("%d warnings about an empty allowlist, want 1", warn)
	}
	logs = mustProvision(t, &PostbackFilter{Allow: []string{"203.0.113.10"}})
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 0 {
		t.Errorf("%d warnings with an allowlist, want 0", n)
	}
}

func TestFilterAllowPlaceholders(t *testing.T) {
	t.Setenv("PB_TEST_SENDERS", "203.0.113.10, 198.51.100.0/24 2001:db8::1")
	dir := t.TempDir()
	file := filepath.Join(dir, "senders")
	if err := os.WriteFile(file, []byte("192.0.2.7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &PostbackFilter{Allow: []string{"{env.PB_TEST_SENDERS}", "{file." + file + "}", "10.0.0.1"}}
	mustProvision(t, f)
	want := []string{"203.0.113.10", "198.51.100.0/24", "2001:db8::1", "192.0.2.7", "10.0.0.1"}
	if got := f.allow.Strings(); !slices.Equal(got, want) {
		t.Errorf("allowlist = %q, want %q", got, want)
	}

	t.Setenv("PB_TEST_EMPTY", "")
	t.Setenv("PB_TEST_BAD", "203.0.113.10 300.1.1.1")
	bad := map[string]string{
		"{env.PB_TEST_EMPTY}":            "expands to nothing",
		"{env.PB_TEST_UNSET_FOR_SURE}":   "expands to nothing",
		"{file./nonexistent/pb-senders}": "expands to nothing",
		"{env.PB_TEST_BAD}":              "300.1.1.1",
		"{http.request.remote.host}":     "not known at load time",
		"203.0.113.{env.PB_TEST_EMPTY}":  "203.0.113.",
	}
	for entry, msg := range bad {
		_, err := provisionFilter(t, &PostbackFilter{Allow: []string{entry}})
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), entry) {
			t.Errorf("allow %q: err = %v, want one naming the entry and %q", entry, err, msg)
		}
	}
}

func TestFilterProvisionErrors(t *testing.T) {
	cases := []struct {
		f    PostbackFilter
		want string
	}{
		{PostbackFilter{Allow: []string{"198.51.100.0/33"}}, `"198.51.100.0/33"`},
		{PostbackFilter{Allow: []string{"example.com"}}, `"example.com"`},
		{PostbackFilter{Methods: []string{"POST", "BREW"}}, `"BREW"`},
		{PostbackFilter{MaxBody: -1}, "max_body -1"},
		{PostbackFilter{DenyResponse: DenyResponse{Status: "abc"}}, `deny_status "abc"`},
	}
	for _, c := range cases {
		_, err := provisionFilter(t, &c.f)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want one containing %s", c.f, err, c.want)
		}
	}
}

func TestFilterJSON(t *testing.T) {
	// deny_status and deny_body sit at the top level, next to the filter's
	// own fields.
	in := `{"methods":["POST"],"allow":["203.0.113.10","2001:db8::/32"],"max_body":65536,"deny_status":200,"deny_body":"SALE DECLINED\nNOT ALLOWED IP"}`
	var f PostbackFilter
	if err := json.Unmarshal([]byte(in), &f); err != nil {
		t.Fatal(err)
	}
	if f.MaxBody != 65536 || f.Status != "200" || f.Body != "SALE DECLINED\nNOT ALLOWED IP" ||
		!slices.Equal(f.Allow, []string{"203.0.113.10", "2001:db8::/32"}) {
		t.Errorf("decoded %+v", f)
	}
	out, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var round map[string]any
	if err := json.Unmarshal(out, &round); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"methods", "allow", "max_body", "deny_status", "deny_body"} {
		if _, ok := round[k]; !ok {
			t.Errorf("encoded %s lacks %q", out, k)
		}
	}
	if empty, _ := json.Marshal(PostbackFilter{}); string(empty) != "{}" {
		t.Errorf("zero value encodes as %s, want {}", empty)
	}
}

// adaptError adapts a Caddyfile and returns the adapter's error.
func adaptError(t *testing.T, caddyfile string) error {
	t.Helper()
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	return err
}

func TestFilterCaddyfileErrorsNameValueAndLine(t *testing.T) {
	cases := []struct {
		block string // the lines inside postback_filter { }, starting on line 3
		want  []string
	}{
		{"methods POST\n\tallow 203.0.113.10 198.51.100.0/33", []string{"198.51.100.0/33", "Caddyfile:4"}},
		{"allow 2001:db8::/129", []string{"2001:db8::/129", "Caddyfile:3"}},
		{"allow shop.example.com", []string{"shop.example.com", "Caddyfile:3"}},
		{"allow", []string{"Caddyfile:3"}},
		{"methods POST BREW", []string{`"BREW"`, "Caddyfile:3"}},
		{"methods", []string{"Caddyfile:3"}},
		{"max_body 12XB", []string{`"12XB"`, "Caddyfile:3"}},
		{"max_body 0", []string{`"0"`, "Caddyfile:3"}},
		{"max_body 1KiB 2KiB", []string{"Caddyfile:3"}},
		{"max_body 1KiB\n\tmax_body 2KiB", []string{"already specified", "Caddyfile:4"}},
		{"deny_status abc", []string{`"abc"`, "Caddyfile:3"}},
		{"deny_status 42", []string{`"42"`, "Caddyfile:3"}},
		{"deny_body", []string{"Caddyfile:3"}},
		{"allow_ip 203.0.113.10", []string{`"allow_ip"`, "Caddyfile:3"}},
	}
	for _, c := range cases {
		cf := ":8080 {\n\tpostback_filter {\n\t" + c.block + "\n\t}\n\trespond ok\n}\n"
		err := adaptError(t, cf)
		if err == nil {
			t.Errorf("%q adapted without error", c.block)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", c.block, err, w)
			}
		}
	}
	// Arguments on the directive line itself are refused.
	err := adaptError(t, ":8080 {\n\tpostback_filter 203.0.113.10\n}\n")
	if err == nil || !strings.Contains(err.Error(), "Caddyfile:2") {
		t.Errorf("inline argument: err = %v", err)
	}
}

func TestFilterCaddyfileMaxBodySizes(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "64KiB": 65536, "64kb": 64000, "1MiB": 1 << 20, "1.5MB": 1500000} {
		var f PostbackFilter
		d := caddyfile.NewTestDispenser("postback_filter {\n\tmax_body " + in + "\n}")
		if err := f.UnmarshalCaddyfile(d); err != nil {
			t.Errorf("max_body %s: %v", in, err)
			continue
		}
		if f.MaxBody != want {
			t.Errorf("max_body %s = %d, want %d", in, f.MaxBody, want)
		}
	}
}

// PHP keeps the first max_input_vars (1000) fields and drops the rest
// silently; the filter refuses such a post instead of letting the script
// act on part of it.
func TestFilterRefusesTooManyFields(t *testing.T) {
	f := &PostbackFilter{Methods: []string{"GET", "POST"}, MaxFields: 3}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := f.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error { w.WriteHeader(204); return nil })
	for _, c := range []struct {
		method, target, ctype, body string
		want                        int
	}{
		{"POST", "/", "application/x-www-form-urlencoded", "a=1&b=2&c=3", 204},
		{"POST", "/", "application/x-www-form-urlencoded", "a=1&b=2&c=3&d=4", 400},
		{"POST", "/", "text/plain", "a=1&b=2&c=3&d=4", 204}, // not a form: only max_body applies
		{"GET", "/?a=1&b=2&c=3&d=4", "", "", 400},
		{"GET", "/?a=1&b=2", "", "", 204},
	} {
		r := httptest.NewRequest(c.method, c.target, strings.NewReader(c.body))
		if c.ctype != "" {
			r.Header.Set("Content-Type", c.ctype)
		}
		repl := caddy.NewReplacer()
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
		w := httptest.NewRecorder()
		err := f.ServeHTTP(w, r, next)
		status := w.Code
		var he caddyhttp.HandlerError
		if errors.As(err, &he) {
			status = he.StatusCode
		}
		if status != c.want {
			t.Errorf("%s %s (%s): status %d, err %v; want %d", c.method, c.target, c.ctype, status, err, c.want)
		}
		if c.want == 400 && repl.ReplaceAll("{postback.deny_reason}", "") != "too_many_fields" {
			t.Errorf("%s %s: deny reason %q", c.method, c.target, repl.ReplaceAll("{postback.deny_reason}", ""))
		}
	}
}

// A legacy sender that wants a 200 refusal: the log line says 200, the
// status sent, not the denial's own 403 (the access log and this line must
// agree when an operator reads them side by side).
func TestFilterDenialLogsTheStatusSent(t *testing.T) {
	f := &PostbackFilter{Allow: []string{"203.0.113.10"},
		DenyResponse: DenyResponse{Status: "200", Body: "SALE DECLINED\nNOT ALLOWED IP"}}
	logs := mustProvision(t, f)
	w, next, err := serve(f, newRequest("POST", "/process_gateway.php", "203.0.113.11", strings.NewReader(postBody)))
	if err != nil || next.called != 0 || w.Code != http.StatusOK || w.Body.String() != "SALE DECLINED\nNOT ALLOWED IP" {
		t.Fatalf("refusal: %d %q, err %v, script called %d times", w.Code, w.Body.String(), err, next.called)
	}
	denials := logs.FilterMessage("request denied").All()
	if len(denials) != 1 {
		t.Fatalf("%d denial log lines, want 1", len(denials))
	}
	if got := denials[0].ContextMap()["status"]; got != int64(http.StatusOK) {
		t.Errorf("logged status %v, want the 200 sent", got)
	}
}
