package report

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

func TestReportSummarizeWindowsAndTotals(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 20, 0, 0, time.UTC)
	cur := now.Truncate(time.Hour)
	counters := map[string]storage.DINStats{
		"A": {Delivered: 10, Pending: 1, OldestPending: now.Add(-90 * time.Second), LastSuccess: now.Add(-time.Minute)},
		"B": {Failed: 2, Spooled: 1, LastError: now.Add(-2 * time.Minute), LastErrorText: "HTTP 500", LastSuccess: now.Add(-3 * time.Hour)},
		"Z": {Delivered: 4}, // has records, not configured any more
	}
	buckets := []storage.HourBucket{
		{Hour: cur, DIN: "A", Attempts: 4, Successes: 3, Delivered: 3},
		{Hour: cur.Add(-time.Hour), DIN: "A", Attempts: 4, Successes: 4, Delivered: 4},
		{Hour: cur.Add(-2 * time.Hour), DIN: "A", Attempts: 2, Successes: 2, Delivered: 2},   // day only
		{Hour: cur.Add(-24 * time.Hour), DIN: "A", Attempts: 1, Successes: 1, Delivered: 1},  // first hour of the day window
		{Hour: cur.Add(-25 * time.Hour), DIN: "A", Attempts: 50, Successes: 0, Delivered: 0}, // too old
		{Hour: cur.Add(-3 * time.Hour), DIN: "B", Attempts: 6, Successes: 1, Failed: 2, Spooled: 1},
		{Hour: cur, DIN: "unknown", Attempts: 7}, // no counters, not configured: ignored
	}
	st := Summarize([]string{"B", "A", "C"}, counters, buckets, now)

	var dins []string
	for _, d := range st.Destinations {
		dins = append(dins, d.DIN)
	}
	if strings.Join(dins, ",") != "A,B,C,Z" {
		t.Fatalf("destinations %v, want A,B,C,Z", dins)
	}
	a, b, c, z := st.Destinations[0], st.Destinations[1], st.Destinations[2], st.Destinations[3]
	if !a.Configured || !c.Configured || z.Configured {
		t.Errorf("configured flags: %v %v %v", a.Configured, c.Configured, z.Configured)
	}
	if a.LastHour.Attempts != 8 || a.LastHour.Successes != 7 || !near(*a.LastHour.SuccessRate, 7.0/8) {
		t.Errorf("A last hour: %+v", a.LastHour)
	}
	if a.LastDay.Attempts != 11 || a.LastDay.Successes != 10 || a.LastDay.Delivered != 10 {
		t.Errorf("A last day: %+v", a.LastDay)
	}
	if !a.LastHour.Since.Equal(cur.Add(-time.Hour)) || !a.LastDay.Since.Equal(cur.Add(-24*time.Hour)) {
		t.Errorf("window starts %s %s", a.LastHour.Since, a.LastDay.Since)
	}
	if a.OldestPendingAgeSeconds == nil || *a.OldestPendingAgeSeconds != 90 {
		t.Errorf("A oldest pending age %v", a.OldestPendingAgeSeconds)
	}
	if c.LastHour.SuccessRate != nil || c.LastSuccess != nil || c.LastError != nil || c.OldestPending != nil {
		t.Errorf("C without data must have nulls: %+v", c)
	}
	if b.LastError == nil || b.LastError.Message != "HTTP 500" || b.LastHour.Attempts != 0 || b.LastDay.Attempts != 6 {
		t.Errorf("B: %+v", b)
	}
	tot := st.Totals
	if tot.Pending != 1 || tot.Delivered != 14 || tot.Failed != 2 || tot.Spooled != 1 ||
		tot.LastHour.Attempts != 8 || tot.LastDay.Attempts != 17 || tot.LastDay.Successes != 11 ||
		!near(*tot.LastDay.SuccessRate, 11.0/17) || tot.Health != HealthFailing ||
		tot.LastError.Message != "HTTP 500" || !tot.LastSuccess.Equal(now.Add(-time.Minute)) || *tot.OldestPendingAgeSeconds != 90 {
		t.Errorf("totals: %+v", tot)
	}

	// JSON: nulls are present, not omitted, so scripts can rely on the keys.
	raw, _ := json.Marshal(c)
	for _, k := range []string{`"oldest_pending":null`, `"last_success":null`, `"last_error":null`, `"success_rate":null`, `"health":"idle"`} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("C JSON lacks %s: %s", k, raw)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestReportHealth(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 20, 0, 0, time.UTC)
	cur := now.Truncate(time.Hour)
	ok := storage.HourBucket{Hour: cur, Attempts: 10, Successes: 10, Delivered: 10}
	for _, tc := range []struct {
		name    string
		c       storage.DINStats
		b       []storage.HourBucket
		want    Health
		because string
	}{
		{"failed wait", storage.DINStats{Failed: 1, LastSuccess: now}, []storage.HourBucket{ok}, HealthFailing, "1 failed delivery waits for a retry"},
		{"stuck", storage.DINStats{Pending: 3, OldestPending: now.Add(-20 * time.Minute), LastError: now, LastErrorText: "HTTP 503"}, nil,
			HealthFailing, "nothing delivered for 20m: HTTP 503"},
		{"retrying", storage.DINStats{Pending: 1, OldestPending: now.Add(-time.Minute), LastSuccess: now.Add(-time.Hour), LastError: now, LastErrorText: "timeout after 15s"},
			[]storage.HourBucket{ok}, HealthDegraded, "retrying after: timeout after 15s"},
		{"slow", storage.DINStats{Pending: 1, OldestPending: now.Add(-16 * time.Minute), LastSuccess: now}, []storage.HourBucket{ok},
			HealthDegraded, "oldest pending delivery waits for 16m"},
		{"spooling", storage.DINStats{Spooled: 4}, []storage.HourBucket{{Hour: cur.Add(-5 * time.Hour), Attempts: 8, Spooled: 1}},
			HealthDegraded, "1 delivery to the spool in the last 24 h"},
		{"flaky", storage.DINStats{Delivered: 10, LastSuccess: now, LastError: now.Add(-time.Minute)},
			[]storage.HourBucket{{Hour: cur, Attempts: 10, Successes: 8, Delivered: 8}}, HealthDegraded, "80.0% of attempts succeeded in the last hour"},
		{"idle", storage.DINStats{Delivered: 100}, nil, HealthIdle, "no attempts in the last 24 h"},
		{"busy", storage.DINStats{Pending: 2, OldestPending: now, LastSuccess: now}, []storage.HourBucket{ok}, HealthOK, "2 deliveries in progress"},
		{"fine", storage.DINStats{Delivered: 10, LastSuccess: now}, []storage.HourBucket{ok}, HealthOK, "100% of attempts succeeded in the last 24 h"},
	} {
		for i := range tc.b {
			tc.b[i].DIN = "X"
		}
		st := Summarize([]string{"X"}, map[string]storage.DINStats{"X": tc.c}, tc.b, now)
		d := st.Destinations[0]
		if d.Health != tc.want || d.HealthReason != tc.because {
			t.Errorf("%s: %s %q, want %s %q", tc.name, d.Health, d.HealthReason, tc.want, tc.because)
		}
		if st.Totals.Health != tc.want {
			t.Errorf("%s: totals health %s", tc.name, st.Totals.Health)
		}
	}
	st := Summarize(nil, map[string]storage.DINStats{"gone": {Delivered: 1}}, nil, now)
	if d := st.Destinations[0]; d.Health != HealthIdle || d.HealthReason != "no longer configured" {
		t.Errorf("unconfigured: %s %q", d.Health, d.HealthReason)
	}
}

func TestReportPercentAndAge(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	for r, want := range map[*float64]string{nil: "–", f(1): "100%", f(0): "0%", f(0.5): "50.0%", f(0.99999): ">99.9%", f(0.0001): "<0.1%", f(0.9876): "98.8%"} {
		if got := Percent(r); got != want {
			t.Errorf("Percent(%v) = %q, want %q", r, got, want)
		}
	}
	for d, want := range map[time.Duration]string{-time.Second: "0s", 45 * time.Second: "45s", 3*time.Minute + 20*time.Second: "3m 20s",
		time.Hour: "1h", 2*time.Hour + 5*time.Minute + 9*time.Second: "2h 5m", 76 * time.Hour: "3d 4h", 48 * time.Hour: "2d"} {
		if got := Age(d); got != want {
			t.Errorf("Age(%s) = %q, want %q", d, got, want)
		}
	}
}
