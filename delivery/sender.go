package delivery

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/postbackedge/caddy-postback/storage"
)

// Results reported to Observer.Attempted.
const (
	ResultSuccess      = "success"       // a 2xx
	ResultHTTPError    = "http_error"    // any other status
	ResultNetworkError = "network_error" // no response
)

const (
	maxDiscard  = 64 << 10 // response bytes read to keep the connection reusable
	maxErrorLen = 256      // an attempt's error text
	defaultPOST = "application/x-www-form-urlencoded"
)

// sent is what one attempt produced.
type sent struct {
	attempt    storage.Attempt
	result     string
	retryAfter time.Duration
	hasRA      bool
	cancelled  bool // Stop gave up waiting: nothing to record
}

// send makes one attempt of dl at dest; n is its 1-based attempt number.
func (d *Dispatcher) send(dest *Destination, dl *storage.Delivery, payload []byte, n int) sent {
	at := d.now()
	start := time.Now()
	ctx, cancel := context.WithTimeout(d.ctx, dest.Timeout)
	defer cancel()
	s := sent{attempt: storage.Attempt{At: at}, result: ResultNetworkError}

	req, err := d.newRequest(ctx, dest, dl, payload, n)
	if err != nil {
		s.attempt.Error = clip(redact("request: "+err.Error(), dest.URL, payload, d.sensitive))
		return s
	}
	resp, err := dest.Client.Do(req)
	s.attempt.Duration = time.Since(start)
	if err != nil {
		if d.ctx.Err() != nil {
			s.cancelled = true // not the destination's fault: retried after restart
			return s
		}
		s.attempt.Error = clip(redact(describe(err, dest.Timeout), dest.URL, payload, d.sensitive))
		return s
	}
	// Reading a bounded part of the body lets a small answer free the
	// connection for reuse; a big one is cut off with the connection.
	_, _ = io.CopyN(io.Discard, resp.Body, maxDiscard)
	_ = resp.Body.Close()
	s.attempt.Status = resp.StatusCode
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		s.result = ResultSuccess
		return s
	}
	s.result = ResultHTTPError
	// The status line only: a body may echo the payload back.
	s.attempt.Error = "HTTP " + strconv.Itoa(resp.StatusCode)
	if txt := http.StatusText(resp.StatusCode); txt != "" {
		s.attempt.Error += " " + txt
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		s.retryAfter, s.hasRA = parseRetryAfter(resp.Header.Get("Retry-After"), d.now())
	}
	return s
}

// newRequest builds attempt n of dl: the payload as body (POST) or appended
// to the configured query (GET), plus the X-Postback-* headers that let a
// destination drop duplicates.
func (d *Dispatcher) newRequest(ctx context.Context, dest *Destination, dl *storage.Delivery, payload []byte, n int) (*http.Request, error) {
	u := *dest.URL
	var body io.Reader
	if dest.Method == http.MethodGet {
		if len(payload) > 0 {
			if u.RawQuery != "" {
				u.RawQuery += "&" + string(payload)
			} else {
				u.RawQuery = string(payload)
			}
		}
	} else {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, dest.Method, u.String(), body)
	if err != nil {
		return nil, err
	}
	h := dest.Header.Clone()
	if h == nil {
		h = make(http.Header, 6)
	}
	if host := h.Get("Host"); host != "" {
		req.Host = host // Go ignores a Host entry in the header map
		h.Del("Host")
	}
	if h.Get("User-Agent") == "" {
		h.Set("User-Agent", d.userAgent)
	}
	h.Set("X-Postback-Id", dl.ID)
	h.Set("X-Postback-Attempt", strconv.Itoa(n))
	h.Set("X-Postback-Din", dest.DIN)
	if dest.ItemCode != "" {
		h.Set("X-Postback-Item-Code", dest.ItemCode)
	} else {
		h.Del("X-Postback-Item-Code")
	}
	h.Del("Content-Type")
	if dest.Method == http.MethodPost {
		ct := dl.ContentType
		if ct == "" {
			ct = defaultPOST // what a legacy CGI needs to parse a form
		}
		h.Set("Content-Type", ct)
	}
	if dest.signKey != nil {
		setSignature(h, dest.signKey, dl.ID, d.now(), payload)
	}
	req.Header = h
	return req, nil
}

// describe turns a transport error into short text. The *url.Error wrapper is
// dropped because it quotes the request URL, query (the GET payload) included.
func describe(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout after " + timeout.String()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout: " + err.Error()
	}
	return err.Error()
}

const redacted = "[redacted]"

// redact removes from msg anything of the URL's userinfo and query and of the
// payload, should some error text ever quote them: payloads carry card data.
func redact(msg string, u *url.URL, payload []byte, sensitive func(name string) bool) string {
	var secrets []string
	add := func(s string, minLen int) {
		if len(s) >= minLen {
			secrets = append(secrets, s)
		}
	}
	if u != nil {
		if u.User != nil {
			add(u.User.String(), 1)
			add(u.User.Username(), 3)
			if p, ok := u.User.Password(); ok {
				add(p, 1)
			}
		}
		add(u.RawQuery, 1)
	}
	if len(payload) > 0 {
		add(string(payload), 1)
		for _, pair := range strings.Split(string(payload), "&") {
			if _, v, ok := strings.Cut(pair, "="); ok {
				add(v, 4) // as encoded
			}
		}
		if vals, err := url.ParseQuery(string(payload)); err == nil || len(vals) > 0 {
			for name, vs := range vals {
				// Very short values would mangle ordinary words, except
				// where the field is known to hold a secret (a CVV).
				minLen := 4
				if sensitive != nil && sensitive(name) {
					minLen = 1
				}
				for _, v := range vs {
					add(v, minLen)
				}
			}
		}
	}
	// Longest first, so a value inside a longer secret does not break it up.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, redacted)
	}
	return msg
}

// clip bounds error text kept in a delivery record, cutting on a rune boundary.
func clip(s string) string {
	if len(s) <= maxErrorLen {
		return s
	}
	s = s[:maxErrorLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}
