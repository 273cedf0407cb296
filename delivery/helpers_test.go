package delivery

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// received is one request seen by a sink.
type received struct {
	Method string
	URL    *url.URL
	Header http.Header
	Body   []byte
}

// sink is a loopback destination that records requests and answers with
// respond (204 when nil). It checks that one delivery id is never attempted
// twice at the same time.
type sink struct {
	*httptest.Server
	mu       sync.Mutex
	reqs     []received
	active   map[string]int
	overlaps int
	respond  func(w http.ResponseWriter, r *http.Request, n int) // n: 1-based request count
}

func newSink(t testing.TB, respond func(w http.ResponseWriter, r *http.Request, n int)) *sink {
	s := &sink{active: map[string]int{}, respond: respond}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("X-Postback-Id")
	s.mu.Lock()
	s.reqs = append(s.reqs, received{r.Method, r.URL, r.Header.Clone(), body})
	n := len(s.reqs)
	s.active[id]++
	if s.active[id] > 1 {
		s.overlaps++
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active[id]--
		s.mu.Unlock()
	}()
	if s.respond != nil {
		s.respond(w, r, n)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *sink) requests() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.reqs...)
}

func (s *sink) url(t testing.TB, suffix string) *url.URL {
	u, err := url.Parse(s.URL + suffix)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// recorder is an Observer that counts what it hears.
type recorder struct {
	NopObserver
	mu       sync.Mutex
	results  map[string]int
	finished map[storage.State]int
	circuit  []string
}

func newRecorder() *recorder {
	return &recorder{results: map[string]int{}, finished: map[storage.State]int{}}
}

func (r *recorder) Attempted(din, result string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[din+"/"+result]++
}

func (r *recorder) Finished(din string, st storage.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished[st]++
}

func (r *recorder) Circuit(din string, open bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.circuit = append(r.circuit, fmt.Sprintf("%s:%t", din, open))
}

func (r *recorder) RateDelayed(din string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results[din+"/rate_delayed"]++
}

// circuits lists the circuit changes heard, as "din:open".
func (r *recorder) circuits() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.circuit)
}

func (r *recorder) fin(st storage.State) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.finished[st]
}

func (r *recorder) get(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.results[key]
}

// spoolFunc adapts a function to Spooler.
type spoolFunc func(din, id string, payload []byte) (string, error)

func (f spoolFunc) Spool(din, id string, payload []byte) (string, error) { return f(din, id, payload) }

// run starts a dispatcher over store with dests; it is stopped at cleanup.
func run(t testing.TB, store Queue, opts Options, dests ...*Destination) *Dispatcher {
	t.Helper()
	d := New(store, opts)
	if err := d.SetDestinations(plainHTTP(dests)); err != nil {
		t.Fatal(err)
	}
	d.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Stop(ctx)
	})
	return d
}

// plainHTTP allows http:// for destinations on the tests' plain httptest
// sinks (a configuration needs insecure_http for that).
func plainHTTP(dests []*Destination) []*Destination {
	for _, d := range dests {
		if d != nil && d.URL != nil && d.URL.Scheme == "http" {
			d.InsecureHTTP = true
		}
	}
	return dests
}

// mustSet hands dests (on plain http sinks) to d.
func mustSet(t testing.TB, d *Dispatcher, dests []*Destination) {
	t.Helper()
	if err := d.SetDestinations(plainHTTP(dests)); err != nil {
		t.Fatal(err)
	}
}

// ms builds a schedule in milliseconds.
func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}
