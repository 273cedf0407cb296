package alert

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCheckURL(t *testing.T) {
	for _, c := range []struct {
		url      string
		insecure bool
		err      string
	}{
		{"https://hooks.slack.com/services/T000/B000/XXXX", false, ""},
		{"http://127.0.0.1:9/alerts", true, ""},
		{"", false, "empty URL"},
		{"ftp://ops.example.com/x", false, `scheme "ftp", want https://`},
		{"hooks.slack.com/services", false, `scheme ""`},
		{"https:///path", false, "no host"},
		{"https://a b/", false, "invalid character"},
	} {
		insecure, err := CheckURL(c.url)
		if c.err == "" && (err != nil || insecure != c.insecure) {
			t.Errorf("%q: insecure %t, %v", c.url, insecure, err)
		}
		if c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%q: %v, want an error with %q", c.url, err, c.err)
		}
	}
}

// A webhook that fails twice gets the alert on the third try; the headers
// configured go with every try.
func TestPostRetriesWithBackoff(t *testing.T) {
	s := newSink(t, func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	p := &poster{hook: Webhook{URL: s.srv.URL + "/T000/secret", Header: http.Header{"Authorization": {"Bearer t"}}},
		client: http.DefaultClient, timeout: 5 * time.Second, attempts: 4, backoff: 10 * time.Millisecond}
	start := time.Now()
	tries, err := p.post(context.Background(), []byte(`{"text":"x"}`))
	if err != nil || tries != 3 {
		t.Fatalf("tries %d, %v; want delivered on the third", tries, err)
	}
	if waited := time.Since(start); waited < 30*time.Millisecond {
		t.Errorf("three tries in %s: no backoff (10ms, then 20ms)", waited)
	}
	if got := s.header[0].Get("Authorization"); got != "Bearer t" {
		t.Errorf("Authorization %q", got)
	}
	if ct := s.header[0].Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}

// Tries are bounded; a 4xx that another try would not change is not
// retried; and an error never shows the webhook's path (Slack's secret).
func TestPostGivesUp(t *testing.T) {
	down := newSink(t, func(int) int { return http.StatusBadGateway })
	p := &poster{hook: Webhook{URL: down.srv.URL + "/T000/secret"}, client: http.DefaultClient, timeout: time.Second, attempts: 3, backoff: time.Millisecond}
	if tries, err := p.post(context.Background(), nil); err == nil || tries != 3 || down.attempts() != 3 {
		t.Errorf("502 always: %d tries (%d seen), %v; want 3 and an error", tries, down.attempts(), err)
	}
	gone := newSink(t, func(int) int { return http.StatusNotFound })
	p.hook.URL = gone.srv.URL + "/T000/secret"
	if tries, err := p.post(context.Background(), nil); err == nil || tries != 1 {
		t.Errorf("404: %d tries, %v; want 1 and an error", tries, err)
	}
	addr := down.srv.Listener.Addr().String()
	down.srv.Close()
	p.hook.URL = "http://" + addr + "/T000/secret"
	_, err := p.post(context.Background(), nil)
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("refused connection: %v; want an error without the URL's path", err)
	}
}
