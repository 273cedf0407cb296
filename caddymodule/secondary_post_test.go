package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// upstream stands in for the legacy script: it records the body and the
// Content-Length it was given.
type upstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []string
	lens   []int64
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.bodies = append(u.bodies, string(b))
		u.lens = append(u.lens, r.ContentLength)
		u.mu.Unlock()
		fmt.Fprint(w, "SALE OK\n100001\n")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.bodies)
}

func postbackGlobal(storageDir string, destinations string) string {
	return fmt.Sprintf(`postback {
		storage_dir %s
		%s
	}`, storageDir, destinations)
}

func TestSecondaryPostCopiesToPostAndGetDestinations(t *testing.T) {
	post := newTestDestination(t)
	get := newTestDestination(t)
	up := newUpstream(t)
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 2001 {
			url %s/collect
			method POST
			item_code ABCD
			ca_cert %s
			header X-Partner-Key demo
		}
		destination 2002 {
			url %s/cgi-bin/get?site=shop
			method GET
			ca_cert %s
		}`, post.srv.URL, post.caFile, get.srv.URL, get.caFile))
	tc := newTester(t, global, fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /process_gateway.php {
		secondary_post 2001 2002
		reverse_proxy %s
	}
}`, up.srv.Listener.Addr()))

	body := "xs_nats=ref&username=anna&email=anna%40example.com&amount=19%2E95&name=J%C3%BCrgen+%E2%80%93+M"
	req, _ := http.NewRequest(http.MethodPost, testURL(0, "/process_gateway.php"), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	tc.AssertResponse(req, http.StatusOK, "SALE OK\n100001\n")

	// The script saw exactly the sender's bytes with the same length.
	up.mu.Lock()
	if len(up.bodies) != 1 || up.bodies[0] != body || up.lens[0] != int64(len(body)) {
		t.Errorf("upstream got %q (len %v), want %q (len %d)", up.bodies, up.lens, body, len(body))
	}
	up.mu.Unlock()

	testutil.WaitFor(t, "both destinations", 10*time.Second, func() bool {
		return len(post.requests()) == 1 && len(get.requests()) == 1
	})
	p := post.requests()[0]
	if p.Method != http.MethodPost || p.URL != "/collect" || p.Body != body {
		t.Errorf("POST destination got %s %s %q", p.Method, p.URL, p.Body)
	}
	if ct := p.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Errorf("POST destination Content-Type = %q", ct)
	}
	for name, want := range map[string]string{"X-Postback-Din": "2001", "X-Postback-Attempt": "1", "X-Partner-Key": "demo", "X-Postback-Item-Code": "ABCD"} {
		if got := p.Header.Get(name); got != want {
			t.Errorf("POST destination header %s = %q, want %q", name, got, want)
		}
	}
	if p.Header.Get("X-Postback-Id") == "" || !strings.HasPrefix(p.Header.Get("User-Agent"), "caddy-postback/") {
		t.Errorf("POST destination headers lack id or user agent: %v", p.Header)
	}
	g := get.requests()[0]
	if g.Method != http.MethodGet || g.URL != "/cgi-bin/get?site=shop&"+body || g.Body != "" {
		t.Errorf("GET destination got %s %s body %q", g.Method, g.URL, g.Body)
	}
	if g.Header.Get("X-Postback-Din") != "2002" || g.Header.Get("X-Postback-Id") == p.Header.Get("X-Postback-Id") {
		t.Errorf("GET destination headers: %v", g.Header)
	}
}

func TestSecondaryPostGetRequestCopiesQuery(t *testing.T) {
	dest := newTestDestination(t)
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 2101 {
			url %s/in
			ca_cert %s
		}`, dest.srv.URL, dest.caFile))
	tc := newTester(t, global, `
http://127.0.0.1:{port0} {
	route /signup/process_extended.php {
		secondary_post 2101
		respond "OK"
	}
}`)
	query := "extended_id=demo&action=SALE&transid=T1&amount=500"
	tc.AssertGetResponse(testURL(0, "/signup/process_extended.php?"+query), http.StatusOK, "OK")
	testutil.WaitFor(t, "the copy", 10*time.Second, func() bool { return len(dest.requests()) == 1 })
	if r := dest.requests()[0]; r.Method != http.MethodPost || r.Body != query ||
		r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("destination got %s %q %v", r.Method, r.Body, r.Header)
	}
}

func TestSecondaryPostDeadDestinationDoesNotDelayOthers(t *testing.T) {
	good := newTestDestination(t)
	// A destination that accepts connections and never answers.
	hang := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hang); hanging.Close() })
	global := postbackGlobal(testDir(t, "store"), fmt.Sprintf(`
		destination 2201 {
			url %s/ok
			ca_cert %s
		}
		destination 2202 {
			url https://%s/refused
			retry_schedule 0s 100ms 100ms
		}
		destination 2203 {
			url %s/hangs
			timeout 30s
			insecure_http
		}`, good.srv.URL, good.caFile, testutil.DeadAddr(t), hanging.URL))
	tc := newTester(t, global, `
http://127.0.0.1:{port0} {
	route /itns.php {
		secondary_post 2201 2202 2203
		respond "OK"
	}
}`)
	const n = 20
	start := time.Now()
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest(http.MethodPost, testURL(0, "/itns.php"), strings.NewReader(fmt.Sprintf("transaction=SALE&n=%d", i)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		tc.AssertResponse(req, http.StatusOK, "OK")
	}
	testutil.WaitFor(t, "the good destination", 15*time.Second, func() bool { return len(good.requests()) == n })
	// Generous bound: the hanging destination's 30 s timeout must not be in
	// the path of the requests or of the good destination.
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Errorf("20 requests and their good copies took %s", elapsed)
	}
}
