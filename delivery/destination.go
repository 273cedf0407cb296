package delivery

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
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
}

// Spooler writes a delivery that exhausted its schedule to durable storage
// (the PGP-encrypted spool folder). It must be safe for concurrent use.
type Spooler interface {
	Spool(din, id string, payload []byte) (path string, err error)
}

// Validate reports a destination the dispatcher cannot run.
func (d *Destination) Validate() error {
	if d.DIN == "" {
		return fmt.Errorf("destination: empty DIN")
	}
	if d.URL == nil || d.URL.Host == "" || (d.URL.Scheme != "https" && d.URL.Scheme != "http") {
		return fmt.Errorf("destination %s: URL must be absolute http(s)", d.DIN)
	}
	switch strings.ToUpper(d.Method) {
	case "", http.MethodPost, http.MethodGet:
	default:
		return fmt.Errorf("destination %s: method %q: must be POST or GET", d.DIN, d.Method)
	}
	if d.ItemCode != "" && !validItemCode(d.ItemCode) {
		return fmt.Errorf("destination %s: item code must be 4 visible ASCII characters", d.DIN)
	}
	if d.Timeout < 0 || d.Concurrency < 0 || d.BreakerMaxProbe < 0 {
		return fmt.Errorf("destination %s: negative timeout, concurrency or probe interval", d.DIN)
	}
	for _, s := range d.Schedule {
		if s < 0 {
			return fmt.Errorf("destination %s: negative delay in retry schedule", d.DIN)
		}
	}
	return nil
}

func validItemCode(s string) bool {
	if len(s) != 4 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// normalized returns a copy with defaults applied, so that a caller changing
// its Destination afterwards cannot race with the workers.
func (d *Destination) normalized(defaultClient *http.Client) *Destination {
	n := *d
	u := *d.URL
	n.URL = &u
	n.Method = strings.ToUpper(d.Method)
	if n.Method == "" {
		n.Method = http.MethodPost
	}
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
