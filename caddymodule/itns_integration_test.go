package caddymodule

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// These tests run a real Caddy (in process, on loopback) with itns_verify in
// front of an upstream standing in for the legacy itns.php.

// itnsUpstream records what reaches it and answers like a legacy script.
type itnsUpstream struct {
	srv    *httptest.Server
	hits   atomic.Int64
	status atomic.Int64 // 0: 200
	mu     sync.Mutex
	bodies []string
	types  []string
	n      []int64 // Content-Length seen
}

func newITNSUpstream(t *testing.T) *itnsUpstream {
	t.Helper()
	u := &itnsUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n := u.hits.Add(1)
		u.mu.Lock()
		u.bodies = append(u.bodies, string(b))
		u.types = append(u.types, r.Header.Get("Content-Type"))
		u.n = append(u.n, r.ContentLength)
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s := int(u.status.Load()); s != 0 {
			w.WriteHeader(s)
		}
		// Each answer differs, so a replayed answer is recognisable.
		fmt.Fprintf(w, "SALE OK\nmember %d", n)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *itnsUpstream) addr() string { return u.srv.Listener.Addr().String() }

func itnsClient() *http.Client {
	return &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
}

type itnsResult struct {
	status int
	header http.Header
	body   string
}

func itnsPost(t *testing.T, url, contentType string, body io.Reader) itnsResult {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := itnsClient().Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return itnsResult{resp.StatusCode, resp.Header, string(b)}
}

// itnsMetric reads one caddy_postback_* series from the admin /metrics
// endpoint (0 when it does not exist yet).
func itnsMetric(t *testing.T, name, label, value string) float64 {
	t.Helper()
	resp, err := itnsClient().Get(fmt.Sprintf("http://localhost:%d/metrics", testAdminPort()))
	if err != nil {
		t.Fatalf("admin /metrics: %v", err)
	}
	defer resp.Body.Close()
	prefix := fmt.Sprintf(`%s{%s=%q} `, name, label, value)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %q: %v", sc.Text(), err)
			}
			return f
		}
	}
	return 0
}

// sign is `caddy postback sign` without the process.
func sign(t *testing.T, secret, prefix string, fields ...string) string {
	t.Helper()
	body, err := signArgs(secret, prefix, "sorted", mustFields(t, fields), false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return body
}

const (
	itnsFormType  = "application/x-www-form-urlencoded"
	itnsNewSecret = "new-secret-ü"
	itnsOldSecret = "old-secret"
)

func TestITNSIntegrationVerify(t *testing.T) {
	t.Setenv("POSTBACK_TEST_ITNS_NEW", itnsNewSecret)
	secretFile := t.TempDir() + "/itns.old"
	if err := os.WriteFile(secretFile, []byte(itnsOldSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := newITNSUpstream(t)
	newTester(t, "", strings.NewReplacer("UPSTREAM", up.addr(), "SECRETFILE", secretFile).Replace(`
http://127.0.0.1:{port0} {
	route /itns.php {
		postback_filter {
			allow 127.0.0.1
		}
		itns_verify {
			secret {env.POSTBACK_TEST_ITNS_NEW} {file.SECRETFILE}
			prefix c
			max_age 15m
		}
		reverse_proxy UPSTREAM
	}
	route /affilicon.php {
		itns_verify {
			secret {env.POSTBACK_TEST_ITNS_NEW}
			deny_status 200
			deny_body "DECLINED\n{postback.deny_reason}"
		}
		reverse_proxy UPSTREAM
	}
}
`))
	url := testURL(0, "/itns.php")
	now := strconv.FormatInt(time.Now().Unix(), 10)
	fields := []string{"ctransaction=SALE", "ctransreceipt=ABCD1234", "ccustemail=jane@example.com",
		"ccustname= Jane Müller ", "cprodtitle=Guide – 2nd edition & more", "ccustcc=DE", "cnote=", "ctranstime=" + now}
	genuine := sign(t, itnsNewSecret, "c", fields...)

	// Genuine: passed on byte for byte, with and without Content-Length.
	r := itnsPost(t, url, itnsFormType, strings.NewReader(genuine))
	if r.status != 200 || !strings.HasPrefix(r.body, "SALE OK") {
		t.Fatalf("genuine: %d %q", r.status, r.body)
	}
	r = itnsPost(t, url, itnsFormType+"; charset=UTF-8", io.MultiReader(strings.NewReader(genuine[:7]), strings.NewReader(genuine[7:])))
	if r.status != 200 {
		t.Fatalf("genuine, chunked: %d %q", r.status, r.body)
	}
	// Rotation: the old secret (from a file) still signs validly.
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(sign(t, itnsOldSecret, "c", fields...))); r.status != 200 {
		t.Fatalf("old secret: %d %q", r.status, r.body)
	}
	// A lowercase signature is the same signature.
	lower := genuine[:len(genuine)-8] + strings.ToLower(genuine[len(genuine)-8:])
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(lower)); r.status != 200 {
		t.Fatalf("lowercase signature: %d %q", r.status, r.body)
	}
	if up.hits.Load() != 4 {
		t.Fatalf("upstream hits %d, want 4", up.hits.Load())
	}
	up.mu.Lock()
	for i, b := range up.bodies[:2] {
		if b != genuine || !strings.HasPrefix(up.types[i], itnsFormType) {
			t.Errorf("upstream saw %q (%s), want the posted body unchanged", b, up.types[i])
		}
	}
	// The chunked request goes on chunked (CaptureBody keeps the framing);
	// only the body is promised unchanged.
	if up.n[0] != int64(len(genuine)) {
		t.Errorf("upstream Content-Length %d, want %d", up.n[0], len(genuine))
	}
	up.mu.Unlock()

	stale := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	future := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	refusals := []struct {
		name, contentType, body, reason string
		status                          int
	}{
		{"tampered", itnsFormType, strings.Replace(genuine, "SALE", "RFND", 1), "signature_mismatch", 403},
		{"unsigned", itnsFormType, genuine[:strings.LastIndex(genuine, "&cverify=")], "signature_missing", 403},
		{"other secret", itnsFormType, sign(t, "guessed", "c", fields...), "signature_mismatch", 403},
		{"duplicated field", itnsFormType, genuine + "&ctransaction=SALE", "duplicate_field", 400},
		{"stale", itnsFormType, sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctranstime="+stale), "stale", 403},
		{"future", itnsFormType, sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctranstime="+future), "future", 403},
		{"no transtime", itnsFormType, sign(t, itnsNewSecret, "c", "ctransaction=SALE"), "transtime_missing", 403},
		{"json", "application/json", genuine, "content_type", 400},
		{"no content type", "", genuine, "content_type", 400},
		{"bad escape", itnsFormType, genuine + "&cx=%zz", "malformed", 400},
	}
	before := map[string]float64{}
	for _, c := range refusals {
		before[c.reason] = itnsMetric(t, "caddy_postback_filtered_total", "reason", c.reason)
	}
	want := map[string]float64{}
	for _, c := range refusals {
		r := itnsPost(t, url, c.contentType, strings.NewReader(c.body))
		if r.status != c.status {
			t.Errorf("%s: %d %q, want %d", c.name, r.status, r.body, c.status)
		}
		want[c.reason]++
	}
	if up.hits.Load() != 4 {
		t.Errorf("refused notifications reached the upstream: %d hits", up.hits.Load())
	}
	for reason, n := range want {
		if got := itnsMetric(t, "caddy_postback_filtered_total", "reason", reason) - before[reason]; got != n {
			t.Errorf("filtered_total{reason=%q} went up by %v, want %v", reason, got, n)
		}
	}

	// deny_status / deny_body with the reason placeholder; AffiliCon names.
	aff := testURL(0, "/affilicon.php")
	if r := itnsPost(t, aff, itnsFormType, strings.NewReader(sign(t, itnsNewSecret, "", "transaction=SALE", "custemail=a@b.example"))); r.status != 200 || !strings.HasPrefix(r.body, "SALE OK") {
		t.Fatalf("AffiliCon genuine: %d %q", r.status, r.body)
	}
	if r := itnsPost(t, aff, itnsFormType, strings.NewReader("transaction=SALE&verify=00000000")); r.status != 200 || r.body != "DECLINED\nsignature_mismatch" {
		t.Fatalf("AffiliCon forged: %d %q", r.status, r.body)
	}
	// A ClickBank-prefixed body at the unprefixed endpoint has no "verify".
	if r := itnsPost(t, aff, itnsFormType, strings.NewReader(genuine)); r.body != "DECLINED\nsignature_missing" {
		t.Fatalf("prefixed body at the AffiliCon endpoint: %d %q", r.status, r.body)
	}
}

func TestITNSIntegrationHandleErrors(t *testing.T) {
	up := newITNSUpstream(t)
	newTester(t, "", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	itns_verify /itns.php {
		secret literal-test-secret
	}
	reverse_proxy UPSTREAM
	handle_errors 400 403 {
		respond "refused: {postback.deny_reason} {err.status_code}" 200
	}
}
`, "UPSTREAM", up.addr()))
	r := itnsPost(t, testURL(0, "/itns.php"), itnsFormType, strings.NewReader("transaction=SALE&verify=ABCDEF01"))
	if r.status != 200 || r.body != "refused: signature_mismatch 403" {
		t.Fatalf("forged: %d %q", r.status, r.body)
	}
	r = itnsPost(t, testURL(0, "/itns.php"), itnsFormType, strings.NewReader("a=1&a=2"))
	if r.body != "refused: duplicate_field 400" {
		t.Fatalf("duplicate: %d %q", r.status, r.body)
	}
	if up.hits.Load() != 0 {
		t.Fatalf("%d upstream hits", up.hits.Load())
	}
}

// TestITNSIntegrationReplay needs the postback app's ReplayStore method
// (the app owns the Badger store the dedupe records live in).
func TestITNSIntegrationReplay(t *testing.T) {
	if _, ok := any(new(App)).(replayStoreProvider); !ok {
		testutil.SkipOrFail(t, "the postback app has no ReplayStore() handlers.ReplayStore method yet (see itns_replaystore.go)")
	}
	t.Setenv("POSTBACK_TEST_ITNS_NEW", itnsNewSecret)
	up := newITNSUpstream(t)
	newTester(t, "postback {\n\t\tstorage_dir "+testDir(t, "itns-store")+"\n\t}", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	route /itns.php {
		itns_verify {
			secret {env.POSTBACK_TEST_ITNS_NEW}
			prefix c
			dedupe 1h
			dedupe_wait 2s
		}
		reverse_proxy UPSTREAM
	}
}
`, "UPSTREAM", up.addr()))
	url := testURL(0, "/itns.php")
	fields := []string{"ctransaction=SALE", "ctransreceipt=REPLAY01", "ccustemail=jane@example.com", "cprodtitle=Guide – Müller"}
	body := sign(t, itnsNewSecret, "c", fields...)
	answeredBefore := itnsMetric(t, "caddy_postback_replays_total", "outcome", "answered")

	first := itnsPost(t, url, itnsFormType, strings.NewReader(body))
	if first.status != 200 || first.body != "SALE OK\nmember 1" {
		t.Fatalf("first: %d %q", first.status, first.body)
	}
	// The same notification again, and with its fields in another order.
	parts := strings.Split(body, "&")
	parts[0], parts[len(parts)-1] = parts[len(parts)-1], parts[0]
	for _, replay := range []string{body, strings.Join(parts, "&")} {
		r := itnsPost(t, url, itnsFormType, strings.NewReader(replay))
		if r.status != first.status || r.body != first.body || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("replay: %d %q (%s); want the first answer", r.status, r.body, r.header.Get("Content-Type"))
		}
	}
	if up.hits.Load() != 1 {
		t.Fatalf("replays reached the upstream: %d hits, want 1", up.hits.Load())
	}
	if got := itnsMetric(t, "caddy_postback_replays_total", "outcome", "answered") - answeredBefore; got != 2 {
		t.Errorf("replays_total{outcome=answered} went up by %v, want 2", got)
	}

	// A different notification is not a replay.
	other := sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctransreceipt=REPLAY02")
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(other)); r.body != "SALE OK\nmember 2" {
		t.Fatalf("second notification: %d %q", r.status, r.body)
	}

	// When the script fails, the sender's retry goes through.
	failing := sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctransreceipt=REPLAY03")
	up.status.Store(500)
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(failing)); r.status != 500 {
		t.Fatalf("failing script: %d", r.status)
	}
	up.status.Store(0)
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(failing)); r.status != 200 || r.body != "SALE OK\nmember 4" {
		t.Fatalf("retry after a failure: %d %q", r.status, r.body)
	}
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(failing)); r.body != "SALE OK\nmember 4" {
		t.Fatalf("replay of the retried notification: %d %q", r.status, r.body)
	}
	if up.hits.Load() != 4 {
		t.Fatalf("upstream hits %d, want 4", up.hits.Load())
	}
}

// The rotation procedure of the README: which secret matched shows in the
// metric and, through log_append, in the access log.
func TestITNSIntegrationSecretIndexReported(t *testing.T) {
	up := newITNSUpstream(t)
	accessLog := testDir(t, "access") + "/access.log"
	newTester(t, "", strings.NewReplacer("UPSTREAM", up.addr(), "ACCESSLOG", accessLog).Replace(`
http://127.0.0.1:{port0} {
	log {
		output file ACCESSLOG
	}
	route /itns.php {
		itns_verify {
			secret new-secret old-secret
			prefix c
		}
		log_append secret_index {postback.itns.secret_index}
		reverse_proxy UPSTREAM
	}
}
`))
	before := scrapeMetrics(t)
	for _, secret := range []string{"old-secret", "new-secret", "old-secret"} {
		r := itnsPost(t, testURL(0, "/itns.php"), itnsFormType, strings.NewReader(sign(t, secret, "c", "ctransaction=SALE", "ctransreceipt=R"+secret)))
		if r.status != 200 {
			t.Fatalf("signed with %s: %d %q", secret, r.status, r.body)
		}
	}
	after := scrapeMetrics(t)
	for idx, want := range map[string]float64{"0": 1, "1": 2} {
		series := `caddy_postback_itns_verified_total{secret_index="` + idx + `"}`
		if got := after[series] - before[series]; got != want {
			t.Errorf("%s grew by %v, want %v", series, got, want)
		}
	}
	var b []byte
	defer func() {
		if t.Failed() {
			t.Logf("access log:\n%s", b)
		}
	}()
	testutil.WaitFor(t, "the secret indexes in the access log", 5*time.Second, func() bool {
		b, _ = os.ReadFile(accessLog)
		return strings.Count(string(b), `"secret_index":1`) == 2 && strings.Count(string(b), `"secret_index":0`) == 1
	})
}
