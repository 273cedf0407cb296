package caddymodule

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run a real Caddy (in process, on loopback) with the filter in
// front of an upstream that records what reaches it, standing in for the
// legacy script.

type seenRequest struct {
	method        string
	path          string
	body          []byte
	contentLength int64
	contentType   string
}

type recordingUpstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		u.mu.Lock()
		u.seen = append(u.seen, seenRequest{r.Method, r.URL.Path, b, r.ContentLength, r.Header.Get("Content-Type")})
		u.mu.Unlock()
		_, _ = io.WriteString(w, "SALE OK\n1234")
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *recordingUpstream) addr() string { return u.srv.Listener.Addr().String() }

// take returns and forgets what reached the upstream so far.
func (u *recordingUpstream) take() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.seen
	u.seen = nil
	return s
}

// clientFrom is an HTTP client whose connections come from localIP, so a
// test can be a trusted proxy (127.0.0.1) or some other peer (127.0.0.2).
func clientFrom(localIP string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil, // never an environment proxy
			DialContext:       d.DialContext,
			DisableKeepAlives: true, // one peer address per request, as set
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type result struct {
	status int
	header http.Header
	body   string
}

func doRequest(t *testing.T, c *http.Client, method, url string, body io.Reader, header map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading response: %v", method, url, err)
	}
	return result{resp.StatusCode, resp.Header, string(b)}
}

const formType = "application/x-www-form-urlencoded"

// gatewayBody is a NATS process gateway cross-sale: card data, an encoded
// "@", a non-ASCII en dash, CRLF and a NUL byte must all arrive unchanged.
var gatewayBody = "xs_nats=MC4wLjAuMC4wLjAuMC4wLjA&username=jane&password=s%26cret&email=jane%40example.com" +
	"&cc=4111111111111111&cvv=123&firstname=J\u2013ane&note=a\r\nb\x00c"

// filteredMetric reads caddy_postback_filtered_total{reason} from the admin
// /metrics endpoint (0 when the series does not exist yet).
func filteredMetric(t *testing.T, reason string) float64 {
	t.Helper()
	resp, err := clientFrom("").Get(fmt.Sprintf("http://localhost:%d/metrics", testAdminPort()))
	if err != nil {
		t.Fatalf("admin /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("admin /metrics: status %d", resp.StatusCode)
	}
	prefix := fmt.Sprintf(`caddy_postback_filtered_total{reason=%q} `, reason)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", sc.Text(), err)
			}
			return f
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return 0
}

func TestFilterIntegrationAllowedPostReachesUpstream(t *testing.T) {
	up := newRecordingUpstream(t)
	newTester(t, "", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	postback_filter {
		allow 127.0.0.1 2001:db8::/32
	}
	reverse_proxy UPSTREAM
}
`, "UPSTREAM", up.addr()))
	c := clientFrom("127.0.0.1")

	r := doRequest(t, c, "POST", testURL(0, "/signup/process_gateway.php"), strings.NewReader(gatewayBody),
		map[string]string{"Content-Type": formType})
	if r.status != 200 || r.body != "SALE OK\n1234" {
		t.Fatalf("allowed POST: %d %q", r.status, r.body)
	}
	seen := up.take()
	if len(seen) != 1 {
		t.Fatalf("upstream saw %d requests, want 1", len(seen))
	}
	s := seen[0]
	if string(s.body) != gatewayBody || s.contentLength != int64(len(gatewayBody)) ||
		s.method != "POST" || s.path != "/signup/process_gateway.php" || s.contentType != formType {
		t.Errorf("upstream saw %s %s (%s, length %d) %q; want the request unchanged", s.method, s.path, s.contentType, s.contentLength, s.body)
	}

	// A chunked body (no Content-Length) arrives whole as well.
	r = doRequest(t, c, "POST", testURL(0, "/signup/process_gateway.php"),
		io.MultiReader(strings.NewReader(gatewayBody[:10]), strings.NewReader(gatewayBody[10:])),
		map[string]string{"Content-Type": formType})
	seen = up.take()
	if r.status != 200 || len(seen) != 1 || string(seen[0].body) != gatewayBody {
		t.Errorf("chunked POST: status %d, upstream saw %d requests", r.status, len(seen))
	}
}

func TestFilterIntegrationMethods(t *testing.T) {
	up := newRecordingUpstream(t)
	newTester(t, "", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	postback_filter /signup/process_extended.php {
		methods GET POST
	}
	postback_filter /signup/process_gateway.php
	reverse_proxy UPSTREAM
}
`, "UPSTREAM", up.addr()))
	c := clientFrom("127.0.0.1")
	gateway := testURL(0, "/signup/process_gateway.php")

	for _, m := range []string{"GET", "HEAD", "OPTIONS", "PUT", "DELETE"} {
		r := doRequest(t, c, m, gateway+"?cc=4111111111111111", nil, nil)
		if r.status != 405 || r.header.Get("Allow") != "POST" {
			t.Errorf("%s gateway: %d, Allow %q; want 405, Allow POST", m, r.status, r.header.Get("Allow"))
		}
	}
	if seen := up.take(); len(seen) != 0 {
		t.Errorf("upstream saw %d refused requests", len(seen))
	}

	// Extended sales accept GET and POST; HEAD is not implied by GET.
	ext := testURL(0, "/signup/process_extended.php")
	r := doRequest(t, c, "GET", ext+"?extended_id=x&action=SALE&transid=1", nil, nil)
	if r.status != 200 {
		t.Errorf("GET extended: %d", r.status)
	}
	r = doRequest(t, c, "POST", ext, strings.NewReader("extended_id=x&action=SALE"), map[string]string{"Content-Type": formType})
	if r.status != 200 {
		t.Errorf("POST extended: %d", r.status)
	}
	r = doRequest(t, c, "HEAD", ext, nil, nil)
	if r.status != 405 || r.header.Get("Allow") != "GET, POST" {
		t.Errorf("HEAD extended: %d, Allow %q; want 405, Allow GET, POST", r.status, r.header.Get("Allow"))
	}
	if seen := up.take(); len(seen) != 2 || seen[0].method != "GET" || seen[1].method != "POST" {
		t.Errorf("upstream saw %+v; want the GET and the POST", seen)
	}
}

func TestFilterIntegrationUnlistedSenderGetsDenyBody(t *testing.T) {
	up := newRecordingUpstream(t)
	newTester(t, "", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	postback_filter {
		allow 203.0.113.10 198.51.100.0/24
		deny_status 200
		deny_body "SALE DECLINED\nNOT ALLOWED IP"
	}
	reverse_proxy UPSTREAM
}
`, "UPSTREAM", up.addr()))

	before := filteredMetric(t, "ip")
	for _, from := range []string{"127.0.0.1", "127.0.0.2"} {
		r := doRequest(t, clientFrom(from), "POST", testURL(0, "/signup/process_gateway.php"),
			strings.NewReader(gatewayBody), map[string]string{"Content-Type": formType})
		if r.status != 200 || r.body != "SALE DECLINED\nNOT ALLOWED IP" {
			t.Errorf("from %s: %d %q; want the configured denial", from, r.status, r.body)
		}
	}
	if seen := up.take(); len(seen) != 0 {
		t.Errorf("upstream saw %d requests from unlisted senders", len(seen))
	}
	after := filteredMetric(t, "ip")
	if after-before != 2 {
		t.Errorf("caddy_postback_filtered_total{reason=\"ip\"} went up by %v, want 2", after-before)
	}

	// A config reload keeps the count.
	newTester(t, "", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	postback_filter {
		allow 203.0.113.10
	}
	reverse_proxy UPSTREAM
}
`, "UPSTREAM", up.addr()))
	if got := filteredMetric(t, "ip"); got != after {
		t.Errorf("after a reload filtered_total{reason=\"ip\"} = %v, want %v", got, after)
	}
}

func TestFilterIntegrationTrustedProxies(t *testing.T) {
	up := newRecordingUpstream(t)
	sites := strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	postback_filter {
		allow 203.0.113.10
	}
	reverse_proxy UPSTREAM
}
`, "UPSTREAM", up.addr())
	post := func(from, xff string) int {
		t.Helper()
		h := map[string]string{"Content-Type": formType}
		if xff != "" {
			h["X-Forwarded-For"] = xff
		}
		return doRequest(t, clientFrom(from), "POST", testURL(0, "/itns.php"), strings.NewReader(gatewayBody), h).status
	}

	t.Run("trusted", func(t *testing.T) {
		newTester(t, `servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}`, sites)
		cases := []struct {
			from, xff string
			want      int
		}{
			{"127.0.0.1", "203.0.113.10", 200},                     // forwarded by the trusted proxy
			{"127.0.0.1", "::ffff:203.0.113.10", 200},              // mapped form of the same sender
			{"127.0.0.1", "203.0.113.10, 127.0.0.1", 200},          // left-most is the client
			{"127.0.0.1", "198.51.100.1", 403},                     // proxy forwards an unlisted sender
			{"127.0.0.1", "", 403},                                 // the proxy itself is not listed
			{"127.0.0.2", "203.0.113.10", 403},                     // untrusted peer: header ignored
			{"127.0.0.1", "garbage, 203.0.113.10", 200},            // first valid address counts
			{"127.0.0.1", "198.51.100.1, 203.0.113.10", 403},       // client first, then proxies
			{"127.0.0.2", "127.0.0.1, 203.0.113.10", 403},          // chain forged by an untrusted peer
			{"127.0.0.1", "[2001:db8::1]:1234, 203.0.113.10", 403}, // IPv6 client, unlisted
		}
		want200 := 0
		for _, c := range cases {
			if got := post(c.from, c.xff); got != c.want {
				t.Errorf("from %s, X-Forwarded-For %q: %d, want %d", c.from, c.xff, got, c.want)
			}
			if c.want == 200 {
				want200++
			}
		}
		seen := up.take()
		if len(seen) != want200 {
			t.Fatalf("upstream saw %d requests, want %d", len(seen), want200)
		}
		for _, s := range seen {
			if string(s.body) != gatewayBody {
				t.Errorf("upstream body %q", s.body)
			}
		}
	})

	// With trusted_proxies_strict the header is read right to left and the
	// first untrusted address counts, so a sender cannot prepend a forged one
	// to a proxy that appends.
	t.Run("strict", func(t *testing.T) {
		newTester(t, `servers {
		trusted_proxies static 127.0.0.1/32
		trusted_proxies_strict
		client_ip_headers X-Forwarded-For
	}`, sites)
		cases := []struct {
			xff  string
			want int
		}{
			{"203.0.113.10", 200},
			{"203.0.113.10, 198.51.100.1", 403}, // forged 203.0.113.10 prepended
			{"198.51.100.1, 203.0.113.10", 200},
			{"198.51.100.1, 203.0.113.10, 127.0.0.1", 200}, // trusted hop skipped
		}
		for _, c := range cases {
			if got := post("127.0.0.1", c.xff); got != c.want {
				t.Errorf("X-Forwarded-For %q: %d, want %d", c.xff, got, c.want)
			}
		}
		if seen := up.take(); len(seen) != 3 {
			t.Errorf("upstream saw %d requests, want 3", len(seen))
		}
	})

	t.Run("untrusted", func(t *testing.T) {
		newTester(t, "", sites)
		if got := post("127.0.0.1", "203.0.113.10"); got != 403 {
			t.Errorf("X-Forwarded-For without trusted_proxies: %d, want 403", got)
		}
		if seen := up.take(); len(seen) != 0 {
			t.Errorf("upstream saw %d requests", len(seen))
		}
	})
}

func TestFilterIntegrationMaxBody(t *testing.T) {
	up := newRecordingUpstream(t)
	newTester(t, "", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	postback_filter {
		max_body 1KiB
	}
	reverse_proxy UPSTREAM
}
`, "UPSTREAM", up.addr()))
	c := clientFrom("127.0.0.1")
	url := testURL(0, "/itns.php")
	before := filteredMetric(t, "body_too_large")

	exact := strings.Repeat("x", 1024)
	if r := doRequest(t, c, "POST", url, strings.NewReader(exact), nil); r.status != 200 {
		t.Errorf("1024 bytes: %d, want 200", r.status)
	}
	if r := doRequest(t, c, "POST", url, strings.NewReader(exact+"y"), nil); r.status != 413 {
		t.Errorf("1025 bytes: %d, want 413", r.status)
	}
	// Without Content-Length the limit holds while reading.
	chunked := io.MultiReader(strings.NewReader(exact), bytes.NewReader(make([]byte, 1024)))
	if r := doRequest(t, c, "POST", url, chunked, nil); r.status != 413 {
		t.Errorf("2048 bytes chunked: %d, want 413", r.status)
	}
	seen := up.take()
	if len(seen) != 1 || string(seen[0].body) != exact {
		t.Errorf("upstream saw %d requests; want only the 1024-byte one, intact", len(seen))
	}
	if got := filteredMetric(t, "body_too_large") - before; got != 2 {
		t.Errorf("filtered_total{reason=\"body_too_large\"} went up by %v, want 2", got)
	}
}

func TestFilterIntegrationHandleErrorsShapesDenial(t *testing.T) {
	up := newRecordingUpstream(t)
	newTester(t, "", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	postback_filter {
		allow 203.0.113.10
	}
	reverse_proxy UPSTREAM
	handle_errors 403 405 413 {
		respond <<TXT
			SALE DECLINED
			{postback.deny_reason} {err.status_code}
			TXT 200
	}
}
http://127.0.0.1:{port1} {
	postback_filter {
		methods POST
	}
	reverse_proxy UPSTREAM
	handle_errors {
		respond "refused: {postback.deny_reason}" {err.status_code}
	}
}
`, "UPSTREAM", up.addr()))
	c := clientFrom("127.0.0.1")

	r := doRequest(t, c, "POST", testURL(0, "/process_gateway.php"), strings.NewReader(gatewayBody), nil)
	if r.status != 200 || r.body != "SALE DECLINED\nip 403" {
		t.Errorf("unlisted sender: %d %q; want 200 %q", r.status, r.body, "SALE DECLINED\nip 403")
	}
	r = doRequest(t, c, "GET", testURL(1, "/process_gateway.php"), nil, nil)
	if r.status != 405 || r.body != "refused: method" || r.header.Get("Allow") != "POST" {
		t.Errorf("GET: %d %q Allow %q; want 405 %q with Allow POST", r.status, r.body, r.header.Get("Allow"), "refused: method")
	}
	if seen := up.take(); len(seen) != 0 {
		t.Errorf("upstream saw %d refused requests", len(seen))
	}
}

// The README's NATS example: one deny_body, worded per reason with map.
func TestFilterIntegrationNATSReasonsViaMap(t *testing.T) {
	up := newRecordingUpstream(t)
	newTester(t, "", strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	map {postback.deny_reason} {nats_error} {
		ip "NOT ALLOWED IP"
		default "UNSUPPORTED REQUEST"
	}
	postback_filter /signup/process_gateway.php {
		allow 127.0.0.1
		deny_status 200
		deny_body "SALE DECLINED\n{nats_error}"
	}
	postback_filter /signup/closed.php {
		allow 203.0.113.10
		deny_status 200
		deny_body "SALE DECLINED\n{nats_error}"
	}
	reverse_proxy UPSTREAM
}
`, "UPSTREAM", up.addr()))
	c := clientFrom("127.0.0.1")
	r := doRequest(t, c, "POST", testURL(0, "/signup/closed.php"), strings.NewReader(gatewayBody), nil)
	if r.status != 200 || r.body != "SALE DECLINED\nNOT ALLOWED IP" {
		t.Errorf("unlisted sender: %d %q", r.status, r.body)
	}
	r = doRequest(t, c, "GET", testURL(0, "/signup/process_gateway.php"), nil, nil)
	if r.status != 200 || r.body != "SALE DECLINED\nUNSUPPORTED REQUEST" || r.header.Get("Allow") != "POST" {
		t.Errorf("GET: %d %q Allow %q", r.status, r.body, r.header.Get("Allow"))
	}
	r = doRequest(t, c, "POST", testURL(0, "/signup/process_gateway.php"), strings.NewReader(gatewayBody), nil)
	if r.status != 200 || r.body != "SALE OK\n1234" {
		t.Errorf("listed sender: %d %q", r.status, r.body)
	}
	if seen := up.take(); len(seen) != 1 {
		t.Errorf("upstream saw %d requests, want 1", len(seen))
	}
}

func TestFilterIntegrationIPv6(t *testing.T) {
	up := newRecordingUpstream(t)
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	newTester(t, "", strings.ReplaceAll(`
http://[::1]:{port2} {
	bind ::1
	postback_filter {
		allow ::1
	}
	reverse_proxy UPSTREAM
}
http://127.0.0.1:{port0} {
	postback_filter {
		allow ::1 ::ffff:127.0.0.2
	}
	reverse_proxy UPSTREAM
}
`, "UPSTREAM", up.addr()))
	v6 := fmt.Sprintf("http://[::1]:%d/itns.php", testPort(2))
	if r := doRequest(t, clientFrom(""), "POST", v6, strings.NewReader(gatewayBody), nil); r.status != 200 {
		t.Errorf("from ::1: %d, want 200", r.status)
	}
	if r := doRequest(t, clientFrom("127.0.0.1"), "POST", testURL(0, "/itns.php"), strings.NewReader(gatewayBody), nil); r.status != 403 {
		t.Errorf("from 127.0.0.1 with allow ::1: %d, want 403", r.status)
	}
	// A mapped entry matches the plain IPv4 peer.
	if r := doRequest(t, clientFrom("127.0.0.2"), "POST", testURL(0, "/itns.php"), strings.NewReader(gatewayBody), nil); r.status != 200 {
		t.Errorf("from 127.0.0.2 with allow ::ffff:127.0.0.2: %d, want 200", r.status)
	}
	if seen := up.take(); len(seen) != 2 {
		t.Errorf("upstream saw %d requests, want 2", len(seen))
	}
}
