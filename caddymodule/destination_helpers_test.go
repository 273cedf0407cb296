package caddymodule

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// received is one request a test destination got.
type received struct {
	Method string
	URL    string // path and query
	Header http.Header
	Body   string
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
	td.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		td.mu.Lock()
		td.got = append(td.got, received{Method: r.Method, URL: r.URL.RequestURI(), Header: r.Header.Clone(), Body: string(body)})
		n := len(td.got)
		status, ra := td.status, td.retryAfter
		td.mu.Unlock()
		code := status(n)
		if ra != "" && (code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable) {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(td.srv.Close)
	td.caFile = filepath.Join(testDir(t, "ca"), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: td.srv.Certificate().Raw})
	if err := os.WriteFile(td.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return td
}

func (td *testDestination) requests() []received {
	td.mu.Lock()
	defer td.mu.Unlock()
	return append([]received(nil), td.got...)
}

// waitFor polls until cond holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
