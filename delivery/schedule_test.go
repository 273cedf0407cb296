package delivery

import (
	"net/http"
	"testing"
	"time"
)

func TestJitterStaysWithinBounds(t *testing.T) {
	const base = 10 * time.Second
	lo, hi := base, base
	for range 10000 {
		d := jittered(base, 0.2)
		if d < 8*time.Second || d > 12*time.Second {
			t.Fatalf("jittered(10s, 0.2) = %s: outside ±20%%", d)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	// It must actually spread, over most of the band.
	if lo > 8500*time.Millisecond || hi < 11500*time.Millisecond {
		t.Errorf("jitter range [%s, %s] too narrow", lo, hi)
	}
	if jittered(0, 0.2) != 0 || jittered(base, 0) != base {
		t.Error("zero delay or zero jitter must be unchanged")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 120 * time.Second, true},
		{" 0 ", 0, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, c := range cases {
		got, ok := parseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestNextAttempt(t *testing.T) {
	end := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Retry-After later than the schedule wins.
	if got := nextAttempt(end, time.Minute, 0, 2*time.Hour, true, 3*time.Hour); !got.Equal(end.Add(2 * time.Hour)) {
		t.Errorf("retry-after: %s", got.Sub(end))
	}
	// ... but is bounded by the maximum.
	if got := nextAttempt(end, time.Minute, 0, 10*time.Hour, true, time.Hour); !got.Equal(end.Add(time.Hour)) {
		t.Errorf("bounded: %s", got.Sub(end))
	}
	// ... and never makes it earlier than the schedule.
	if got := nextAttempt(end, time.Minute, 0, time.Second, true, time.Hour); !got.Equal(end.Add(time.Minute)) {
		t.Errorf("earlier: %s", got.Sub(end))
	}
	if got := nextAttempt(end, time.Minute, 0.2, 0, false, time.Hour); got.Sub(end) < 48*time.Second || got.Sub(end) > 72*time.Second {
		t.Errorf("jittered: %s", got.Sub(end))
	}
}
