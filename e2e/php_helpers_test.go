package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// legacyRoot is the absolute path of the sample legacy scripts.
func legacyRoot(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "examples", "legacy-php"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "itns.php")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// phpServer is a php-cgi FastCGI server running the legacy scripts, as a
// merchant runs them; the scripts log each call under dataDir.
type phpServer struct {
	addr    string
	dataDir string
	cmd     *exec.Cmd
	logs    *testutil.LogBuffer
}

// startPHP runs `php-cgi -b 127.0.0.1:<port>` with four children until the
// test ends.
func startPHP(t testing.TB) *phpServer {
	t.Helper()
	bin := testutil.NeedTool(t, "php-cgi")
	p := &phpServer{
		addr:    fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
		dataDir: t.TempDir(),
		logs:    &testutil.LogBuffer{},
	}
	p.cmd = exec.Command(bin, "-b", p.addr)
	p.cmd.Env = append(os.Environ(), "PHP_FCGI_CHILDREN=4", "PHP_FCGI_MAX_REQUESTS=0", "LEGACY_DATA_DIR="+p.dataDir)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	// Its own process group: the children php-cgi forks end with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		// Children that outlived the parent.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
	shown := false // the log: php-cgi listens, or a failure showed it
	defer func() {
		if !shown {
			t.Logf("php-cgi log:\n%s", p.logs.String())
		}
	}()
	testutil.WaitFor(t, "php-cgi to listen on "+p.addr, 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
			return true
		}
		select {
		case <-done:
			shown = true
			t.Fatalf("php-cgi exited at start:\n%s", p.logs.String())
		default:
		}
		return false
	})
	shown = true
	return p
}

// records returns the lines script has logged, one per call.
func (p *phpServer) records(t testing.TB, script string) []map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join(p.dataDir, script+".log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("%s.log: %v in %q", script, err, sc.Text())
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// calls is how often script ran.
func (p *phpServer) calls(t testing.TB, script string) int {
	t.Helper()
	return len(p.records(t, script))
}

const (
	itnsSecret  = "e2e-itns-secret-Jürgen"
	formContent = "application/x-www-form-urlencoded"
)

// itnsFields is an AffiliCon ITNS notification (every name with prefix),
// with values that break naive signing or parsing: spaces at both ends, an
// en dash and umlauts, '@' and '+' (percent-encoded on the wire), an empty
// value and a card number.
func itnsFields(prefix, receipt string, transtime time.Time) []handlers.Field {
	f := []handlers.Field{
		{Name: "transaction", Value: "SALE"},
		{Name: "tranreceipt", Value: receipt},
		{Name: "prodid", Value: "1707"},
		{Name: "prodtitle", Value: "Guide – 2nd edition"},
		{Name: "custemail", Value: "anna.o+shop@example.com"},
		{Name: "custfullname", Value: "  Jürgen Müller – VIP  "},
		{Name: "custcc", Value: "4111111111111111"},
		{Name: "transamount", Value: "19.95"},
		{Name: "transaffiliate", Value: ""},
		{Name: "transtime", Value: strconv.FormatInt(transtime.Unix(), 10)},
	}
	for i := range f {
		f[i].Name = prefix + f[i].Name
	}
	return f
}

// signITNS signs fields with secret as the sender does (the Go code behind
// `caddy postback sign`) and returns the form body.
func signITNS(t testing.TB, secret, prefix string, fields []handlers.Field) string {
	t.Helper()
	v, err := handlers.NewITNS(handlers.ITNSConfig{Secrets: [][]byte{[]byte(secret)}, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	body, err := v.SignForm(fields)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// signWithCLI signs name=value arguments with the built binary, as an
// operator testing an endpoint would.
func signWithCLI(t testing.TB, secret, prefix string, fields []handlers.Field) string {
	t.Helper()
	args := []string{"--prefix", prefix}
	for _, f := range fields {
		args = append(args, f.Name+"="+f.Value)
	}
	return runSignCLI(t, secret, "", args...)
}

// runSignCLI runs `caddy postback sign --secret {env.E2E_ITNS_SECRET}
// <args>` with the variable set to secret and stdin on standard input, and
// returns what it printed, without the newline.
func runSignCLI(t testing.TB, secret, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(caddyBin, append([]string{"postback", "sign", "--secret", "{env.E2E_ITNS_SECRET}"}, args...)...)
	cmd.Env = append(os.Environ(), "E2E_ITNS_SECRET="+secret)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("caddy postback sign: %v\n%s", err, stderr.String())
	}
	return strings.TrimSuffix(string(out), "\n")
}

// answer is what a sender saw.
type answer struct {
	Status int
	Header http.Header
	Body   string
}

func (a answer) String() string { return fmt.Sprintf("%d %q", a.Status, a.Body) }

// do sends one request and reads the whole answer.
func do(t testing.TB, client *http.Client, method, url, contentType, body string) answer {
	t.Helper()
	a, err := tryDo(client, method, url, contentType, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return a
}

func tryDo(client *http.Client, method, url, contentType, body string) (answer, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return answer{}, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, nil
}

// clientFrom is an HTTP client whose connections come from localIP, e.g.
// 127.0.0.2: a sender that is not on an allowlist listing 127.0.0.1 (the
// whole of 127.0.0.0/8 is local on Linux).
func clientFrom(localIP string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
	}
}

// requireSecondLoopback skips (fails under CI) where 127.0.0.2 cannot be
// used as a source address.
func requireSecondLoopback(t testing.TB) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		defer l.Close()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: time.Second}
		var c net.Conn
		if c, err = d.Dial("tcp", l.Addr().String()); err == nil {
			c.Close()
			return
		}
	}
	if runtime.GOOS == "linux" {
		t.Fatalf("cannot dial from 127.0.0.2: %v", err)
	}
	testutil.SkipOrFail(t, "cannot dial from 127.0.0.2 here: %v", err)
}

// metrics reads the Prometheus text exposition of the admin /metrics
// endpoint into name{labels} → value.
func (p *caddyProc) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.adminURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// metric is one series of p's metrics, 0 when absent.
func (p *caddyProc) metric(t testing.TB, series string) float64 {
	t.Helper()
	return p.metrics(t)[series]
}

// pid is the process id of the running caddy.
func (p *caddyProc) pid() int { return p.cmd.Process.Pid }

// reload runs `caddy reload` against p's admin endpoint with a new
// Caddyfile, as an operator does.
func (p *caddyProc) reload(t testing.TB, dir, caddyfile string) {
	t.Helper()
	if err := reloadErr(p, dir, caddyfile); err != nil {
		t.Fatalf("caddy reload: %v\nserver log:\n%s", err, p.logs.String())
	}
}

// latencies summarises request durations.
type latencies []time.Duration

func (l latencies) percentile(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	if i < 0 {
		i = 0
	}
	return s[i]
}

func (l latencies) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s", len(l),
		ms(l.percentile(50)), ms(l.percentile(90)), ms(l.percentile(99)), ms(l.percentile(100)))
}

// gpgPartner is a partner's key pair in a throw-away GnuPG home.
type gpgPartner struct {
	*testutil.GPG
	pubKey string // ASCII-armored public key file, for pgp_key
}

// newGPGPartner generates the partner's key with GnuPG and exports the
// public key, as the partner would before handing it over.
func newGPGPartner(t testing.TB) *gpgPartner {
	t.Helper()
	g := testutil.NewGPG(t)
	g.GenKey(t, "Partner <p@example.com>", "rsa3072", "encrypt", "never")
	return &gpgPartner{GPG: g, pubKey: g.PublicKeyFile(t, "p@example.com")}
}

// figures logs one E2E-FIGURES line, the format the lead collects.
func figures(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Logf("E2E-FIGURES: "+format, args...)
}
