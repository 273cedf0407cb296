package report

import (
	"fmt"
	"strings"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Series of the hourly chart, bottom to top. Retried counts failed attempts
// that were followed by another one; failed and spooled count deliveries that
// ended that way, so a bar's height is what happened in that hour.
var chartSeries = []struct{ Key, Label string }{
	{"delivered", "Delivered"},
	{"retried", "Retried attempts"},
	{"spooled", "Spooled"},
	{"failed", "Failed"},
}

// Chart is the geometry of the inline SVG: 24 stacked bars, one per UTC hour
// ending with the current one. Coordinates are in SVG user units.
type Chart struct {
	Width, Height      float64
	PlotX, PlotY       float64 // top-left of the plot area
	PlotW, PlotH       float64
	Bars               []Bar
	YTicks             []Tick
	XTicks             []Tick
	Legend             []LegendItem
	Total              int // sum of all segments
	Delivered, Retried int
	Spooled, Failed    int
}

// Bar is one hour.
type Bar struct {
	Hour     time.Time
	X, W     float64
	Segments []Segment
	Title    string // the hour's figures, shown as the bar's tooltip
	Total    int
}

// Segment is one outcome's part of a bar.
type Segment struct {
	Series string // delivered, retried, spooled, failed: the CSS class suffix
	Count  int
	Y, H   float64
}

// Tick is an axis label.
type Tick struct {
	Pos   float64
	Label string
}

// LegendItem is one series in the legend.
type LegendItem struct {
	Series, Label string
	Count         int
}

const (
	chartW, chartH         = 960.0, 240.0
	chartLeft, chartRight  = 44.0, 12.0
	chartTop, chartBottom  = 14.0, 30.0
	barGapRatio            = 0.25
	chartHours             = 24
	chartXTickEvery        = 3
	chartYTicksApproximate = 4
)

// NewChart lays out the last 24 hours (the current hour last) of the given
// buckets, summed over the DINs; din, when not empty, keeps only that one.
func NewChart(buckets []storage.HourBucket, din string, now time.Time) Chart {
	c := Chart{Width: chartW, Height: chartH, PlotX: chartLeft, PlotY: chartTop,
		PlotW: chartW - chartLeft - chartRight, PlotH: chartH - chartTop - chartBottom}
	last := now.UTC().Truncate(time.Hour)
	first := last.Add(-(chartHours - 1) * time.Hour)

	counts := make([][4]int, chartHours) // per hour, per series
	for _, b := range buckets {
		if din != "" && b.DIN != din {
			continue
		}
		h := b.Hour.UTC().Truncate(time.Hour)
		if h.Before(first) || h.After(last) {
			continue
		}
		i := int(h.Sub(first) / time.Hour)
		retried := b.Attempts - b.Successes - b.Failed - b.Spooled
		counts[i][0] += b.Delivered
		counts[i][1] += max(retried, 0)
		counts[i][2] += b.Spooled
		counts[i][3] += b.Failed
	}
	peak := 0
	for _, hc := range counts {
		c.Delivered += hc[0]
		c.Retried += hc[1]
		c.Spooled += hc[2]
		c.Failed += hc[3]
		peak = max(peak, hc[0]+hc[1]+hc[2]+hc[3])
	}
	c.Total = c.Delivered + c.Retried + c.Spooled + c.Failed
	for i, n := range []int{c.Delivered, c.Retried, c.Spooled, c.Failed} {
		c.Legend = append(c.Legend, LegendItem{Series: chartSeries[i].Key, Label: chartSeries[i].Label, Count: n})
	}

	top, step := niceScale(peak, chartYTicksApproximate)
	scale := c.PlotH / float64(top)
	for v := 0; v <= top; v += step {
		c.YTicks = append(c.YTicks, Tick{Pos: round2(c.PlotY + c.PlotH - float64(v)*scale), Label: fmt.Sprint(v)})
	}

	slot := c.PlotW / chartHours
	gap := slot * barGapRatio
	for i := 0; i < chartHours; i++ {
		hour := first.Add(time.Duration(i) * time.Hour)
		bar := Bar{Hour: hour, X: round2(c.PlotX + float64(i)*slot + gap/2), W: round2(slot - gap)}
		y := c.PlotY + c.PlotH
		var parts []string
		for s, n := range counts[i] {
			bar.Total += n
			if n == 0 {
				continue
			}
			h := float64(n) * scale
			y -= h
			bar.Segments = append(bar.Segments, Segment{Series: chartSeries[s].Key, Count: n, Y: round2(y), H: round2(h)})
			parts = append(parts, fmt.Sprintf("%d %s", n, strings.ToLower(chartSeries[s].Label)))
		}
		end := hour.Add(time.Hour)
		if len(parts) == 0 {
			parts = append(parts, "nothing")
		}
		bar.Title = fmt.Sprintf("%s–%s UTC: %s", hour.Format("Jan 2 15:04"), end.Format("15:04"), strings.Join(parts, ", "))
		c.Bars = append(c.Bars, bar)
		if (last.Sub(hour)/time.Hour)%chartXTickEvery == 0 {
			c.XTicks = append(c.XTicks, Tick{Pos: round2(c.PlotX + (float64(i)+0.5)*slot), Label: hour.Format("15:04")})
		}
	}
	return c
}

// niceScale returns an axis maximum >= peak and a step that divides it, both
// 1, 2 or 5 times a power of ten, for about n steps. The minimum is 0..n.
func niceScale(peak, n int) (top, step int) {
	if peak <= n {
		return n, 1
	}
	raw := (peak + n - 1) / n
	mag := 1
	for mag*10 <= raw {
		mag *= 10
	}
	for _, m := range []int{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	top = (peak + step - 1) / step * step
	return top, step
}

func round2(f float64) float64 {
	if f < 0 {
		return -round2(-f)
	}
	return float64(int64(f*100+0.5)) / 100
}
