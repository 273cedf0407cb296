package alert

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// sink is a loopback webhook that records the bodies it accepts and answers
// status(n) to the n-th request (from 1).
type sink struct {
	srv    *httptest.Server
	mu     sync.Mutex
	tries  int
	bodies []Body
	header []http.Header
	status func(n int) int
}

func newSink(t *testing.T, status func(n int) int) *sink {
	t.Helper()
	s := &sink{status: status}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.tries++
		n := s.tries
		s.mu.Unlock()
		// status may block (a webhook that hangs): never under the lock
		// that attempts() takes.
		code := http.StatusOK
		if s.status != nil {
			code = s.status(n)
		}
		s.mu.Lock()
		if code < 300 {
			var b Body
			if err := json.Unmarshal(data, &b); err != nil {
				t.Errorf("body %q: %v", data, err)
			}
			s.bodies = append(s.bodies, b)
			s.header = append(s.header, r.Header.Clone())
		}
		s.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) got() []Body {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Body(nil), s.bodies...)
}

func (s *sink) attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tries
}

// counts implements Counters.
type counts struct {
	mu                       sync.Mutex
	sent, failed, suppressed map[Kind]int
}

func newCounts() *counts {
	return &counts{sent: map[Kind]int{}, failed: map[Kind]int{}, suppressed: map[Kind]int{}}
}

func (c *counts) Sent(k Kind)       { c.mu.Lock(); c.sent[k]++; c.mu.Unlock() }
func (c *counts) Failed(k Kind)     { c.mu.Lock(); c.failed[k]++; c.mu.Unlock() }
func (c *counts) Suppressed(k Kind) { c.mu.Lock(); c.suppressed[k]++; c.mu.Unlock() }

func (c *counts) get(m map[Kind]int, k Kind) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m[k]
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startAlerter(t *testing.T, o Options) *Alerter {
	t.Helper()
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	t.Cleanup(a.Stop)
	return a
}
