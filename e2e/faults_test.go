package e2e

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// countingTLS is an HTTPS server that counts the requests that reached its
// handler, which runs handle.
func countingTLS(t testing.TB, o testutil.TLSOptions, handle func(w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	n := new(atomic.Int64)
	// Handshakes the edge refuses are the point; keep them out of the output.
	o.Quiet = true
	srv := testutil.NewTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		handle(w, r)
	}), o)
	return srv.Server, n
}

// faultsConfig: /itns.php copies to dins; DIN 2000 is healthy, 2001 hangs,
// 2002 fails with 500 then recovers, 2003 has a certificate from an unknown
// CA, 2004 is down for the whole schedule (→ PGP spool), 2005 has a trusted
// certificate for another name. A second site serves the same script
// without any postback handler, as the reference for latency.
type faultsSetup struct {
	store, root, php, pgpKey, spool       string
	healthy, hang, flaky, badCA, down, wn string // URLs
	sinkCA, wnCA                          string
	edgePort, plainPort                   int
}

func faultsConfig(s faultsSetup, dins string) string {
	return caddyfile{
		store:    s.store,
		postback: "encryption_key {env.E2E_DB_KEY}",
		dests: []destination{
			{din: "2000", url: s.healthy, ca: s.sinkCA, opts: "retry_schedule 0s 200ms 500ms"},
			{din: "2001", url: s.hang, ca: s.sinkCA, opts: "timeout 2s\nconcurrency 64\nretry_schedule 0s 100ms"},
			{din: "2002", url: s.flaky, ca: s.sinkCA, opts: "retry_schedule 0s 300ms 600ms 1s 1s 1s 1s 1s 1s"},
			{din: "2003", url: s.badCA, opts: "retry_schedule 0s 100ms 100ms\nbreaker 10 1s"},
			{din: "2004", url: s.down, ca: s.sinkCA, opts: `timeout 2s
retry_schedule 0s 100ms 100ms
# Probes at most 1 s apart (here and for 2003, 2005): the
# deliveries an open circuit holds end (spooled, failed) once a
# probe failed after them, within the test's time.
breaker 10 1s
pgp_key ` + s.pgpKey + `
spool_dir ` + s.spool},
			{din: "2005", url: s.wn, ca: s.wnCA, opts: "retry_schedule 0s 100ms 100ms\nbreaker 10 1s"},
		},
		sites: []site{
			{port: s.edgePort, root: s.root, body: itnsRoute("allow 127.0.0.1", "", dins, s.php)},
			{port: s.plainPort, root: s.root, body: "php_fastcgi " + s.php},
		},
	}.String()
}

// phaseResult is one measured phase.
type phaseResult struct {
	edge, plain latencies
	sentAt      map[string]time.Time // body → when it was sent (answered 2xx)
}

// measure sends n signed notifications one after the other to the edge,
// each followed by a plain request to the same script without the edge's
// handlers, and times both.
func measure(t *testing.T, client *http.Client, s faultsSetup, tag string, n int) phaseResult {
	t.Helper()
	res := phaseResult{sentAt: map[string]time.Time{}}
	edge := fmt.Sprintf("http://127.0.0.1:%d/itns.php", s.edgePort)
	plain := fmt.Sprintf("http://127.0.0.1:%d/itns.php", s.plainPort)
	for i := 0; i < n; i++ {
		body := signITNS(t, itnsSecret, "", itnsFields("", fmt.Sprintf("%s-%04d", tag, i), time.Now()))
		start := time.Now()
		a := do(t, client, http.MethodPost, edge, formContent, body)
		res.edge = append(res.edge, time.Since(start))
		if a.Status != http.StatusOK || a.Body != "OK\n" {
			t.Fatalf("%s notification %d: %s", tag, i, a)
		}
		res.sentAt[body] = start
		start = time.Now()
		if a := do(t, client, http.MethodPost, plain, formContent, "transaction=SALE&tranreceipt=PLAIN"); a.Status != http.StatusOK {
			t.Fatalf("plain request: %s", a)
		}
		res.plain = append(res.plain, time.Since(start))
	}
	return res
}

// lag is how long after it was sent each body reached the sink.
func lag(res phaseResult, s *sink) latencies {
	first := map[string]time.Time{}
	for _, r := range s.requests() {
		if _, ok := first[r.Body]; !ok && r.Status < 300 {
			first[r.Body] = r.At
		}
	}
	var l latencies
	for b, at := range res.sentAt {
		if arr, ok := first[b]; ok {
			l = append(l, arr.Sub(at))
		}
	}
	return l
}

// Destinations that hang, fail then recover, present an invalid
// certificate, or are down for the whole schedule neither slow the request
// path nor the healthy destination; each ends as it should (delivered after
// retries, failed, or PGP-spooled so that gpg decrypts exactly what was
// posted), and the encrypted store holds no card number in clear.
func TestFaultyDestinationsDoNotSlowTheEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end fault test (about 20s)")
	}
	php := startPHP(t)
	partner := newGPGPartner(t)
	dir := t.TempDir()

	healthy := newSink(t, dir, 0)
	release := make(chan struct{})
	hang, hangN := countingTLS(t, testutil.TLSOptions{}, func(w http.ResponseWriter, r *http.Request) {
		select { // no answer until the edge gives up (or the test ends)
		case <-r.Context().Done():
		case <-release:
		}
		// Never an answer: returning would make net/http send an implicit
		// 200, which can reach the edge if its timeout's close races it.
		panic(http.ErrAbortHandler)
	})
	t.Cleanup(func() { close(release) }) // runs before hang.Close
	var flakyStart atomic.Int64
	flaky := newSinkFunc(t, dir, 0, func(r *http.Request) int {
		flakyStart.CompareAndSwap(0, time.Now().UnixNano())
		if time.Since(time.Unix(0, flakyStart.Load())) < 2*time.Second {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	badCA, badCAN := countingTLS(t, testutil.TLSOptions{}, func(http.ResponseWriter, *http.Request) {})
	// A certificate of a CA the edge trusts (ca_cert), for partner.example
	// only: trusted, but not for 127.0.0.1.
	wnCA := testutil.NewCA(t, dir)
	wrongName, wrongNameN := countingTLS(t, testutil.TLSOptions{CA: wnCA, Names: []string{"partner.example"}}, func(http.ResponseWriter, *http.Request) {})

	s := faultsSetup{
		store: dir + "/store", root: legacyRoot(t), php: php.addr,
		pgpKey: partner.pubKey, spool: dir + "/spool/2004",
		healthy: healthy.srv.URL + "/collect", hang: hang.URL + "/collect", flaky: flaky.srv.URL + "/collect",
		badCA: badCA.URL + "/collect", down: fmt.Sprintf("https://127.0.0.1:%d/collect", testutil.FreePort(t)),
		wn: wrongName.URL + "/collect", sinkCA: healthy.caFile, wnCA: wnCA.File,
		edgePort: testutil.FreePort(t), plainPort: testutil.FreePort(t),
	}
	env := []string{"E2E_ITNS_SECRET=" + itnsSecret, "E2E_DB_KEY=" + e2eDBKey}
	client := &http.Client{Timeout: 30 * time.Second}
	const n = 150

	// Phase 1: only the healthy destination.
	edge := startCaddy(t, dir, faultsConfig(s, "2000"), env...)
	measure(t, client, s, "WARMUP", 20)
	base := measure(t, client, s, "BASE", n)
	testutil.WaitFor(t, "phase 1 at DIN 2000", 30*time.Second, func() bool {
		b, _ := healthy.received()
		for body := range base.sentAt {
			if b[body] == 0 {
				return false
			}
		}
		return true
	})
	edge.stop()

	// Phase 2: every notification also goes to the five faulty ones.
	edge = startCaddy(t, dir, faultsConfig(s, "2000 2001 2002 2003 2004 2005"), env...)
	measure(t, client, s, "WARMUP2", 20)
	faulty := measure(t, client, s, "FAULT", n)
	const warm = 20 // each phase's warm-up notifications also went out
	want := float64(n + warm)
	finalStates := []string{
		`caddy_postback_delivered_total{din="2000"}`, `caddy_postback_delivered_total{din="2002"}`,
		`caddy_postback_failed_total{din="2001"}`, `caddy_postback_failed_total{din="2003"}`,
		`caddy_postback_failed_total{din="2005"}`, `caddy_postback_spooled_total{din="2004"}`,
	}
	var m map[string]float64
	var short []string
	final := false
	defer func() {
		if final {
			return
		}
		var depth []string
		for k, v := range m {
			if strings.HasPrefix(k, "caddy_postback_queue_depth") || strings.HasPrefix(k, "caddy_postback_delivery_attempts_total") {
				depth = append(depth, fmt.Sprintf("%s = %v", k, v))
			}
		}
		t.Logf("phase 2 deliveries not final (want %v each): %s\n%s\nedge log:\n%s",
			want, strings.Join(short, ", "), strings.Join(depth, "\n"), grepLines(edge.logs.String(), "level\":\"warn", "level\":\"error"))
	}()
	testutil.WaitFor(t, "phase 2 deliveries to be final", 60*time.Second, func() bool {
		m = edge.metrics(t)
		short = nil
		for _, series := range finalStates {
			if m[series] != want {
				short = append(short, fmt.Sprintf("%s = %v", series, m[series]))
			}
		}
		return len(short) == 0
	})
	final = true

	// The request path: same order of magnitude as without the faults, and
	// never as slow as the hanging destination's 2s timeout.
	t.Logf("edge, healthy destination only: %s", base.edge)
	t.Logf("edge, with 5 faulty destinations: %s", faulty.edge)
	t.Logf("php_fastcgi alone (phase 1): %s", base.plain)
	t.Logf("php_fastcgi alone (phase 2): %s", faulty.plain)
	// Generous: the faulty destinations cost CPU (TLS handshakes, retries,
	// PGP encryption) on a machine of two shared cores; waiting for one of
	// them would cost seconds.
	if p50, limit := faulty.edge.percentile(50), 5*base.edge.percentile(50)+50*time.Millisecond; p50 > limit {
		t.Errorf("median request latency with faulty destinations %s > %s (5× the healthy median + 50ms)", p50, limit)
	}
	if max := faulty.edge.percentile(100); max >= 2*time.Second {
		t.Errorf("slowest request with faulty destinations took %s: as long as the hanging destination's timeout", max)
	}
	// The healthy destination is not held up by the others.
	baseLag, faultyLag := lag(base, healthy), lag(faulty, healthy)
	t.Logf("DIN 2000 delivery lag, alone: %s", baseLag)
	t.Logf("DIN 2000 delivery lag, beside 5 faulty destinations: %s", faultyLag)
	if len(faultyLag) != n {
		t.Errorf("DIN 2000 got %d of the %d phase 2 notifications", len(faultyLag), n)
	}
	if p99 := faultyLag.percentile(99); p99 >= 2*time.Second {
		t.Errorf("DIN 2000's p99 delivery lag %s beside a hanging destination: it waits for it", p99)
	}
	figures(t, "faults-latency: edge_healthy{%s} edge_faulty{%s} php_alone{%s} lag_2000_alone{%s} lag_2000_beside_faults{%s}",
		base.edge, faulty.edge, faulty.plain, baseLag, faultyLag)

	// Each fault ended as it should.
	if hangN.Load() == 0 {
		t.Error("the hanging destination was never tried")
	}
	if got := badCAN.Load() + wrongNameN.Load(); got != 0 {
		t.Errorf("%d requests reached a destination whose certificate is invalid", got)
	}
	retried, failedFirst := 0, 0
	for _, r := range flaky.requests() {
		if r.Status == http.StatusInternalServerError {
			failedFirst++
		}
		if r.Status == http.StatusOK && r.Attempt != "1" {
			retried++
		}
	}
	fb, _ := flaky.received()
	for body := range faulty.sentAt {
		if fb[body] == 0 {
			t.Errorf("DIN 2002 (500, then recovered) never got a notification")
			break
		}
	}
	if failedFirst == 0 || retried == 0 {
		t.Errorf("DIN 2002 answered 500 %d times and got %d successful retries; want both > 0", failedFirst, retried)
	}

	// The spool: one file per notification, 0600, that gpg decrypts to
	// exactly the body that was posted.
	entries, err := os.ReadDir(s.spool)
	if err != nil {
		t.Fatal(err)
	}
	decryptDir := t.TempDir()
	var files []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "2004-") || !strings.HasSuffix(e.Name(), ".asc") {
			t.Errorf("unexpected file in the spool folder: %s", e.Name())
			continue
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("spool file %s has mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
		raw, err := os.ReadFile(filepath.Join(s.spool, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(raw, []byte("-----BEGIN PGP MESSAGE-----")) || bytes.Contains(raw, []byte("4111111111111111")) {
			t.Errorf("spool file %s is not an armored PGP message, or holds clear text", e.Name())
		}
		cp := filepath.Join(decryptDir, e.Name())
		if err := os.WriteFile(cp, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, cp)
	}
	if len(files) != n+warm {
		t.Errorf("spool has %d files, want %d", len(files), n+warm)
	}
	partner.MustRun(t, nil, append([]string{"--quiet", "--yes", "--decrypt-files"}, files...)...)
	plain := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(strings.TrimSuffix(f, ".asc"))
		if err != nil {
			t.Fatalf("gpg --decrypt-files left no plaintext for %s: %v", filepath.Base(f), err)
		}
		plain[string(b)] = true
	}
	if len(files) > 0 { // one by one, as the partner's pickup script would
		if got, _ := partner.Decrypt(t, files[0]); !plain[string(got)] {
			t.Errorf("gpg --decrypt of %s: %q", filepath.Base(files[0]), got)
		}
	}
	for body := range faulty.sentAt {
		if !plain[body] {
			t.Errorf("no spool file decrypts to a notification that was posted (receipt %s)", body[strings.Index(body, "tranreceipt="):][:24])
			break
		}
	}

	// At rest: the store is encrypted, the failed deliveries' payloads it
	// keeps hold no card number in clear.
	edge.stop()
	clear := 0
	err = filepath.WalkDir(s.store, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("4111111111111111")) || bytes.Contains(b, []byte("FAULT-0")) {
			clear++
			t.Errorf("store file %s holds notification data in clear", filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	figures(t, "faults: notifications=%d hang_attempts=%d flaky_500s=%d flaky_retried_ok=%d spooled_decrypted=%d invalid_cert_requests=%d store_files_with_cleartext=%d",
		n+warm, hangN.Load(), failedFirst, retried, len(plain), badCAN.Load()+wrongNameN.Load(), clear)
}
