package delivery

import "time"

// Defaults of a destination's circuit breaker.
const (
	DefaultBreakerThreshold = 10
	DefaultBreakerMaxProbe  = 2 * time.Minute
	DefaultFirstProbe       = 5 * time.Second
)

// breaker is the circuit breaker of one DIN's loop; only the loop's
// goroutine touches it. After BreakerThreshold attempts in a row have failed
// it opens: the loop stops working through the backlog and sends one
// delivery at a time as a probe, waiting twice as long after each failed
// probe (up to BreakerMaxProbe); the first success closes it.
//
// Why: without it a dead partner costs one attempt and one rewritten record
// per pending delivery per retry round. With a large backlog that keeps the
// store compacting (the memory of a million pending deliveries was Badger's
// table builders, docs/performance-history.md), and keeps hammering a partner that is down.
//
// Held deliveries are not forgotten: once one has waited the sum of its
// retry schedule's delays past its due time, and a probe has failed since it
// became due, it is spooled without another attempt (runner.dispatchOpen) —
// about when the schedule would have spooled it, never before its remaining
// delays have passed.
type breaker struct {
	streak  int           // attempts failed in a row
	open    bool          // open: only probes are sent
	since   time.Time     // when it opened
	wait    time.Duration // before the next probe
	probeAt time.Time     // when the next probe may start
	probe   string        // the probe in flight, "" when none
	// failedStart is when the latest failed probe started. A held delivery
	// due after it has not had a probe's chance yet. Only probes count: the
	// attempts that opened the circuit were made for other deliveries, and
	// may have started after this one became due when the queue was behind
	// (TestGiveUpWaitsForAProbeStartedAfterDue, TestGiveUpWaitsForAProbeNotTheOpeningAttempts).
	failedStart time.Time
}

// ended records what the destination answered attempt id: a Result*
// constant, or "" when nothing was sent (cancelled, payload unreadable). Its
// Retry-After puts the next probe no earlier than it asks. It returns
// whether the circuit opened or closed.
func (b *breaker) ended(now time.Time, id string, a answer, dest *Destination, jitter float64) (changed bool) {
	result := a.result
	wasProbe := id != "" && id == b.probe
	if wasProbe {
		b.probe = ""
	}
	switch result {
	case "":
		if wasProbe {
			b.probeAt = now.Add(jittered(b.wait, jitter)) // try another one later
		}
		return false
	case ResultSuccess:
		b.streak = 0
		if !b.open {
			return false
		}
		b.open = false
		return true
	}
	b.streak++
	switch {
	case b.open && wasProbe:
		if a.started.After(b.failedStart) {
			b.failedStart = a.started
		}
		b.wait = min(2*b.wait, dest.BreakerMaxProbe)
		b.probeAt = now.Add(jittered(b.wait, jitter))
	case !b.open && dest.BreakerThreshold > 0 && b.streak >= dest.BreakerThreshold:
		b.open = true
		b.since = now
		b.wait = min(DefaultFirstProbe, dest.BreakerMaxProbe)
		b.probeAt = now.Add(jittered(b.wait, jitter))
		changed = true
	}
	if b.open && a.retryAfter > 0 {
		if t := now.Add(a.retryAfter); t.After(b.probeAt) {
			b.probeAt = t
		}
	}
	return changed
}

// mayProbe reports whether a probe may start now.
func (b *breaker) mayProbe(now time.Time) bool {
	return b.open && b.probe == "" && !now.Before(b.probeAt)
}

// reset forgets everything, e.g. when the destination's settings change.
func (b *breaker) reset() (wasOpen bool) {
	wasOpen = b.open
	*b = breaker{}
	return wasOpen
}

// holdSpan is how long a delivery held by an open circuit waits past its due
// time before it is spooled: the whole retry schedule after the first
// attempt. A delivery that has made k attempts would, left alone, be spooled
// within its remaining delays, which are part of this span.
func (d *Destination) holdSpan() time.Duration {
	var span time.Duration
	for _, s := range d.Schedule[min(1, len(d.Schedule)):] {
		span += s
	}
	return span
}
