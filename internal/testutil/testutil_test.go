package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeTB records what a helper reports. Fatal and Skip end the goroutine,
// as they end a test; run calls a helper on a goroutine of its own.
type fakeTB struct {
	testing.TB // the real test, for TempDir and Cleanup

	mu          sync.Mutex
	fatal, skip string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) { f.end(&f.fatal, fmt.Sprintf(format, args...)) }
func (f *fakeTB) Fatal(args ...any)                 { f.end(&f.fatal, fmt.Sprint(args...)) }
func (f *fakeTB) Skipf(format string, args ...any)  { f.end(&f.skip, fmt.Sprintf(format, args...)) }
func (f *fakeTB) Skip(args ...any)                  { f.end(&f.skip, fmt.Sprint(args...)) }

func (f *fakeTB) end(field *string, msg string) {
	f.mu.Lock()
	*field = msg
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) run(fn func(tb testing.TB)) {
	done := make(chan struct{})
	go func() { defer close(done); fn(f) }()
	<-done
}

func TestWaitForReturnsOnceTheConditionHolds(t *testing.T) {
	f := &fakeTB{TB: t}
	calls := 0
	returned := false
	f.run(func(tb testing.TB) {
		WaitFor(tb, "the third call", 10*time.Second, func() bool { calls++; return calls == 3 })
		returned = true
	})
	if !returned || f.fatal != "" || calls != 3 {
		t.Fatalf("returned %t after %d calls, fatal %q", returned, calls, f.fatal)
	}
}

func TestWaitForFailsOnTimeout(t *testing.T) {
	f := &fakeTB{TB: t}
	start := time.Now()
	returned := false
	calls := 0
	f.run(func(tb testing.TB) {
		WaitFor(tb, "a thing that never happens", 150*time.Millisecond, func() bool { calls++; return false })
		returned = true
	})
	took := time.Since(start)
	if returned {
		t.Fatal("WaitFor returned after its timeout; it must fail the test")
	}
	if !strings.Contains(f.fatal, "a thing that never happens") || !strings.Contains(f.fatal, "timeout 150ms") {
		t.Errorf("fatal %q: want what it waited for and the timeout", f.fatal)
	}
	if took < 150*time.Millisecond || took > 5*time.Second {
		t.Errorf("failed after %s, want just after 150ms", took)
	}
	if calls < 3 {
		t.Errorf("cond called %d times in 150ms: the interval is not short", calls)
	}
}

func TestDeadAddrRefuses(t *testing.T) {
	addr := DeadAddr(t)
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("DeadAddr = %q (%v), want 127.0.0.1:<port>", addr, err)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s: %v, want connection refused", addr, err)
	}
}

func TestLogBufferConcurrent(t *testing.T) {
	var b LogBuffer
	log := b.Slog()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				log.Debug("line", "g", g, "i", i)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 800 || !strings.Contains(lines[0], "level=DEBUG msg=line") {
		t.Fatalf("%d lines, first %q; want 800 debug lines", len(lines), lines[0])
	}
}

func TestNeedTool(t *testing.T) {
	if p := NeedTool(t, "sh", "", "/nonexistent/sh"); !filepath.IsAbs(p) {
		t.Errorf("NeedTool(sh) = %q", p)
	}
	t.Setenv("CI", "")
	f := &fakeTB{TB: t}
	f.run(func(tb testing.TB) { NeedTool(tb, "no-such-tool-xyz", "/nonexistent/xyz") })
	if f.fatal != "" || !strings.Contains(f.skip, "no-such-tool-xyz not found") || !strings.Contains(f.skip, "/nonexistent/xyz") {
		t.Errorf("outside CI: skip %q, fatal %q", f.skip, f.fatal)
	}
	t.Setenv("CI", "true")
	f = &fakeTB{TB: t}
	f.run(func(tb testing.TB) { NeedTool(tb, "no-such-tool-xyz") })
	if f.skip != "" || !strings.Contains(f.fatal, "no-such-tool-xyz not found") || !strings.Contains(f.fatal, "CI=true") {
		t.Errorf("in CI: skip %q, fatal %q", f.skip, f.fatal)
	}
}

// clientTrusting is an HTTPS client that trusts only the PEM in file.
func clientTrusting(t *testing.T, file, serverName string) *http.Client {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no PEM certificate", file)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName}}}
}

func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

var teapot = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })

func TestTLSServerTrustedByItsCAFile(t *testing.T) {
	dir := t.TempDir()
	early := HTTPTestCA(t, dir) // written before the server exists
	port := FreePort(t)
	s := NewTLSServer(t, teapot, TLSOptions{Dir: dir, Port: port, Quiet: true})
	if !strings.HasSuffix(s.URL, fmt.Sprintf(":%d", port)) || filepath.Dir(s.CAFile) != dir {
		t.Errorf("URL %s, CA file %s; want port %d and the file in %s", s.URL, s.CAFile, port, dir)
	}
	for _, f := range []string{s.CAFile, early} {
		if err := get(clientTrusting(t, f, ""), s.URL); err != nil {
			t.Errorf("trusting %s: %v", f, err)
		}
	}
	if err := get(&http.Client{Timeout: 10 * time.Second}, s.URL); err == nil {
		t.Error("a client trusting only the system roots reached the server")
	}
}

func TestTLSServerOfOwnCA(t *testing.T) {
	ca := NewCA(t, "")
	loop := NewTLSServer(t, teapot, TLSOptions{CA: ca, Quiet: true})
	if loop.CAFile != ca.File {
		t.Errorf("CAFile %s, want the CA's %s", loop.CAFile, ca.File)
	}
	if err := get(clientTrusting(t, ca.File, ""), loop.URL); err != nil {
		t.Errorf("127.0.0.1 certificate of the CA: %v", err)
	}
	other := NewTLSServer(t, teapot, TLSOptions{CA: ca, Names: []string{"partner.example"}, Quiet: true})
	if err := get(clientTrusting(t, ca.File, "partner.example"), other.URL); err != nil {
		t.Errorf("partner.example, asked for by name: %v", err)
	}
	var host x509.HostnameError
	if err := get(clientTrusting(t, ca.File, ""), other.URL); !errors.As(err, &host) {
		t.Errorf("partner.example's certificate at 127.0.0.1: %v, want a name mismatch", err)
	}
	if err := get(clientTrusting(t, HTTPTestCA(t, ""), ""), loop.URL); err == nil {
		t.Error("httptest's certificate trusted a server of another CA")
	}
}

// agents lists the processes whose command line names home.
func agents(t *testing.T, home string) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), home) {
			out = append(out, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

func TestGPGRoundTripLeavesNoAgent(t *testing.T) {
	var home string
	t.Run("gpg", func(t *testing.T) {
		g := NewGPG(t)
		home = g.Home
		fpr := g.GenKey(t, "Partner <p@example.com>", "future-default", "default", "never")
		pub, err := os.ReadFile(g.PublicKeyFile(t, "p@example.com"))
		if err != nil || len(fpr) != 40 || !strings.HasPrefix(string(pub), "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
			t.Fatalf("fingerprint %q, public key %.40q (%v)", fpr, pub, err)
		}
		msg := filepath.Join(t.TempDir(), "msg.asc")
		enc := g.MustRun(t, []byte("cc=4111111111111111"), "--armor", "--trust-model", "always", "--encrypt", "--recipient", fpr)
		if err := os.WriteFile(msg, enc, 0o600); err != nil {
			t.Fatal(err)
		}
		plain, status := g.Decrypt(t, msg)
		if string(plain) != "cc=4111111111111111" || !strings.Contains(status, "[GNUPG:] DECRYPTION_OKAY") {
			t.Errorf("decrypted %q, status:\n%s", plain, status)
		}
		if a := agents(t, g.Home); len(a) == 0 {
			t.Errorf("no gpg-agent ran for %s: the checks below prove nothing", g.Home)
		}
		g.Close() // as the cleanup does, but before the home is removed
		if a := agents(t, g.Home); len(a) != 0 {
			t.Errorf("Close left processes of the gpg home running: %q", a)
		}
	})
	if home == "" {
		return // skipped
	}
	if a := agents(t, home); len(a) != 0 {
		t.Errorf("processes outlived the test's gpg home: %q", a)
	}
	if _, err := os.Stat(home); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gpg home %s left behind: %v", home, err)
	}
}
