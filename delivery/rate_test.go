package delivery

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{"50/s": {50, time.Second}, "1/m": {1, time.Minute}, "600/m": {600, time.Minute}} {
		got, err := ParseRate(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseRate(%q) = %+v, %v; String %q", in, got, err, got.String())
		}
	}
	for _, bad := range []string{"", "50", "0/s", "-1/s", "5/h", "x/s", "5/sec"} {
		if _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
}

// The pacer never lets N+1 attempts start within Per less one interval,
// whatever the pattern of calls, and lets one through as soon as a slot is due.
func TestPacerSpacing(t *testing.T) {
	r := Rate{N: 10, Per: time.Second} // every 100 ms
	var p pacer
	now := time.Unix(1000, 0)
	var starts []time.Time
	for step := 0; step < 5000; step++ {
		// Irregular calls: every 7 ms, sometimes a 250 ms stall (a late timer).
		now = now.Add(7 * time.Millisecond)
		if step%97 == 0 {
			now = now.Add(250 * time.Millisecond)
		}
		if p.take(r, now) {
			starts = append(starts, now)
		} else if until, ok := p.waiting(r, now); !ok || !until.After(now) {
			t.Fatalf("refused at %s but not waiting (until %s)", now, until)
		}
	}
	for k := r.N; k < len(starts); k++ {
		if gap := starts[k].Sub(starts[k-r.N]); gap < r.Per-r.interval() {
			t.Fatalf("%d attempts within %s", r.N+1, gap)
		}
	}
	// Without stalls, late calls (7 ms granularity) do not lower the rate.
	p, starts = pacer{}, nil
	for step := 0; step < 5000; step++ {
		now = now.Add(7 * time.Millisecond)
		if p.take(r, now) {
			starts = append(starts, now)
		}
	}
	span := starts[len(starts)-1].Sub(starts[0]).Seconds()
	if got := float64(len(starts)-1) / span; got > 10.01 || got < 9.9 {
		t.Errorf("%.2f attempts/s, want 10", got)
	}
	if !(&pacer{}).take(Rate{}, now) {
		t.Error("no rate refused an attempt")
	}
}

// A backlog to a destination with a rate starts its attempts spaced by the
// rate, all delivered, the waits counted.
func TestRateSpacesAttempts(t *testing.T) {
	srv := newSink(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusOK) })
	store := newFakeStore()
	const n = 30
	ids := make([]string, n)
	for i := range ids {
		ids[i] = store.add("7", "text/plain", []byte("x=1"), time.Now(), 0)
	}
	obs := newRecorder()
	rate := Rate{N: 20, Per: time.Second}
	d := run(t, store, Options{Observer: obs}, &Destination{DIN: "7", URL: srv.url(t, "/"), Concurrency: 8, Rate: rate})
	testutil.WaitFor(t, "all delivered", 20*time.Second, func() bool { return obs.fin(storage.StateDelivered) == n })

	var starts []time.Time
	for _, id := range ids {
		starts = append(starts, store.get(id).Attempts[0].At)
	}
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	for k := rate.N; k < len(starts); k++ {
		if gap := starts[k].Sub(starts[k-rate.N]); gap < rate.Per-rate.interval() {
			t.Fatalf("attempts %d..%d started within %s: more than %s", k-rate.N, k, gap, rate)
		}
	}
	t.Logf("%d attempts in %s at %s", n, starts[n-1].Sub(starts[0]), rate)
	// The first is sent at once; each other waited for the rate.
	if got := d.RateDelayed("7"); got != n-1 || obs.get("7/rate_delayed") != n-1 {
		t.Errorf("rate delayed %d (observer %d), want %d", got, obs.get("7/rate_delayed"), n-1)
	}
}
