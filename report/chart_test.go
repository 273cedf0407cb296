package report

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

func TestReportChartGeometry(t *testing.T) {
	now := time.Date(2025, 11, 21, 14, 20, 0, 0, time.UTC)
	cur := now.Truncate(time.Hour)
	buckets := []storage.HourBucket{
		{Hour: cur, DIN: "A", Attempts: 12, Successes: 8, Delivered: 8, Failed: 1, Spooled: 1}, // 2 retried
		{Hour: cur, DIN: "B", Attempts: 2, Successes: 2, Delivered: 2},
		{Hour: cur.Add(-23 * time.Hour), DIN: "A", Attempts: 3, Successes: 3, Delivered: 3}, // first bar
		{Hour: cur.Add(-24 * time.Hour), DIN: "A", Attempts: 99, Delivered: 99},             // outside
		{Hour: cur.Add(time.Hour), DIN: "A", Attempts: 99, Delivered: 99},                   // future
		{Hour: cur.Add(-5 * time.Hour), DIN: "B", Attempts: 1, Failed: 1, Spooled: 1},       // retried clamps at 0
	}
	c := NewChart(buckets, "", now)
	if len(c.Bars) != 24 || !c.Bars[0].Hour.Equal(cur.Add(-23*time.Hour)) || !c.Bars[23].Hour.Equal(cur) {
		t.Fatalf("bars: %d, first %s, last %s", len(c.Bars), c.Bars[0].Hour, c.Bars[len(c.Bars)-1].Hour)
	}
	if c.Delivered != 13 || c.Retried != 2 || c.Failed != 2 || c.Spooled != 2 || c.Total != 19 {
		t.Errorf("totals: %+v", c)
	}
	last := c.Bars[23]
	if last.Total != 14 || len(last.Segments) != 4 {
		t.Fatalf("last bar: %+v", last)
	}
	// Stacked bottom-up in series order, touching, within the plot.
	bottom := c.PlotY + c.PlotH
	wantSeries := []string{"delivered", "retried", "spooled", "failed"}
	wantCounts := []int{10, 2, 1, 1}
	for i, s := range last.Segments {
		if s.Series != wantSeries[i] || s.Count != wantCounts[i] {
			t.Errorf("segment %d: %+v", i, s)
		}
		if math.Abs(s.Y+s.H-bottom) > 0.02 {
			t.Errorf("segment %d does not sit on the one below: y+h=%v, want %v", i, s.Y+s.H, bottom)
		}
		bottom = s.Y
	}
	// Scale: the 14-high bar against a nice axis top of 15 (step 5).
	if top := c.YTicks[len(c.YTicks)-1]; top.Label != "15" || math.Abs(top.Pos-c.PlotY) > 0.01 {
		t.Errorf("top tick %+v, plot top %v", top, c.PlotY)
	}
	if h := last.Segments[0].H; math.Abs(h-c.PlotH*10/15) > 0.02 {
		t.Errorf("delivered height %v, want %v", h, c.PlotH*10/15)
	}
	if !strings.Contains(last.Title, "10 delivered, 2 retried attempts, 1 spooled, 1 failed") || !strings.Contains(last.Title, "14:00–15:00 UTC") {
		t.Errorf("title %q", last.Title)
	}
	if c.Bars[5].Total != 0 || !strings.HasSuffix(c.Bars[5].Title, "nothing") {
		t.Errorf("empty bar: %+v", c.Bars[5])
	}
	for i := 1; i < 24; i++ {
		if c.Bars[i].X <= c.Bars[i-1].X+c.Bars[i-1].W {
			t.Fatalf("bars %d and %d overlap", i-1, i)
		}
	}
	if c.Bars[23].X+c.Bars[23].W > c.PlotX+c.PlotW {
		t.Error("last bar leaves the plot")
	}
	// X ticks every 3 hours, ending with the current hour.
	if len(c.XTicks) != 8 || c.XTicks[7].Label != "14:00" || c.XTicks[0].Label != "17:00" {
		t.Errorf("x ticks %+v", c.XTicks)
	}

	only := NewChart(buckets, "B", now)
	if only.Delivered != 2 || only.Failed != 1 || only.Total != 4 {
		t.Errorf("DIN B only: %+v", only)
	}
	empty := NewChart(nil, "", now)
	if empty.Total != 0 || len(empty.YTicks) != 5 || empty.YTicks[4].Label != "4" {
		t.Errorf("empty chart ticks %+v", empty.YTicks)
	}
}

func TestReportNiceScale(t *testing.T) {
	for _, tc := range []struct{ peak, top, step int }{
		{0, 4, 1}, {4, 4, 1}, {5, 6, 2}, {14, 15, 5}, {30, 30, 10}, {37, 40, 10}, {101, 150, 50}, {999, 1000, 500},
	} {
		top, step := niceScale(tc.peak, 4)
		if top != tc.top || step != tc.step {
			t.Errorf("niceScale(%d) = %d, %d; want %d, %d", tc.peak, top, step, tc.top, tc.step)
		}
	}
}
