package delivery

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Defaults applied to a Destination's zero fields.
const (
	DefaultTimeout     = 15 * time.Second
	DefaultConcurrency = 4
)

// DefaultSchedule is the retry schedule of a destination without one: the
// first attempt at once, then growing delays over about 18 hours.
func DefaultSchedule() []time.Duration {
	return []time.Duration{0, 10 * time.Second, time.Minute, 5 * time.Minute,
		30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}
}

// Destination is one secondary destination, named by its DIN.
type Destination struct {
	DIN string
	URL *url.URL
	// Method is "POST" (the original body and content type) or "GET" (the
	// payload appended to the URL's query, keeping an existing query).
	// Empty means POST.
	Method string
	// ItemCode is the 4-character ITPS publication code, sent as header
	// X-Postback-Item-Code when set.
	ItemCode string
	// InsecureHTTP allows an http:// URL (tests only).
	InsecureHTTP bool
	// Timeout bounds one attempt (default 15s).
	Timeout time.Duration
	// Schedule[i] is the delay before attempt i; len(Schedule) is the number
	// of attempts. Schedule[0] is applied by whoever enqueues (the first
	// attempt is made as soon as the delivery is due, normally at once).
	// Empty means DefaultSchedule().
	Schedule []time.Duration
	// Header holds configured extra headers. It may set User-Agent and Host,
	// but not the X-Postback-* or Content-Type headers, which are ours.
	Header http.Header
	// Client sends the attempts; nil means a default client from
	// NewClient(nil). Redirects are never followed, whatever the client says:
	// a request must go only where the configuration said.
	Client *http.Client
	// Concurrency bounds the parallel attempts for this DIN (default 4).
	Concurrency int
	// Spool receives what exhausted its schedule; nil makes it failed.
	Spool Spooler
	// BreakerThreshold is how many attempts in a row must fail before the
	// DIN's circuit opens (breaker.go). Default DefaultBreakerThreshold;
	// negative: never.
	BreakerThreshold int
	// BreakerMaxProbe bounds the wait between probes while the circuit is
	// open; the waits start at DefaultFirstProbe (or this, if shorter) and
	// double. Default DefaultBreakerMaxProbe.
	BreakerMaxProbe time.Duration
	// Rate limits the attempts to this destination (rate.go); zero: none.
	Rate Rate
	// SignSecret, when set, signs every attempt with the Standard Webhooks
	// headers (sign.go): "whsec_<base64>" or a plain string of 16 bytes or
	// more.
	SignSecret string

	signKey []byte // SignSecret's key, set by normalized
}

// Spooler writes a delivery that exhausted its schedule to durable storage
// (the PGP-encrypted spool folder). It must be safe for concurrent use.
type Spooler interface {
	Spool(din, id string, payload []byte) (path string, err error)
}

// Validate is the one set of rules a destination must meet; the
// configuration adapters call it (and the field checks below, for a precise
// message) at load time, and SetDestinations refuses what fails it, so a
// running edge never holds a DIN it will not deliver. Messages quote values
// but never a URL's credentials or query.
func (d *Destination) Validate() error {
	if err := storage.CheckDIN(d.DIN); err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	if err := CheckURL(d.URL, d.InsecureHTTP); err != nil {
		return fmt.Errorf("destination %s: %w", d.DIN, err)
	}
	if _, err := ParseMethod(d.Method); err != nil {
		return fmt.Errorf("destination %s: %w", d.DIN, err)
	}
	if err := CheckItemCode(d.ItemCode); err != nil {
		return fmt.Errorf("destination %s: %w", d.DIN, err)
	}
	if d.Timeout < 0 {
		return fmt.Errorf("destination %s: timeout %s must not be negative", d.DIN, d.Timeout)
	}
	if d.Concurrency < 0 {
		return fmt.Errorf("destination %s: concurrency %d must not be negative", d.DIN, d.Concurrency)
	}
	if err := CheckSchedule(d.Schedule); err != nil {
		return fmt.Errorf("destination %s: %w", d.DIN, err)
	}
	if err := CheckBreaker(d.BreakerThreshold, d.BreakerMaxProbe); err != nil {
		return fmt.Errorf("destination %s: %w", d.DIN, err)
	}
	if err := CheckRate(d.Rate); err != nil {
		return fmt.Errorf("destination %s: %w", d.DIN, err)
	}
	if d.SignSecret != "" {
		if _, err := SignKey(d.SignSecret); err != nil {
			return fmt.Errorf("destination %s: %w", d.DIN, err)
		}
	}
	return nil
}

// CheckURL accepts an absolute https:// URL, or http:// when insecure is
// set (tests only: a copy carries card data).
func CheckURL(u *url.URL, insecure bool) error {
	if u == nil || u.Host == "" {
		return errors.New("url: not an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if insecure {
			return nil
		}
		return fmt.Errorf("url %s: destinations must use https:// (insecure_http allows http:// for tests)", redactURL(u))
	default:
		return fmt.Errorf("url %s: scheme must be https", redactURL(u))
	}
}

// ParseMethod returns POST or GET for a method named in any case; empty
// means POST.
func ParseMethod(m string) (string, error) {
	switch strings.ToUpper(m) {
	case "", http.MethodPost:
		return http.MethodPost, nil
	case http.MethodGet:
		return http.MethodGet, nil
	}
	return "", fmt.Errorf("method %q: must be POST or GET", m)
}

// CheckItemCode accepts an empty code or 4 visible ASCII characters: it
// goes out as a header value, where other bytes would be mangled.
func CheckItemCode(s string) error {
	if s == "" {
		return nil
	}
	ok := len(s) == 4
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] >= 0x21 && s[i] <= 0x7e
	}
	if !ok {
		return fmt.Errorf("item_code %q: must be 4 visible ASCII characters", s)
	}
	return nil
}

// CheckSchedule accepts an empty schedule (the default) or one that starts
// with 0: the first attempt is immediate, and a delayed one would hold the
// copy back for no reason. No delay may be negative.
func CheckSchedule(s []time.Duration) error {
	if len(s) > 0 && s[0] != 0 {
		return fmt.Errorf("retry_schedule must start with 0s (the first attempt is immediate), got %s", s[0])
	}
	for _, d := range s {
		if d < 0 {
			return fmt.Errorf("retry_schedule: negative delay %s", d)
		}
	}
	return nil
}

// CheckBreaker accepts a threshold of -1 (off), 0 (the default) or more,
// and a maximum probe interval that is not negative.
func CheckBreaker(threshold int, maxProbe time.Duration) error {
	if threshold < -1 {
		return fmt.Errorf("breaker_threshold %d: must be -1 (off) or more", threshold)
	}
	if maxProbe < 0 {
		return fmt.Errorf("breaker_max_probe %s must not be negative", maxProbe)
	}
	return nil
}

// redactURL drops credentials and the query from a URL, for messages.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	return c.String()
}

// normalized returns a copy with defaults applied, so that a caller changing
// its Destination afterwards cannot race with the workers.
func (d *Destination) normalized(defaultClient *http.Client) *Destination {
	n := *d
	u := *d.URL
	n.URL = &u
	n.Method, _ = ParseMethod(d.Method) // Validate has accepted it
	if n.Timeout == 0 {
		n.Timeout = DefaultTimeout
	}
	if n.Concurrency == 0 {
		n.Concurrency = DefaultConcurrency
	}
	if n.BreakerThreshold == 0 {
		n.BreakerThreshold = DefaultBreakerThreshold
	}
	if n.BreakerMaxProbe == 0 {
		n.BreakerMaxProbe = DefaultBreakerMaxProbe
	}
	if len(n.Schedule) == 0 {
		n.Schedule = DefaultSchedule()
	} else {
		n.Schedule = slices.Clone(d.Schedule)
	}
	n.Header = d.Header.Clone()
	if d.SignSecret != "" {
		n.signKey, _ = SignKey(d.SignSecret) // Validate has accepted it
	}
	src := d.Client
	if src == nil {
		src = defaultClient
	}
	// A shallow copy shares the transport (and its connection pool) but lets
	// us refuse redirects even on a caller's client.
	c := *src
	c.CheckRedirect = noRedirect
	n.Client = &c
	return &n
}
