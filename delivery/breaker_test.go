package delivery

import (
	"testing"
	"time"
)

func TestBreakerOpensAfterThresholdAndBacksOff(t *testing.T) {
	dest := &Destination{BreakerThreshold: 3, BreakerMaxProbe: 20 * time.Second}
	var b breaker
	t0 := time.Unix(1000, 0)
	for i := range 2 {
		if b.ended(t0, "x", answer{result: ResultNetworkError}, dest, 0) || b.open {
			t.Fatalf("open after %d failures", i+1)
		}
	}
	// Nothing sent (a cancelled attempt, a give-up) does not count.
	b.ended(t0, "x", answer{}, dest, 0)
	if !b.ended(t0, "x", answer{result: ResultHTTPError, started: t0}, dest, 0) || !b.open || !b.since.Equal(t0) || !b.failedStart.IsZero() {
		t.Fatalf("not open after 3 failures: %+v", b)
	}
	if want := t0.Add(DefaultFirstProbe); !b.probeAt.Equal(want) {
		t.Fatalf("first probe at %s, want %s", b.probeAt, want)
	}
	if b.mayProbe(t0) || !b.mayProbe(t0.Add(DefaultFirstProbe)) {
		t.Fatal("mayProbe before/at the probe time")
	}

	// Failed probes double the wait up to the maximum.
	now := t0
	for _, want := range []time.Duration{10 * time.Second, 20 * time.Second, 20 * time.Second} {
		now = b.probeAt
		b.probe = "p"
		if b.mayProbe(now) {
			t.Fatal("a second probe while one is in flight")
		}
		if b.ended(now, "p", answer{result: ResultNetworkError, started: now}, dest, 0) {
			t.Fatal("a failed probe changed the state")
		}
		if got := b.probeAt.Sub(now); got != want || b.probe != "" || !b.failedStart.Equal(now) {
			t.Fatalf("next probe after %s, want %s (probe %q, last failed start %s)", got, want, b.probe, b.failedStart)
		}
	}
	// Another attempt failing (in flight when it opened) does not push the probe.
	at := b.probeAt
	b.ended(now, "other", answer{result: ResultNetworkError}, dest, 0)
	if !b.probeAt.Equal(at) {
		t.Fatal("a non-probe failure moved the probe")
	}
	// A probe that sent nothing is retried after the same wait.
	b.probe = "p"
	b.ended(now, "p", answer{}, dest, 0)
	if b.probe != "" || b.probeAt.Sub(now) != 20*time.Second || !b.open {
		t.Fatalf("after an unsent probe: %+v", b)
	}

	if !b.ended(now, "q", answer{result: ResultSuccess}, dest, 0) || b.open || b.streak != 0 {
		t.Fatalf("success did not close: %+v", b)
	}
	// Closed again: the count starts from zero.
	b.ended(now, "x", answer{result: ResultNetworkError}, dest, 0)
	b.ended(now, "x", answer{result: ResultNetworkError}, dest, 0)
	if b.open {
		t.Fatal("reopened before the threshold")
	}
}

func TestBreakerOffAndShortMaxProbe(t *testing.T) {
	off := &Destination{BreakerThreshold: -1, BreakerMaxProbe: time.Minute}
	var b breaker
	for range 1000 {
		b.ended(time.Now(), "x", answer{result: ResultNetworkError}, off, 0)
	}
	if b.open {
		t.Fatal("a breaker turned off opened")
	}
	short := &Destination{BreakerThreshold: 1, BreakerMaxProbe: 50 * time.Millisecond}
	now := time.Now()
	b = breaker{}
	b.ended(now, "x", answer{result: ResultNetworkError}, short, 0)
	if got := b.probeAt.Sub(now); got != 50*time.Millisecond {
		t.Fatalf("first probe after %s, want the 50ms maximum", got)
	}
	if !b.reset() || b.open {
		t.Fatal("reset of an open breaker")
	}
}

// A 429/503 with Retry-After puts the next probe no earlier than it asks.
func TestBreakerHonoursRetryAfter(t *testing.T) {
	dest := &Destination{BreakerThreshold: 1, BreakerMaxProbe: time.Minute}
	var b breaker
	now := time.Unix(1000, 0)
	b.ended(now, "x", answer{result: ResultHTTPError, retryAfter: 30 * time.Second}, dest, 0)
	if got := b.probeAt.Sub(now); !b.open || got != 30*time.Second {
		t.Fatalf("opened with Retry-After 30s: first probe after %s", got)
	}
	b.probe = "p"
	b.ended(now, "p", answer{result: ResultHTTPError, retryAfter: time.Second}, dest, 0)
	if got := b.probeAt.Sub(now); got != 10*time.Second {
		t.Fatalf("a short Retry-After must not bring the probe forward: after %s", got)
	}
	b.probe = "p"
	b.ended(now, "p", answer{result: ResultHTTPError, retryAfter: 10 * time.Minute}, dest, 0)
	if got := b.probeAt.Sub(now); got != 10*time.Minute {
		t.Fatalf("Retry-After 10m beyond the 1m maximum: probe after %s", got)
	}
}

func TestHoldSpan(t *testing.T) {
	for _, c := range []struct {
		sched []time.Duration
		want  time.Duration
	}{
		{nil, 0},
		{ms(0), 0},
		{ms(0, 10, 20), 30 * time.Millisecond},
		{DefaultSchedule(), 10*time.Second + time.Minute + 5*time.Minute + 30*time.Minute + 17*time.Hour},
	} {
		if got := (&Destination{Schedule: c.sched}).holdSpan(); got != c.want {
			t.Errorf("holdSpan(%v) = %s, want %s", c.sched, got, c.want)
		}
	}
}
