package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
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

// caddyProc is one running caddy process.
type caddyProc struct {
	t         testing.TB
	cmd       *exec.Cmd
	adminPort int
	logs      *testutil.LogBuffer
	done      chan error
}

// startCaddy writes caddyfile (with {admin} replaced by the admin address)
// to dir and runs the binary on it, waiting until the admin API answers.
func startCaddy(t testing.TB, dir, caddyfile string, env ...string) *caddyProc {
	t.Helper()
	p := &caddyProc{t: t, adminPort: testutil.FreePort(t), logs: &testutil.LogBuffer{}, done: make(chan error, 1)}
	path, err := p.writeConfig(dir, caddyfile)
	if err != nil {
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
	shown := false // the log: the admin API answered, or a failure showed it
	defer func() {
		if !shown {
			t.Logf("caddy log:\n%s", p.logs.String())
		}
	}()
	testutil.WaitFor(t, "caddy to start (its admin API to answer)", 30*time.Second, func() bool {
		resp, err := http.Get(p.adminURL("/config/"))
		if err == nil {
			resp.Body.Close()
			return true
		}
		select {
		case err := <-p.done:
			shown = true
			t.Fatalf("caddy exited at start: %v\n%s", err, p.logs.String())
		default:
		}
		return false
	})
	shown = true
	return p
}

// writeConfig writes caddyfile, with {admin} replaced by p's admin address,
// to dir/Caddyfile and returns that path.
func (p *caddyProc) writeConfig(dir, caddyfile string) (string, error) {
	cfg := strings.ReplaceAll(caddyfile, "{admin}", fmt.Sprintf("127.0.0.1:%d", p.adminPort))
	path := filepath.Join(dir, "Caddyfile")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
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
	srv := testutil.NewTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}), testutil.TLSOptions{Dir: dir, Port: port})
	s.srv, s.caFile = srv.Server, srv.CAFile
	return s
}

// requests returns a copy of every request received so far.
func (s *sink) requests() []sinkRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkRequest(nil), s.reqs...)
}

// idsByBody returns, for every distinct body received (answered 2xx), the
// distinct X-Postback-Ids it came with: one id per body means one delivery
// per notification, however often at-least-once sent it.
func (s *sink) idsByBody() map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	for id, bs := range s.bodies {
		for _, b := range bs {
			if !slices.Contains(out[b], id) {
				out[b] = append(out[b], id)
			}
		}
	}
	return out
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
