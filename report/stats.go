package report

import (
	"fmt"
	"sort"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Health is a destination's state at a glance.
type Health string

const (
	HealthOK       Health = "ok"       // recent attempts succeed
	HealthDegraded Health = "degraded" // retrying, slow to drain, spooling or often failing
	HealthFailing  Health = "failing"  // failed deliveries wait for an operator, or nothing gets through
	HealthIdle     Health = "idle"     // no attempts in the last day and nothing queued
)

// rank orders health from best to worst, for the totals.
func (h Health) rank() int {
	switch h {
	case HealthFailing:
		return 3
	case HealthDegraded:
		return 2
	case HealthOK:
		return 1
	}
	return 0
}

// StaleAfter is how long the oldest pending delivery may wait before its
// destination counts as degraded (or failing, when its last attempt failed).
const StaleAfter = 15 * time.Minute

// minOKRate is the success rate over the last hour below which a destination
// is degraded.
const minOKRate = 0.9

// Window counts attempt outcomes over a span of whole UTC hours (the store
// keeps hourly buckets), from Since to now.
type Window struct {
	Since       time.Time `json:"since"`
	Attempts    int       `json:"attempts"`
	Successes   int       `json:"successes"`    // attempts answered with a 2xx
	SuccessRate *float64  `json:"success_rate"` // successes/attempts; null without attempts
	Delivered   int       `json:"delivered"`
	Failed      int       `json:"failed"`
	Spooled     int       `json:"spooled"`
}

func (w *Window) add(b storage.HourBucket) {
	w.Attempts += b.Attempts
	w.Successes += b.Successes
	w.Delivered += b.Delivered
	w.Failed += b.Failed
	w.Spooled += b.Spooled
}

func (w *Window) finish() {
	w.SuccessRate = nil
	if w.Attempts > 0 {
		r := float64(w.Successes) / float64(w.Attempts)
		w.SuccessRate = &r
	}
}

// LastError is the most recent failed attempt (or spool error).
type LastError struct {
	At      time.Time `json:"at"`
	Message string    `json:"message"`
}

// Counts are the figures shown for one destination and for the totals.
type Counts struct {
	Pending   int `json:"pending"`
	Delivered int `json:"delivered"`
	Failed    int `json:"failed"`
	Spooled   int `json:"spooled"`
	// Held copies wait for their script's answer (only_accepted); cancelled
	// ones were not sent because it did not accept the notification.
	Held      int `json:"held"`
	Cancelled int `json:"cancelled"`
	// OldestPending is the creation time of the oldest pending delivery.
	OldestPending           *time.Time `json:"oldest_pending"`
	OldestPendingAgeSeconds *float64   `json:"oldest_pending_age_seconds"`
	LastSuccess             *time.Time `json:"last_success"`
	LastError               *LastError `json:"last_error"`
	// LastHour spans the current and the previous UTC hour, LastDay the
	// current hour and the 24 before: always at least 60 minutes and 24 hours.
	LastHour Window `json:"last_hour"`
	LastDay  Window `json:"last_day"`
}

// DestinationStats are one destination's counts and health.
type DestinationStats struct {
	DIN string `json:"din"`
	// Configured is false for a DIN that has records but is no longer in
	// the configuration (its pending deliveries wait until it comes back).
	Configured   bool   `json:"configured"`
	Health       Health `json:"health"`
	HealthReason string `json:"health_reason"`
	// CircuitOpenSince is set while the destination's circuit breaker holds
	// its deliveries after attempts failed in a row (null when closed).
	CircuitOpenSince *time.Time `json:"circuit_open_since"`
	// RateDelayed counts the due deliveries that waited for the
	// destination's rate (on this edge, since it started).
	RateDelayed uint64 `json:"rate_delayed"`
	Counts
}

// Totals sum every destination; their health is the worst one.
type Totals struct {
	Health Health `json:"health"`
	Counts
}

// Stats is the answer of GET /postback/stats.
type Stats struct {
	GeneratedAt  time.Time          `json:"generated_at"`
	Destinations []DestinationStats `json:"destinations"`
	Totals       Totals             `json:"totals"`
}

// Windows returns the starts of the last-hour and last-day windows at now;
// Hourly(day) gives every bucket Summarize needs.
func Windows(now time.Time) (hour, day time.Time) {
	cur := now.UTC().Truncate(time.Hour)
	return cur.Add(-time.Hour), cur.Add(-24 * time.Hour)
}

// Summarize combines the store's counters and hourly buckets (at least since
// the day window's start) into the per-destination view. Every configured
// DIN is listed, and every other DIN the store has records of.
func Summarize(configured []string, counters map[string]storage.DINStats, buckets []storage.HourBucket, now time.Time) Stats {
	now = now.UTC()
	hourStart, dayStart := Windows(now)
	isConfigured := make(map[string]bool, len(configured))
	dins := make([]string, 0, len(configured)+len(counters))
	for _, din := range configured {
		if !isConfigured[din] {
			isConfigured[din] = true
			dins = append(dins, din)
		}
	}
	for din := range counters {
		if !isConfigured[din] {
			dins = append(dins, din)
		}
	}
	sort.Strings(dins)

	byDIN := make(map[string]*DestinationStats, len(dins))
	out := Stats{GeneratedAt: now, Destinations: make([]DestinationStats, 0, len(dins))}
	out.Totals.LastHour.Since, out.Totals.LastDay.Since = hourStart, dayStart
	for _, din := range dins {
		c := counters[din]
		ds := DestinationStats{DIN: din, Configured: isConfigured[din]}
		ds.Pending, ds.Delivered, ds.Failed, ds.Spooled = c.Pending, c.Delivered, c.Failed, c.Spooled
		ds.Held, ds.Cancelled = c.Held, c.Cancelled
		if !c.OldestPending.IsZero() && c.Pending > 0 {
			ds.OldestPending = timePtr(c.OldestPending)
			age := max(now.Sub(c.OldestPending), 0).Seconds()
			ds.OldestPendingAgeSeconds = &age
		}
		ds.LastSuccess = timePtr(c.LastSuccess)
		if !c.LastError.IsZero() {
			ds.LastError = &LastError{At: c.LastError.UTC(), Message: c.LastErrorText}
		}
		ds.LastHour.Since, ds.LastDay.Since = hourStart, dayStart
		out.Destinations = append(out.Destinations, ds)
	}
	for i := range out.Destinations {
		byDIN[out.Destinations[i].DIN] = &out.Destinations[i]
	}
	for _, b := range buckets {
		ds := byDIN[b.DIN]
		if ds == nil || b.Hour.After(now) || b.Hour.Before(dayStart) {
			continue
		}
		ds.LastDay.add(b)
		if !b.Hour.Before(hourStart) {
			ds.LastHour.add(b)
		}
	}

	t := &out.Totals
	t.Health = HealthIdle
	for i := range out.Destinations {
		ds := &out.Destinations[i]
		ds.LastHour.finish()
		ds.LastDay.finish()
		ds.Health, ds.HealthReason = assess(ds, now)
		if ds.Health.rank() > t.Health.rank() {
			t.Health = ds.Health
		}
		t.Pending += ds.Pending
		t.Delivered += ds.Delivered
		t.Failed += ds.Failed
		t.Spooled += ds.Spooled
		t.Held += ds.Held
		t.Cancelled += ds.Cancelled
		if ds.OldestPending != nil && (t.OldestPending == nil || ds.OldestPending.Before(*t.OldestPending)) {
			t.OldestPending, t.OldestPendingAgeSeconds = ds.OldestPending, ds.OldestPendingAgeSeconds
		}
		if ds.LastSuccess != nil && (t.LastSuccess == nil || ds.LastSuccess.After(*t.LastSuccess)) {
			t.LastSuccess = ds.LastSuccess
		}
		if ds.LastError != nil && (t.LastError == nil || ds.LastError.At.After(t.LastError.At)) {
			t.LastError = ds.LastError
		}
		for _, pair := range [][2]*Window{{&t.LastHour, &ds.LastHour}, {&t.LastDay, &ds.LastDay}} {
			pair[0].Attempts += pair[1].Attempts
			pair[0].Successes += pair[1].Successes
			pair[0].Delivered += pair[1].Delivered
			pair[0].Failed += pair[1].Failed
			pair[0].Spooled += pair[1].Spooled
		}
	}
	t.LastHour.finish()
	t.LastDay.finish()
	return out
}

// markCircuits marks the destinations whose circuit is open as failing:
// nothing gets through to them, whatever the counters say yet. It copies
// the rate waits too: like the circuits, they are the engine's, not the
// store's.
func markCircuits(st *Stats, src Source, now time.Time) {
	for i := range st.Destinations {
		ds := &st.Destinations[i]
		ds.RateDelayed = src.RateDelayed(ds.DIN)
		since, open := src.CircuitOpen(ds.DIN)
		if !open {
			continue
		}
		ds.CircuitOpenSince = timePtr(since)
		ds.Health = HealthFailing
		ds.HealthReason = fmt.Sprintf("circuit open for %s: %s held, probing with one at a time",
			Age(max(now.Sub(since), 0)), plural(ds.Pending, "delivery", "deliveries"))
		if ds.LastError != nil {
			ds.HealthReason += "; last error: " + ds.LastError.Message
		}
		st.Totals.Health = HealthFailing
	}
}

// assess decides a destination's health and says why, in a few words.
func assess(ds *DestinationStats, now time.Time) (Health, string) {
	var oldest time.Duration
	if ds.OldestPendingAgeSeconds != nil {
		oldest = time.Duration(*ds.OldestPendingAgeSeconds * float64(time.Second))
	}
	// The latest contact failed when the last error is newer than the last success.
	lastFailed := ds.LastError != nil && (ds.LastSuccess == nil || ds.LastError.At.After(*ds.LastSuccess))
	switch {
	case ds.Failed > 0:
		return HealthFailing, fmt.Sprintf("%s wait%s for a retry", plural(ds.Failed, "failed delivery", "failed deliveries"), verbS(ds.Failed))
	case ds.Pending > 0 && lastFailed && oldest >= StaleAfter:
		return HealthFailing, fmt.Sprintf("nothing delivered for %s: %s", Age(oldest), ds.LastError.Message)
	case ds.Pending > 0 && lastFailed:
		return HealthDegraded, "retrying after: " + ds.LastError.Message
	case ds.Pending > 0 && oldest >= StaleAfter:
		return HealthDegraded, fmt.Sprintf("oldest pending delivery waits for %s", Age(oldest))
	case ds.LastDay.Spooled > 0:
		return HealthDegraded, fmt.Sprintf("%s to the spool in the last 24 h", plural(ds.LastDay.Spooled, "delivery", "deliveries"))
	case ds.LastHour.SuccessRate != nil && *ds.LastHour.SuccessRate < minOKRate:
		return HealthDegraded, fmt.Sprintf("%s of attempts succeeded in the last hour", Percent(ds.LastHour.SuccessRate))
	case ds.LastDay.Attempts == 0 && ds.Pending == 0:
		if !ds.Configured {
			return HealthIdle, "no longer configured"
		}
		return HealthIdle, "no attempts in the last 24 h"
	case ds.Pending > 0:
		return HealthOK, fmt.Sprintf("%s in progress", plural(ds.Pending, "delivery", "deliveries"))
	}
	return HealthOK, fmt.Sprintf("%s of attempts succeeded in the last 24 h", Percent(ds.LastDay.SuccessRate))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func verbS(n int) string {
	if n == 1 {
		return "s"
	}
	return ""
}

// Percent formats a rate for people: "100%", "99.5%", "–" without attempts.
func Percent(r *float64) string {
	if r == nil {
		return "–"
	}
	p := *r * 100
	if p == 100 || p == 0 {
		return fmt.Sprintf("%.0f%%", p)
	}
	if p > 99.9 {
		return ">99.9%" // never round a failure away to 100%
	}
	if p < 0.1 {
		return "<0.1%"
	}
	return fmt.Sprintf("%.1f%%", p)
}

// Age formats a duration in its two largest units: "45s", "3m 20s", "2h 5m", "3d 4h".
func Age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return twoUnits(int(d/time.Minute), "m", int(d%time.Minute/time.Second), "s")
	case d < 24*time.Hour:
		return twoUnits(int(d/time.Hour), "h", int(d%time.Hour/time.Minute), "m")
	}
	return twoUnits(int(d/(24*time.Hour)), "d", int(d%(24*time.Hour)/time.Hour), "h")
}

func twoUnits(a int, ua string, b int, ub string) string {
	if b == 0 {
		return fmt.Sprintf("%d%s", a, ua)
	}
	return fmt.Sprintf("%d%s %d%s", a, ua, b, ub)
}
