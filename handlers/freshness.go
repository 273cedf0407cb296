package handlers

import (
	"net/http"
	"time"
)

// DefaultFutureSkew is how far in the future a transtime may be: the
// sender's clock and ours are not exactly in step.
const DefaultFutureSkew = 2 * time.Minute

// CheckTransTime enforces maxAge on the Unix time (seconds) in the field
// named field. maxAge <= 0 disables the check. A missing, empty or
// non-numeric time is refused (ReasonTimeMissing): with a maximum age set, a
// notification that does not say when it happened cannot be shown to be
// fresh. Older than maxAge is ReasonStale; more than skew ahead of now is
// ReasonFuture. All are 403 Denials.
func CheckTransTime(form Form, field string, maxAge, skew time.Duration, now time.Time) error {
	if maxAge <= 0 {
		return nil
	}
	raw, ok := form.Get(field)
	if !ok {
		return Deny(http.StatusForbidden, ReasonTimeMissing)
	}
	sec, ok := parseUnixSeconds(raw)
	if !ok {
		return Deny(http.StatusForbidden, ReasonTimeMissing)
	}
	t := time.Unix(sec, 0)
	if now.Sub(t) > maxAge {
		return Deny(http.StatusForbidden, ReasonStale)
	}
	if t.Sub(now) > skew {
		return Deny(http.StatusForbidden, ReasonFuture)
	}
	return nil
}

// parseUnixSeconds accepts ASCII digits only (no sign, no spaces, no
// fraction), at most 12 of them: year 33658, well past any real transtime,
// and far from overflowing time arithmetic.
func parseUnixSeconds(s string) (int64, bool) {
	if s == "" || len(s) > 12 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
