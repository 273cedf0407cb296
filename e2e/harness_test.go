package e2e

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// caddyBin is the binary under test: $CADDY_BIN, or built once by TestMain.
var caddyBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	caddyBin = os.Getenv("CADDY_BIN")
	if caddyBin == "" {
		dir, err := os.MkdirTemp("", "postback-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		caddyBin = filepath.Join(dir, "caddy")
		build := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy")
		build.Dir = ".."
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build caddy:", err)
			return 1
		}
	}
	return m.Run()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer safe for a process's output and a test reading it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// caddyProc is one running caddy process.
type caddyProc struct {
	t         testing.TB
	cmd       *exec.Cmd
	adminPort int
	logs      *syncBuffer
	done      chan error
}

// startCaddy writes caddyfile (with {admin} replaced by the admin address)
// to dir and runs the binary on it, waiting until the admin API answers.
func startCaddy(t testing.TB, dir, caddyfile string, env ...string) *caddyProc {
	t.Helper()
	p := &caddyProc{t: t, adminPort: freePort(t), logs: &syncBuffer{}, done: make(chan error, 1)}
	cfg := strings.ReplaceAll(caddyfile, "{admin}", fmt.Sprintf("127.0.0.1:%d", p.adminPort))
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(caddyBin, "run", "--config", path, "--adapter", "caddyfile")
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() { p.stop() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/config/", p.adminPort))
		if err == nil {
			resp.Body.Close()
			return p
		}
		select {
		case err := <-p.done:
			t.Fatalf("caddy exited at start: %v\n%s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not start within 30s:\n%s", p.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill9 ends the process at once, as a crash or the OOM killer would.
func (p *caddyProc) kill9() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.done <- nil
}

// stop asks caddy to exit gracefully and waits.
func (p *caddyProc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.done <- nil
}

func (p *caddyProc) adminURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", p.adminPort, path)
}

// sink is an HTTPS destination on loopback with its own CA, recording what
// it receives. It can be started on a fixed port after the edge has been
// posting to that port in vain (a destination that comes back).
type sink struct {
	mu     sync.Mutex
	bodies map[string][]string // X-Postback-Id → bodies received (answered 2xx)
	total  int                 // requests, whatever the answer
	reqs   []sinkRequest       // every request, in arrival order
	srv    *httptest.Server
	caFile string
}

// sinkRequest is one request a sink received.
type sinkRequest struct {
	ID, DIN, Attempt, ItemCode string
	Method, ContentType        string
	Body                       string
	Status                     int       // what the sink answered
	At                         time.Time // when it arrived
}

func newSink(t testing.TB, dir string, port int) *sink {
	t.Helper()
	return newSinkFunc(t, dir, port, nil)
}

// newSinkFunc is newSink whose answers respond chooses (nil: always 200).
// Only bodies answered with a 2xx count as received.
func newSinkFunc(t testing.TB, dir string, port int, respond func(r *http.Request) int) *sink {
	t.Helper()
	s := &sink{bodies: map[string][]string{}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		status := http.StatusOK
		if respond != nil {
			status = respond(r)
		}
		s.mu.Lock()
		id := r.Header.Get("X-Postback-Id")
		if status >= 200 && status <= 299 {
			s.bodies[id] = append(s.bodies[id], string(b))
		}
		s.total++
		s.reqs = append(s.reqs, sinkRequest{
			ID: id, DIN: r.Header.Get("X-Postback-Din"), Attempt: r.Header.Get("X-Postback-Attempt"),
			ItemCode: r.Header.Get("X-Postback-Item-Code"), Method: r.Method,
			ContentType: r.Header.Get("Content-Type"), Body: string(b), Status: status, At: time.Now(),
		})
		s.mu.Unlock()
		w.WriteHeader(status)
	}))
	if port != 0 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		s.srv.Listener.Close()
		s.srv.Listener = l
	}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.caFile = httptestCA(t, dir)
	return s
}

// httptestCA writes the certificate that every httptest TLS server uses
// (valid for 127.0.0.1) as a ca_cert file, so a config can trust a sink that
// is not started yet.
func httptestCA(t testing.TB, dir string) string {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	path := filepath.Join(dir, "httptest-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// requests returns a copy of every request received so far.
func (s *sink) requests() []sinkRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkRequest(nil), s.reqs...)
}

// received returns every distinct body and the number of requests.
func (s *sink) received() (bodies map[string]int, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bodies = map[string]int{}
	for _, bs := range s.bodies {
		for _, b := range bs {
			bodies[b]++
		}
	}
	return bodies, s.total
}

func waitUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(25 * time.Millisecond):
		}
	}
}
