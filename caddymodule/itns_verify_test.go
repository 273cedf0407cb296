package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
)

func TestITNSVerifyCaddyfile(t *testing.T) {
	t.Setenv("ITNS_SECRET", "s1") // checked when adapted (TestCaddyfileChecksEnvAtAdapt)
	v := new(ITNSVerify)
	err := v.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`itns_verify {
		secret {env.ITNS_SECRET} {file./etc/caddy/itns.old}
		secret third
		prefix c
		algorithm v1
		max_age 15m
		future_skew 30s
		dedupe 24h
		dedupe_wait 5s
		max_body 64KiB
		deny_status 200
		deny_body "SALE DECLINED\n{postback.deny_reason}"
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := ITNSVerify{
		Secrets:    []string{"{env.ITNS_SECRET}", "{file./etc/caddy/itns.old}", "third"},
		Prefix:     "c",
		Algorithm:  "v1",
		MaxAge:     caddy.Duration(15 * time.Minute),
		FutureSkew: caddy.Duration(30 * time.Second),
		Dedupe:     caddy.Duration(24 * time.Hour),
		DedupeWait: caddy.Duration(5 * time.Second),
		MaxBody:    64 << 10,
		DenyResponse: DenyResponse{
			Status: "200",
			Body:   "SALE DECLINED\n{postback.deny_reason}",
		},
	}
	if strings.Join(v.Secrets, " ") != strings.Join(want.Secrets, " ") || v.Prefix != want.Prefix ||
		v.Algorithm != want.Algorithm || v.MaxAge != want.MaxAge || v.FutureSkew != want.FutureSkew ||
		v.Dedupe != want.Dedupe || v.DedupeWait != want.DedupeWait || v.MaxBody != want.MaxBody ||
		v.DenyResponse != want.DenyResponse {
		t.Fatalf("got %+v\nwant %+v", *v, want)
	}
}

func TestITNSVerifyCaddyfileErrors(t *testing.T) {
	cases := map[string]string{
		"no secret":             `itns_verify { prefix c }`,
		"no block":              `itns_verify`,
		"inline argument":       `itns_verify s3cret`,
		"secret without value":  `itns_verify { secret }`,
		"bad prefix":            `itns_verify { secret s; prefix c- }`,
		"bad algorithm":         `itns_verify { secret s; algorithm v2 }`,
		"bad max_age":           `itns_verify { secret s; max_age soon }`,
		"zero max_age":          `itns_verify { secret s; max_age 0s }`,
		"two prefixes":          `itns_verify { secret s; prefix c; prefix d }`,
		"dedupe_wait alone":     `itns_verify { secret s; dedupe_wait 5s }`,
		"future_skew alone":     `itns_verify { secret s; future_skew 5s }`,
		"bad max_body":          `itns_verify { secret s; max_body lots }`,
		"bad deny_status":       `itns_verify { secret s; deny_status abc }`,
		"unknown option":        `itns_verify { secret s; verify_field x }`,
		"max_age two arguments": `itns_verify { secret s; max_age 1m 2m }`,
	}
	for name, in := range cases {
		in = strings.NewReplacer("; ", "\n", "{ ", "{\n", " }", "\n}").Replace(in)
		if err := new(ITNSVerify).UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil {
			t.Errorf("%s: accepted %q", name, in)
		}
	}
}

func TestITNSResolveSecrets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "itns.secret")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POSTBACK_TEST_ITNS_SECRET", "from-env")
	got, err := resolveSecrets(caddy.NewReplacer(), []string{"{env.POSTBACK_TEST_ITNS_SECRET}", "{file." + file + "}", "literal"})
	if err != nil {
		t.Fatal(err)
	}
	if string(got[0]) != "from-env" || string(got[1]) != "from-file" || string(got[2]) != "literal" {
		t.Fatalf("got %q", got)
	}
	for _, bad := range []string{"{env.POSTBACK_TEST_UNSET_VARIABLE}", "{file." + filepath.Join(dir, "missing") + "}", "{unknown.placeholder}"} {
		if _, err := resolveSecrets(caddy.NewReplacer(), []string{"ok", bad}); err == nil || !strings.Contains(err.Error(), "secret 1") {
			t.Errorf("%s: %v, want an error naming secret 1", bad, err)
		}
	}
	if _, err := resolveSecrets(caddy.NewReplacer(), nil); err == nil {
		t.Error("no secrets accepted")
	}
}

func TestITNSReplayRecorder(t *testing.T) {
	w := httptest.NewRecorder()
	rr := &replayRecorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	rr.Header().Set("Content-Type", "text/plain")
	rr.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(rr, "OK ")
	_, _ = rr.ReadFrom(strings.NewReader("member created"))
	if w.Code != http.StatusCreated || w.Body.String() != "OK member created" {
		t.Fatalf("client got %d %q", w.Code, w.Body.String())
	}
	if rr.status != http.StatusCreated || rr.contentType != "text/plain" || rr.buf.String() != "OK member created" || rr.overflow {
		t.Fatalf("recorded %d %q %q overflow=%v", rr.status, rr.contentType, rr.buf.String(), rr.overflow)
	}

	// A large response streams whole to the client but is not kept.
	w = httptest.NewRecorder()
	rr = &replayRecorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	big := bytes.Repeat([]byte("x"), handlers.MaxReplayBody+1)
	_, _ = rr.ReadFrom(bytes.NewReader(big))
	if w.Body.Len() != len(big) || rr.status != 200 || !rr.overflow || rr.buf.Len() != 0 {
		t.Fatalf("large response: client %d bytes, status %d, overflow %v, kept %d", w.Body.Len(), rr.status, rr.overflow, rr.buf.Len())
	}
}

// memReplayStore is an in-memory handlers.ReplayStore for handler tests.
type memReplayStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memReplayStore) Claim(key, value []byte, _ time.Duration) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[string(key)]; ok {
		return bytes.Clone(v), false, nil
	}
	s.m[string(key)] = bytes.Clone(value)
	return nil, true, nil
}

func (s *memReplayStore) Set(key, value []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[string(key)] = bytes.Clone(value)
	return nil
}

func (s *memReplayStore) Delete(key []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, string(key))
	return nil
}

// newTestITNSVerify provisions the handler by hand (no Caddy context), with
// a dedupe guard over an in-memory store and an observed logger.
func newTestITNSVerify(t *testing.T, secret string) (*ITNSVerify, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	v := &ITNSVerify{Secrets: []string{secret}, Prefix: "c"}
	itns, err := handlers.NewITNS(handlers.ITNSConfig{Secrets: [][]byte{[]byte(secret)}, Prefix: "c"})
	if err != nil {
		t.Fatal(err)
	}
	v.verifier = itns.Verifier()
	v.guard, err = handlers.NewReplayGuard(&memReplayStore{m: map[string][]byte{}}, handlers.ReplayOptions{Window: time.Hour, Wait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v.logger = zap.New(core)
	v.metrics = newMetrics()
	v.verified = []prometheus.Counter{v.metrics.Verified.WithLabelValues("0")}
	v.denier = &denier{logger: v.logger, metrics: v.metrics}
	v.busyDenier = v.denier
	v.retryAfter = "2"
	return v, logs
}

func serveITNS(t *testing.T, v *ITNSVerify, body string, next caddyhttp.Handler) *httptest.ResponseRecorder {
	t.Helper()
	w, err := tryServeITNS(v, body, next)
	if err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return w
}

// tryServeITNS may run outside the test goroutine: it does not call t.Fatal.
// A handler error becomes the recorder's status, as Caddy would answer it.
func tryServeITNS(v *ITNSVerify, body string, next caddyhttp.Handler) (*httptest.ResponseRecorder, error) {
	r := httptest.NewRequest(http.MethodPost, "/itns.php", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	repl := caddy.NewReplacer()
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	if err := v.ServeHTTP(w, r, next); err != nil {
		if he, ok := err.(caddyhttp.HandlerError); ok {
			w.Code = he.StatusCode
			return w, nil
		}
		return nil, err
	}
	return w, nil
}

// serveAsync serves in a goroutine and delivers the recorder.
func serveAsync(t *testing.T, v *ITNSVerify, body string, next caddyhttp.Handler) <-chan *httptest.ResponseRecorder {
	ch := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		w, err := tryServeITNS(v, body, next)
		if err != nil {
			t.Errorf("ServeHTTP: %v", err)
			w = httptest.NewRecorder()
			w.Code = 0
		}
		ch <- w
	}()
	return ch
}

func signedBody(t *testing.T, secret string, fields ...string) string {
	t.Helper()
	body, err := signArgs(secret, "c", "sorted", mustFields(t, fields), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func mustFields(t *testing.T, args []string) []handlers.Field {
	t.Helper()
	f, err := parseFieldArgs(args)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestITNSServeDeduped(t *testing.T) {
	const secret = "unit-secret"
	v, logs := newTestITNSVerify(t, secret)
	var hits atomic.Int64
	status := atomic.Int64{}
	status.Store(200)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(int(status.Load()))
		_, _ = io.WriteString(w, "member created: "+string(b[:10]))
		return nil
	})
	body := signedBody(t, secret, "ctransaction=SALE", "ccustemail=jane@example.com", "ccustcc=4111111111111111", "cprodtitle=Guide – Müller")

	first := serveITNS(t, v, body, next)
	if first.Code != 200 || hits.Load() != 1 {
		t.Fatalf("first: %d, %d upstream hits", first.Code, hits.Load())
	}
	// The same fields in another order are the same notification.
	parts := strings.Split(body, "&")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	for _, replay := range []string{body, strings.Join(parts, "&")} {
		w := serveITNS(t, v, replay, next)
		if w.Code != 200 || w.Body.String() != first.Body.String() || w.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("replay: %d %q %q; want the first answer", w.Code, w.Body.String(), w.Header().Get("Content-Type"))
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("replays reached the upstream: %d hits", hits.Load())
	}

	// A notification whose first copy failed goes through again.
	other := signedBody(t, secret, "ctransaction=RFND", "ctransreceipt=X1")
	status.Store(500)
	if w := serveITNS(t, v, other, next); w.Code != 500 {
		t.Fatalf("failing first: %d", w.Code)
	}
	status.Store(200)
	if w := serveITNS(t, v, other, next); w.Code != 200 || hits.Load() != 3 {
		t.Fatalf("retry after a failure: %d, %d hits", w.Code, hits.Load())
	}

	// An upstream error is a failure too.
	third := signedBody(t, secret, "ctransaction=CGBK")
	failing := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		hits.Add(1)
		return caddyhttp.Error(http.StatusBadGateway, io.ErrUnexpectedEOF)
	})
	if w := serveITNS(t, v, third, failing); w.Code != http.StatusBadGateway {
		t.Fatalf("upstream error: %d", w.Code)
	}
	if w := serveITNS(t, v, third, next); w.Code != 200 || hits.Load() != 5 {
		t.Fatalf("retry after an upstream error: %d, %d hits", w.Code, hits.Load())
	}

	// No value ever reaches the log; the secret index does.
	for _, e := range logs.All() {
		line := e.Message
		for k, f := range e.ContextMap() {
			line += " " + k + "=" + fmt.Sprint(f)
		}
		for _, secretOrValue := range []string{secret, "4111", "jane", "Müller"} {
			if strings.Contains(line, secretOrValue) {
				t.Errorf("log line shows %q: %s", secretOrValue, line)
			}
		}
	}
	if n := logs.FilterMessage("itns notification verified").FilterField(zap.Int("secret_index", 0)).Len(); n == 0 {
		t.Error("accepted notifications are not logged (debug) with their secret index")
	}
	if n := promtestutil.ToFloat64(v.metrics.Verified.WithLabelValues("0")); n < 5 {
		t.Errorf("caddy_postback_itns_verified_total{secret_index=\"0\"} = %v, want one per accepted notification", n)
	}
}

func TestITNSServeDedupedInFlight(t *testing.T) {
	const secret = "unit-secret"
	v, _ := newTestITNSVerify(t, secret)
	release := make(chan struct{})
	var hits atomic.Int64
	slow := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		hits.Add(1)
		<-release
		_, _ = io.WriteString(w, "OK")
		return nil
	})
	body := signedBody(t, secret, "ctransaction=SALE", "ctransreceipt=SLOW1")
	firstDone := serveAsync(t, v, body, slow)
	testutil.WaitFor(t, "the first copy at the upstream", 10*time.Second, func() bool { return hits.Load() != 0 })
	replayDone := serveAsync(t, v, body, slow)
	time.Sleep(100 * time.Millisecond)
	close(release)
	if w := <-firstDone; w.Code != 200 || w.Body.String() != "OK" {
		t.Fatalf("first: %d %q", w.Code, w.Body.String())
	}
	if w := <-replayDone; w.Code != 200 || w.Body.String() != "OK" {
		t.Fatalf("replay that waited: %d %q", w.Code, w.Body.String())
	}
	if hits.Load() != 1 {
		t.Fatalf("%d upstream hits, want 1", hits.Load())
	}

	// A first copy that outlasts dedupe_wait: the replay gets 503 with
	// Retry-After, and the upstream still sees one copy.
	body = signedBody(t, secret, "ctransaction=SALE", "ctransreceipt=SLOW2")
	hang := make(chan struct{})
	stuck := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		hits.Add(1)
		<-hang
		return nil
	})
	stuckDone := serveAsync(t, v, body, stuck)
	testutil.WaitFor(t, "the stuck copy at the upstream", 10*time.Second, func() bool { return hits.Load() >= 2 })
	w := serveITNS(t, v, body, stuck)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("replay while in flight: %d, Retry-After %q; want 503, 2", w.Code, w.Header().Get("Retry-After"))
	}
	if hits.Load() != 2 {
		t.Fatalf("%d upstream hits, want 2", hits.Load())
	}
	close(hang)
	<-stuckDone
}
