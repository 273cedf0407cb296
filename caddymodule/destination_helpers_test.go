package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// received is one request a test destination got.
type received struct {
	Method string
	URL    string // path and query
	Header http.Header
	Body   string
	At     time.Time // when it arrived
}

// testDestination is an HTTPS server on loopback with its own CA that
// records what it receives and answers with status().
type testDestination struct {
	srv    *httptest.Server
	caFile string
	mu     sync.Mutex
	got    []received
	status func(n int) int // n: 1-based count of requests so far
	// retryAfter, when set, is sent as Retry-After with a 429 or 503.
	retryAfter string
}

func newTestDestination(t *testing.T) *testDestination {
	t.Helper()
	td := &testDestination{status: func(int) int { return http.StatusOK }}
	srv := testutil.NewTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		td.mu.Lock()
		td.got = append(td.got, received{Method: r.Method, URL: r.URL.RequestURI(), Header: r.Header.Clone(), Body: string(body), At: time.Now()})
		n := len(td.got)
		status, ra := td.status, td.retryAfter
		td.mu.Unlock()
		code := status(n)
		if ra != "" && (code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable) {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(code)
	}), testutil.TLSOptions{Dir: testDir(t, "ca")})
	td.srv, td.caFile = srv.Server, srv.CAFile
	return td
}

func (td *testDestination) requests() []received {
	td.mu.Lock()
	defer td.mu.Unlock()
	return append([]received(nil), td.got...)
}
