package alert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Webhook is an endpoint that alerts are posted to, as JSON.
type Webhook struct {
	URL    string
	Header http.Header
}

// CheckURL accepts an absolute https:// URL, or http:// (insecure is then
// true: allowed, since an alert carries no transaction data, but worth a
// warning).
func CheckURL(s string) (insecure bool, err error) {
	if s == "" {
		return false, errors.New("webhook: empty URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return false, fmt.Errorf("webhook %q: %w", s, err)
	}
	switch u.Scheme {
	case "https":
	case "http":
		insecure = true
	default:
		return false, fmt.Errorf("webhook %q: scheme %q, want https:// (or http://)", s, u.Scheme)
	}
	if u.Host == "" {
		return false, fmt.Errorf("webhook %q: no host", s)
	}
	return insecure, nil
}

// Redacted is the webhook's URL without its path and query, which may be
// its secret (Slack's is): what logs show.
func (w Webhook) Redacted() string {
	u, err := url.Parse(w.URL)
	if err != nil {
		return "(bad URL)"
	}
	return u.Scheme + "://" + u.Host
}

// poster posts to one webhook, retrying with backoff.
type poster struct {
	hook     Webhook
	client   *http.Client
	timeout  time.Duration
	attempts int
	backoff  time.Duration
	agent    string
}

// errPermanent marks an answer that another try would not change.
var errPermanent = errors.New("not retried")

// post sends body, up to p.attempts times; it gives up early on a 4xx other
// than 408 and 429, or when ctx ends.
func (p *poster) post(ctx context.Context, body []byte) (tries int, err error) {
	wait := p.backoff
	for tries = 1; ; tries++ {
		err = p.once(ctx, body)
		if err == nil || errors.Is(err, errPermanent) || tries >= p.attempts {
			return tries, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return tries, fmt.Errorf("%w (then stopped)", err)
		case <-t.C:
		}
		wait *= 2
	}
}

func (p *poster) once(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.hook.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: bad request: %v", errPermanent, errors.Unwrap(err))
	}
	for name, values := range p.hook.Header {
		for _, v := range values {
			req.Header.Add(name, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	if p.agent != "" {
		req.Header.Set("User-Agent", p.agent)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		// Not the *url.Error: its text has the URL, and a Slack webhook's
		// path is its secret.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 &&
		resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests:
		return fmt.Errorf("%w: HTTP %d", errPermanent, resp.StatusCode)
	default:
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
}
