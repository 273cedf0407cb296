package delivery

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rate is a destination's request limit: at most N attempts per Per. The
// zero Rate is no limit.
type Rate struct {
	N   int
	Per time.Duration
}

// ParseRate reads "<n>/s" or "<n>/m" (n ≥ 1).
func ParseRate(s string) (Rate, error) {
	num, unit, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 1 {
		return Rate{}, fmt.Errorf("rate %q: want <n>/s or <n>/m with n at least 1", s)
	}
	switch unit {
	case "s":
		return Rate{N: n, Per: time.Second}, nil
	case "m":
		return Rate{N: n, Per: time.Minute}, nil
	}
	return Rate{}, fmt.Errorf("rate %q: the unit is s or m", s)
}

func (r Rate) String() string {
	if r.N == 0 {
		return ""
	}
	unit := "s"
	if r.Per == time.Minute {
		unit = "m"
	}
	return strconv.Itoa(r.N) + "/" + unit
}

// CheckRate accepts the zero Rate or one ParseRate gives.
func CheckRate(r Rate) error {
	if r == (Rate{}) {
		return nil
	}
	if r.N < 1 || (r.Per != time.Second && r.Per != time.Minute) {
		return fmt.Errorf("rate %d per %s: want n ≥ 1 per second or per minute", r.N, r.Per)
	}
	return nil
}

// interval is the spacing between attempts.
func (r Rate) interval() time.Duration { return r.Per / time.Duration(r.N) }

// pacer spaces one DIN's attempts by its rate's interval, one at a time (no
// burst): a partner counting requests in any window of Per sees at most N,
// give or take the one whose timer fired late. Only the runner's goroutine
// uses it.
type pacer struct {
	next    time.Time // the earliest start of the next attempt
	delayed string    // the delivery last counted as waiting for the rate
}

// take reports whether an attempt may start at now, and if so books the
// next slot. A late start keeps the schedule (next = the booked slot plus an
// interval) as long as it is less than an interval late, so timer lateness
// does not lower the rate; beyond that the spacing starts again from now.
func (p *pacer) take(r Rate, now time.Time) bool {
	if r.N == 0 {
		return true
	}
	if now.Before(p.next) {
		return false
	}
	base := p.next
	if now.Sub(base) >= r.interval() {
		base = now
	}
	p.next = base.Add(r.interval())
	return true
}

// waiting reports whether the rate holds back an attempt at now, and until when.
func (p *pacer) waiting(r Rate, now time.Time) (time.Time, bool) {
	return p.next, r.N != 0 && now.Before(p.next)
}

// RateDelayed counts din's due deliveries that waited for its rate since
// this edge started.
func (d *Dispatcher) RateDelayed(din string) uint64 {
	d.mu.Lock()
	r := d.runners[din]
	d.mu.Unlock()
	if r == nil {
		return 0
	}
	return r.delayed.Load()
}
