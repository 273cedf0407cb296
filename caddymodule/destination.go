package caddymodule

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/storage"
)

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
	// SpoolMode is the mode of new spool files, in octal: "0600" (the
	// default) or "0640", readable by the spool folder's group, for a pickup
	// account in it (make the folder setgid so files get its group).
	SpoolMode string `json:"spool_mode,omitempty"`
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
	// Rate limits the attempts to this destination: "<n>/s" or "<n>/m",
	// spaced evenly; a backlog waits. Default: no limit.
	Rate string `json:"rate,omitempty"`
	// SignSecret signs each attempt with the Standard Webhooks headers
	// (webhook-id, webhook-timestamp, webhook-signature): "whsec_<base64>"
	// or a string of 16 bytes or more. Placeholders such as {env.X} are
	// resolved.
	SignSecret string `json:"sign_secret,omitempty"`
}

// build turns the configuration into what the engine runs: toDelivery,
// then the files it names (ca_cert, pgp_key, spool_dir) are read and
// checked. repl resolves placeholders such as {env.PARTNER_URL}.
func (d *Destination) build(din string, repl *caddy.Replacer) (*delivery.Destination, error) {
	dest, err := d.toDelivery(din, repl)
	if err != nil {
		return nil, err
	}
	var caPEM []byte
	if d.CACert != "" {
		path := repl.ReplaceAll(d.CACert, "")
		if caPEM, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("destination %s: ca_cert: %w", din, err)
		}
	}
	if dest.Client, err = delivery.NewClient(caPEM); err != nil {
		return nil, fmt.Errorf("destination %s: ca_cert %s: %w", din, d.CACert, err)
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
		if d.SpoolMode != "" {
			mode, _ := storage.ParseSpoolMode(d.SpoolMode) // toDelivery has checked it
			if err := spool.SetMode(mode); err != nil {
				return nil, fmt.Errorf("destination %s: %w", din, err)
			}
		}
		dest.Spool = spool
	}
	return dest, nil
}

// toDelivery resolves the placeholders and checks the result with
// delivery's rules (Destination.Validate), reading no file: the Caddyfile
// adapter calls it too, so that a mistake names its line.
func (d *Destination) toDelivery(din string, repl *caddy.Replacer) (*delivery.Destination, error) {
	u, err := url.Parse(repl.ReplaceAll(d.URL, ""))
	if err != nil {
		// url.Parse's error quotes the URL, which may hold credentials.
		return nil, fmt.Errorf("destination %s: url: not a valid URL", din)
	}
	if (d.PGPKey == "") != (d.SpoolDir == "") {
		return nil, fmt.Errorf("destination %s: pgp_key and spool_dir go together", din)
	}
	if d.SpoolMode != "" {
		if d.SpoolDir == "" {
			return nil, fmt.Errorf("destination %s: spool_mode without spool_dir", din)
		}
		if _, err := storage.ParseSpoolMode(d.SpoolMode); err != nil {
			return nil, fmt.Errorf("destination %s: %w", din, err)
		}
	}
	dest := &delivery.Destination{
		DIN:          din,
		URL:          u,
		InsecureHTTP: d.InsecureHTTP,
		Method:       d.Method,
		ItemCode:     d.ItemCode,
		Timeout:      time.Duration(d.Timeout),
		Header:       d.Headers.Clone(),
		Concurrency:  d.Concurrency,

		BreakerThreshold: d.BreakerThreshold,
		BreakerMaxProbe:  time.Duration(d.BreakerMaxProbe),
	}
	if d.Rate != "" {
		rate, err := delivery.ParseRate(d.Rate)
		if err != nil {
			return nil, fmt.Errorf("destination %s: %w", din, err)
		}
		dest.Rate = rate
	}
	if d.SignSecret != "" {
		dest.SignSecret = repl.ReplaceAll(d.SignSecret, "")
		if dest.SignSecret == "" {
			// The secret's text is never quoted: only where it came from.
			return nil, fmt.Errorf("destination %s: sign_secret %s is empty", din, d.SignSecret)
		}
	}
	for _, s := range d.RetrySchedule {
		dest.Schedule = append(dest.Schedule, time.Duration(s))
	}
	for _, vals := range dest.Header {
		for i, v := range vals {
			vals[i] = repl.ReplaceAll(v, "")
		}
	}
	if err := dest.Validate(); err != nil {
		return nil, err
	}
	return dest, nil
}
