package report

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// An open circuit makes the destination failing in the API and on the page,
// whatever its counters say yet.
func TestOpenCircuitIsFailing(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := demoSource(now)
	a := &API{Source: func() (Source, error) { return src, nil }, Now: func() time.Time { return now }}
	_, _, body := apiCall(t, a, "GET", "/postback/stats")
	var before Stats
	if err := json.Unmarshal(body, &before); err != nil || before.Destinations[0].Health != HealthOK ||
		before.Destinations[0].CircuitOpenSince != nil || !strings.Contains(string(body), `"circuit_open_since": null`) {
		t.Fatalf("before: %s", body)
	}

	since := now.Add(-90 * time.Second)
	src.circuits = map[string]time.Time{"1001": since}
	_, _, body = apiCall(t, a, "GET", "/postback/stats")
	var st Stats
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	ds := st.Destinations[0]
	if ds.DIN != "1001" || ds.Health != HealthFailing || ds.CircuitOpenSince == nil || !ds.CircuitOpenSince.Equal(since) ||
		!strings.HasPrefix(ds.HealthReason, "circuit open for 1m 30s") || st.Totals.Health != HealthFailing {
		t.Errorf("1001 with an open circuit: %+v, totals %s", ds, st.Totals.Health)
	}
	if st.Destinations[1].CircuitOpenSince != nil {
		t.Error("1002's circuit reported open")
	}

	srv, c := pageServer(t, src, now)
	_, page := get(t, c, srv.URL+"/ops/report/")
	if !strings.Contains(page, `<article class="card card-failing" data-din="1001"`) || !strings.Contains(page, "circuit open for 1m 30s") {
		t.Error("the page does not show 1001's open circuit")
	}
}

// The engine's count of deliveries that waited for a destination's rate
// is in the stats.
func TestRateDelayedInStats(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 37, 0, 0, time.UTC)
	src := demoSource(now)
	src.delayed = map[string]uint64{"1002": 17}
	a := &API{Source: func() (Source, error) { return src, nil }, Now: func() time.Time { return now }}
	_, _, body := apiCall(t, a, "GET", "/postback/stats")
	var st Stats
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.Destinations[0].RateDelayed != 0 || st.Destinations[1].DIN != "1002" || st.Destinations[1].RateDelayed != 17 {
		t.Errorf("rate_delayed: %s", body)
	}
}
