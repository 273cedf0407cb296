package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

func postForm(t *testing.T, tc *caddytest.Tester, path, body string, wantStatus int, wantBody string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, testURL(0, path), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	tc.AssertResponse(req, wantStatus, wantBody)
}

// When the queue cannot write, the request must not reach the script: the
// sender is told to retry, so primary and secondary never drift apart.
func TestSecondaryPostAnswers503WhenStoreFails(t *testing.T) {
	dest := newTestDestination(t)
	up := newUpstream(t)
	dir := testDir(t, "store")
	tc := newTester(t, postbackGlobal(dir, fmt.Sprintf(`
		destination 2301 {
			url %s/in
			ca_cert %s
		}`, dest.srv.URL, dest.caFile)), fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post 2301
		reverse_proxy %s
	}
}`, up.srv.Listener.Addr()))
	req, _ := http.NewRequest(http.MethodPost, testURL(0, "/itns.php"), strings.NewReader("a=1"))
	tc.AssertResponseCode(req, http.StatusOK)
	if up.hits() != 1 {
		t.Fatalf("upstream hits = %d before the failure, want 1", up.hits())
	}

	// Break the store under the running config.
	var closed bool
	enginePool.Range(func(key, value any) bool {
		if e := value.(*pooledEngine); e.dir == dir {
			closed = e.store.Close() == nil
		}
		return true
	})
	if !closed {
		t.Fatal("no open engine for the test's storage_dir")
	}
	req, _ = http.NewRequest(http.MethodPost, testURL(0, "/itns.php"), strings.NewReader("a=2"))
	resp := tc.AssertResponseCode(req, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if up.hits() != 1 {
		t.Errorf("upstream hits = %d after the store failed, want still 1", up.hits())
	}
}

// A store short of min_free_space refuses the copy: 503, and the script
// is not reached. 1 EiB is more than any test machine's disk has free.
func TestSecondaryPostAnswers503WhenDiskIsFull(t *testing.T) {
	dest := newTestDestination(t)
	up := newUpstream(t)
	tc := newTester(t, postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		min_free_space 1EiB
		destination 2302 {
			url %s/in
			ca_cert %s
		}`, dest.srv.URL, dest.caFile)), fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post 2302
		reverse_proxy %s
	}
}`, up.srv.Listener.Addr()))
	postForm(t, tc, "/itns.php", "a=1", http.StatusServiceUnavailable, "postback queue unavailable, retry later\n")
	if up.hits() != 0 {
		t.Errorf("upstream hits = %d with the disk full, want 0", up.hits())
	}
}

func TestSecondaryPostUnknownDINIsALoadError(t *testing.T) {
	caddytest.AssertLoadError(t, expandPorts(globalOptions(postbackGlobal(testDir(t, "store"), `
		destination 2401 {
			url https://127.0.0.1:1/in
		}`))+`
http://127.0.0.1:{port0} {
	secondary_post 2401 9999
	respond "OK"
}`), "caddyfile", "DIN 9999 is not a configured destination")
}

func TestSecondaryPostDINField(t *testing.T) {
	a := newTestDestination(t)
	b := newTestDestination(t)
	tc := newTester(t, postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 2501 {
			url %s/a
			ca_cert %s
		}
		destination 2502 {
			url %s/b
			ca_cert %s
		}`, a.srv.URL, a.caFile, b.srv.URL, b.caFile)), `
http://127.0.0.1:{port0} {
	route /post {
		secondary_post {
			din_field din
		}
		respond "OK"
	}
}`)
	// 2502 named, an unknown DIN and a URL are ignored: a request can only
	// pick configured destinations.
	postForm(t, tc, "/post", "din=2502&din=7777&din=https%3A%2F%2Fevil.example%2F&x=1", http.StatusOK, "OK")
	testutil.WaitFor(t, "the copy to 2502", 10*time.Second, func() bool { return len(b.requests()) == 1 })
	time.Sleep(200 * time.Millisecond)
	if n := len(a.requests()); n != 0 {
		t.Errorf("2501 got %d copies, want 0", n)
	}
}

// A config reload that keeps the storage_dir keeps the queue: deliveries
// pending under the old config are delivered under the new one, once, with
// no lock error and one set of workers.
func TestSecondaryPostReloadKeepsPendingDeliveries(t *testing.T) {
	dir := testDir(t, "store")
	dead := testutil.DeadAddr(t)
	site := `
http://127.0.0.1:{port0} {
	route /post {
		secondary_post 2601
		respond "OK"
	}
}`
	tc := newTester(t, postbackGlobal(dir, fmt.Sprintf(`
		destination 2601 {
			url http://%s/in
			insecure_http
			retry_schedule 0s 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms
		}`, dead)), site)
	const n = 30
	for i := 0; i < n; i++ {
		postForm(t, tc, "/post", fmt.Sprintf("n=%d", i), http.StatusOK, "OK")
	}

	live := newTestDestination(t)
	tc.InitServer(expandPorts(globalOptions(postbackGlobal(dir, fmt.Sprintf(`
		destination 2601 {
			url %s/in
			ca_cert %s
			retry_schedule 0s 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms 300ms
		}`, live.srv.URL, live.caFile)))+site), "caddyfile")

	testutil.WaitFor(t, "all pending deliveries after the reload", 20*time.Second, func() bool { return len(live.requests()) >= n })
	time.Sleep(300 * time.Millisecond)
	seen := map[string]int{}
	bodies := map[string]bool{}
	for _, r := range live.requests() {
		seen[r.Header.Get("X-Postback-Id")]++
		bodies[r.Body] = true
	}
	if len(seen) != n || len(bodies) != n {
		t.Errorf("got %d distinct ids and %d distinct bodies, want %d", len(seen), len(bodies), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("delivery %s arrived %d times", id, c)
		}
	}
	engines := 0
	enginePool.Range(func(key, value any) bool { engines++; return true })
	if engines != 1 {
		t.Errorf("%d engines open after the reload, want 1", engines)
	}
}
