package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/storage"
)

// defaultRetrySchedule is the delay before each attempt: immediately, then
// over about 18 hours, after which the payload goes to the spool.
var defaultRetrySchedule = delivery.DefaultSchedule()

// Destination is a secondary destination's private configuration. A request
// can only name it by its DIN, never by URL.
type Destination struct {
	// URL the copy is sent to; https:// unless InsecureHTTP.
	URL string `json:"url"`
	// Method is POST (the original body and content type) or GET (the form
	// string appended to the URL's query). Default POST.
	Method string `json:"method,omitempty"`
	// ItemCode is the four-character ITPS publication code, sent as the
	// X-Postback-Item-Code header.
	ItemCode string `json:"item_code,omitempty"`
	// Timeout of one attempt. Default 15s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// RetrySchedule is the delay before each attempt (the first is normally
	// 0s); its length is the number of attempts. Default
	// 0s 10s 1m 5m 30m 2h 5h 10h.
	RetrySchedule []caddy.Duration `json:"retry_schedule,omitempty"`
	// Concurrency bounds parallel attempts to this destination. Default 4.
	Concurrency int `json:"concurrency,omitempty"`
	// PGPKey is the path of the partner's ASCII-armored public key; with
	// SpoolDir, deliveries that exhaust the schedule are written there
	// encrypted to it.
	PGPKey string `json:"pgp_key,omitempty"`
	// SpoolDir is the folder for encrypted spool files (created 0700).
	SpoolDir string `json:"spool_dir,omitempty"`
	// CACert is a PEM file of extra CAs trusted for this destination.
	CACert string `json:"ca_cert,omitempty"`
	// InsecureHTTP allows an http:// URL. For tests only.
	InsecureHTTP bool `json:"insecure_http,omitempty"`
	// Headers are added to every attempt.
	Headers http.Header `json:"headers,omitempty"`
	// BreakerThreshold is how many attempts in a row must fail before the
	// destination's circuit opens: its deliveries are then held (no attempts,
	// no record rewrites) while one at a time probes it, and those held for
	// a whole retry schedule go to the spool. Default 10; -1 turns it off.
	BreakerThreshold int `json:"breaker_threshold,omitempty"`
	// BreakerMaxProbe bounds the wait between probes while the circuit is
	// open; waits start at 5s (or this, if shorter) and double. Default 2m.
	BreakerMaxProbe caddy.Duration `json:"breaker_max_probe,omitempty"`
}

// build validates the configuration and turns it into what the dispatcher
// runs. repl resolves placeholders such as {env.PARTNER_URL}.
func (d *Destination) build(din string, repl *caddy.Replacer) (*delivery.Destination, error) {
	if !validDIN(din) {
		return nil, fmt.Errorf("destination %q: a DIN is 1 to 32 letters, digits, '-' or '_'", din)
	}
	raw := repl.ReplaceAll(d.URL, "")
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("destination %s: url %q: not an absolute URL", din, d.URL)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !d.InsecureHTTP {
			return nil, fmt.Errorf("destination %s: url %s: destinations must use https:// (insecure_http allows http:// for tests)", din, redactURL(u))
		}
	default:
		return nil, fmt.Errorf("destination %s: url %s: scheme must be https", din, redactURL(u))
	}
	method := strings.ToUpper(d.Method)
	if method == "" {
		method = http.MethodPost
	}
	if method != http.MethodPost && method != http.MethodGet {
		return nil, fmt.Errorf("destination %s: method %q: must be POST or GET", din, d.Method)
	}
	if d.ItemCode != "" && len(d.ItemCode) != 4 {
		return nil, fmt.Errorf("destination %s: item_code %q: must be 4 characters", din, d.ItemCode)
	}
	if d.Timeout < 0 {
		return nil, fmt.Errorf("destination %s: timeout must not be negative", din)
	}
	if d.Concurrency < 0 {
		return nil, fmt.Errorf("destination %s: concurrency must not be negative", din)
	}
	if d.BreakerThreshold < -1 || d.BreakerMaxProbe < 0 {
		return nil, fmt.Errorf("destination %s: breaker_threshold must be -1 (off) or more, breaker_max_probe not negative", din)
	}
	schedule := defaultRetrySchedule
	if len(d.RetrySchedule) > 0 && d.RetrySchedule[0] != 0 {
		// The design makes the first attempt immediate; a delayed first
		// attempt would hold the copy back for no reason.
		return nil, fmt.Errorf("destination %s: retry_schedule must start with 0s (the first attempt is immediate), got %s", din, time.Duration(d.RetrySchedule[0]))
	}
	if len(d.RetrySchedule) > 0 {
		schedule = make([]time.Duration, len(d.RetrySchedule))
		for i, s := range d.RetrySchedule {
			if s < 0 {
				return nil, fmt.Errorf("destination %s: retry_schedule: negative delay %s", din, time.Duration(s))
			}
			schedule[i] = time.Duration(s)
		}
	}
	var caPEM []byte
	if d.CACert != "" {
		path := repl.ReplaceAll(d.CACert, "")
		if caPEM, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("destination %s: ca_cert: %w", din, err)
		}
	}
	client, err := delivery.NewClient(caPEM)
	if err != nil {
		return nil, fmt.Errorf("destination %s: ca_cert %s: %w", din, d.CACert, err)
	}
	dest := &delivery.Destination{
		DIN:         din,
		URL:         u,
		Method:      method,
		ItemCode:    d.ItemCode,
		Timeout:     time.Duration(d.Timeout),
		Schedule:    schedule,
		Header:      d.Headers.Clone(),
		Client:      client,
		Concurrency: d.Concurrency,

		BreakerThreshold: d.BreakerThreshold,
		BreakerMaxProbe:  time.Duration(d.BreakerMaxProbe),
	}
	for name, vals := range dest.Header {
		for i, v := range vals {
			vals[i] = repl.ReplaceAll(v, "")
		}
		dest.Header[name] = vals
	}
	if (d.PGPKey == "") != (d.SpoolDir == "") {
		return nil, fmt.Errorf("destination %s: pgp_key and spool_dir go together", din)
	}
	if d.PGPKey != "" {
		rcpt, err := storage.LoadRecipient(repl.ReplaceAll(d.PGPKey, ""), time.Now())
		if err != nil {
			return nil, fmt.Errorf("destination %s: pgp_key: %w", din, err)
		}
		spool, err := storage.NewSpool(repl.ReplaceAll(d.SpoolDir, ""), rcpt)
		if err != nil {
			return nil, fmt.Errorf("destination %s: spool_dir: %w", din, err)
		}
		dest.Spool = spool
	}
	return dest, nil
}

func validDIN(din string) bool {
	if din == "" || len(din) > 32 {
		return false
	}
	for _, c := range din {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// redactURL drops credentials and the query from a URL for messages.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	return c.String()
}
