package delivery

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// jittered spreads delay uniformly over ±frac of itself, so that deliveries
// failed together (a destination outage) do not all retry at once.
func jittered(delay time.Duration, frac float64) time.Duration {
	if delay <= 0 || frac <= 0 {
		return delay
	}
	f := 1 + frac*(2*rand.Float64()-1)
	return time.Duration(float64(delay) * f)
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(365*24*time.Hour/time.Second) {
			secs = int64(365 * 24 * time.Hour / time.Second) // no overflow; capped later anyway
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// nextAttempt is when the retry after a failed attempt (ended at end) is due:
// the jittered schedule delay, pushed later (never earlier) by a Retry-After
// bounded by maxRA.
func nextAttempt(end time.Time, delay time.Duration, jitter float64, retryAfter time.Duration, hasRA bool, maxRA time.Duration) time.Time {
	next := end.Add(jittered(delay, jitter))
	if hasRA {
		if t := end.Add(min(retryAfter, maxRA)); t.After(next) {
			next = t
		}
	}
	return next
}
