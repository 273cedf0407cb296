package delivery

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestDestinationValidate(t *testing.T) {
	good := func() *Destination {
		u, _ := url.Parse("https://partner.example/collect")
		return &Destination{DIN: "1001", URL: u}
	}
	for name, c := range map[string]struct {
		edit func(*Destination)
		want string // "" means valid
	}{
		"defaults":             {func(*Destination) {}, ""},
		"method in any case":   {func(d *Destination) { d.Method = "post" }, ""},
		"get":                  {func(d *Destination) { d.Method = "Get" }, ""},
		"put":                  {func(d *Destination) { d.Method = "PUT" }, `method "PUT": must be POST or GET`},
		"item code":            {func(d *Destination) { d.ItemCode = "AB-1" }, ""},
		"item code not ASCII":  {func(d *Destination) { d.ItemCode = "éab" }, `item_code "éab": must be 4 visible ASCII`},
		"item code too short":  {func(d *Destination) { d.ItemCode = "ABC" }, `item_code "ABC"`},
		"item code with space": {func(d *Destination) { d.ItemCode = "AB C" }, `item_code "AB C"`},
		"DIN":                  {func(d *Destination) { d.DIN = "10 01" }, `DIN "10 01"`},
		"http":                 {func(d *Destination) { d.URL.Scheme = "http" }, "must use https://"},
		"http allowed":         {func(d *Destination) { d.URL.Scheme = "http"; d.InsecureHTTP = true }, ""},
		"ftp":                  {func(d *Destination) { d.URL.Scheme = "ftp" }, "scheme must be https"},
		"relative":             {func(d *Destination) { d.URL = &url.URL{Path: "/x"} }, "not an absolute URL"},
		"credentials redacted": {func(d *Destination) { d.URL, _ = url.Parse("http://u:SECRET@h/?k=Q") }, "url http://h/:"},
		"delayed first":        {func(d *Destination) { d.Schedule = []time.Duration{time.Second} }, "must start with 0s"},
		"negative delay":       {func(d *Destination) { d.Schedule = []time.Duration{0, -time.Second} }, "negative delay"},
		"breaker off":          {func(d *Destination) { d.BreakerThreshold = -1 }, ""},
		"breaker below off":    {func(d *Destination) { d.BreakerThreshold = -2 }, "breaker_threshold -2"},
		"negative timeout":     {func(d *Destination) { d.Timeout = -time.Second }, "timeout -1s"},
		"negative concurrency": {func(d *Destination) { d.Concurrency = -1 }, "concurrency -1"},
	} {
		d := good()
		c.edit(d)
		err := d.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		case err != nil && (strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "k=Q")):
			t.Errorf("%s: %v shows the URL's credentials or query", name, err)
		}
	}
}

// A set with one destination the rules refuse is refused whole: no DIN of
// it is held, so nothing is enqueued for a destination that never delivers.
func TestSetDestinationsRefusesAnInvalidSet(t *testing.T) {
	d := New(newFakeStore(), Options{})
	ok, _ := url.Parse("https://partner.example/")
	if err := d.SetDestinations([]*Destination{{DIN: "1", URL: ok}}); err != nil {
		t.Fatal(err)
	}
	err := d.SetDestinations([]*Destination{{DIN: "1", URL: ok}, {DIN: "2", URL: ok, ItemCode: "éab"}})
	if err == nil || !strings.Contains(err.Error(), "destination 2: item_code") {
		t.Fatalf("SetDestinations with a bad item code: %v", err)
	}
	if got := d.DINs(); len(got) != 1 || got[0] != "1" {
		t.Errorf("DINs after a refused set = %v, want the previous [1]", got)
	}
	if err := d.SetDestinations([]*Destination{{DIN: "1", URL: ok}, {DIN: "1", URL: ok}}); err == nil {
		t.Error("a DIN given twice was accepted")
	}
}
