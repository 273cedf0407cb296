package handlers

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func mustAllowlist(t *testing.T, entries ...string) *Allowlist {
	t.Helper()
	a, err := ParseAllowlist(entries)
	if err != nil {
		t.Fatalf("ParseAllowlist(%q): %v", entries, err)
	}
	return a
}

func TestAllowEntryNormalisation(t *testing.T) {
	cases := []struct {
		entry string
		want  string
	}{
		{"203.0.113.10", "203.0.113.10/32"},
		{"198.51.100.0/24", "198.51.100.0/24"},
		{"198.51.100.7/24", "198.51.100.0/24"}, // host bits: the whole network
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:DB8::/32", "2001:db8::/32"},
		{"::/0", "::/0"},
		{"::ffff:198.51.100.20", "198.51.100.20/32"},
		{"::ffff:c633:6414", "198.51.100.20/32"}, // the same, in hex
		{"::ffff:198.51.100.0/120", "198.51.100.0/24"},
		{"::ffff:0:0/96", "0.0.0.0/0"},
		{"::ffff:0:0/95", "::fffe:0:0/95"}, // wider than the mapped range: stays IPv6
		{"fe80::1%eth0", "fe80::1/128"},
		{"fe80::%eth0/64", "fe80::/64"},
		{"fe80::/64%eth0", "fe80::/64"},
	}
	for _, c := range cases {
		p, err := ParseAllowEntry(c.entry)
		if err != nil {
			t.Errorf("ParseAllowEntry(%q): %v", c.entry, err)
			continue
		}
		if p.String() != c.want {
			t.Errorf("ParseAllowEntry(%q) = %s, want %s", c.entry, p, c.want)
		}
	}
}

func TestAllowEntryGarbage(t *testing.T) {
	bad := []string{
		"", " ", "localhost", "example.com", "1.2.3", "1.2.3.4.5", "256.1.1.1",
		"01.2.3.4",                     // leading zero: octal or decimal? refused
		"1.2.3.4/33", "2001:db8::/129", // prefix too long
		"1.2.3.4/", "/24", "1.2.3.4/-1", "1.2.3.4/x",
		"1.2.3.4:80", "[2001:db8::1]:443", "[2001:db8::1]",
		"1.2.3.4 ", " 1.2.3.4", "1.2.3.4,5.6.7.8",
		"1.2.3.4%eth0",   // zone on IPv4
		"fe80::1%",       // empty zone
		"fe80::/64%",     // empty zone after the prefix
		"fe80::/64%e/64", // two prefix lengths
		"1.2.3.0-1.2.3.255", "1.2.3.*", "{env.UNSET}",
		"2001:db8:::1", "gggg::1",
	}
	for _, e := range bad {
		_, err := ParseAllowEntry(e)
		if err == nil {
			t.Errorf("ParseAllowEntry(%q) succeeded, want an error", e)
			continue
		}
		// The operator must see which value is wrong.
		if !strings.Contains(err.Error(), strings.TrimSpace(e)) {
			t.Errorf("ParseAllowEntry(%q) error %q does not name the entry", e, err)
		}
	}
	// ParseAllowlist stops at the first bad entry and names it.
	_, err := ParseAllowlist([]string{"203.0.113.10", "198.51.100.0/33", "bad"})
	if err == nil || !strings.Contains(err.Error(), "198.51.100.0/33") {
		t.Errorf("ParseAllowlist error = %v, want one naming 198.51.100.0/33", err)
	}
}

func TestAllowlistIPv4(t *testing.T) {
	a := mustAllowlist(t, "203.0.113.10", "198.51.100.0/24", "192.0.2.128/25")
	allowed := []string{
		"203.0.113.10",
		"198.51.100.0", "198.51.100.1", "198.51.100.255", // both ends of the /24
		"192.0.2.128", "192.0.2.255",
		"::ffff:203.0.113.10", "::ffff:198.51.100.20", // mapped senders
		"203.0.113.10:4711", "[::ffff:203.0.113.10]:4711", // with ports
	}
	denied := []string{
		"203.0.113.11", "203.0.113.9",
		"198.51.99.255", "198.51.101.0", // just outside the /24
		"192.0.2.127", "192.0.2.0", // just below the /25
		"::ffff:203.0.113.11",
		"2001:db8::1",
		"::cb00:710a", // IPv4-compatible (deprecated), not mapped: a different address
		"64:ff9b::cb00:710a",
		"", "@", "garbage", "203.0.113", "203.0.113.10.1", " 203.0.113.10",
	}
	for _, ip := range allowed {
		if d := a.Check(ip); d != nil {
			t.Errorf("Check(%q) = %v, want allowed", ip, d)
		}
	}
	for _, ip := range denied {
		d := a.Check(ip)
		if d == nil {
			t.Errorf("Check(%q) allowed, want denied", ip)
			continue
		}
		if d.Status != http.StatusForbidden || d.Reason != ReasonIP || len(d.Allow) != 0 {
			t.Errorf("Check(%q) = %+v, want 403 %q", ip, d, ReasonIP)
		}
	}
}

func TestAllowlistIPv6(t *testing.T) {
	a := mustAllowlist(t, "2001:db8::/32", "2001:db8:ffff::1", "fe80::1%eth0", "fd00::/8")
	allowed := []string{
		"2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", // both ends
		"2001:DB8::10",
		"[2001:db8::1]:443",
		"fe80::1", "fe80::1%eth0", "fe80::1%eth1", // zone: address part only
		"[fe80::1%eth0]:80",
		"fd12:3456::1",
	}
	denied := []string{
		"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::", // just outside
		"fe80::2", "fe80::2%eth0",
		"fc00::1", // outside fd00::/8
		"203.0.113.10", "::ffff:203.0.113.10",
		"::1", "::",
	}
	for _, ip := range allowed {
		if d := a.Check(ip); d != nil {
			t.Errorf("Check(%q) = %v, want allowed", ip, d)
		}
	}
	for _, ip := range denied {
		if d := a.Check(ip); d == nil {
			t.Errorf("Check(%q) allowed, want denied", ip)
		}
	}
}

func TestAllowlistMappedEntries(t *testing.T) {
	// A mapped entry matches the plain IPv4 sender, and the other way round.
	a := mustAllowlist(t, "::ffff:198.51.100.20", "::ffff:192.0.2.0/120")
	for _, ip := range []string{"198.51.100.20", "::ffff:198.51.100.20", "192.0.2.1", "::ffff:192.0.2.254"} {
		if d := a.Check(ip); d != nil {
			t.Errorf("Check(%q) = %v, want allowed", ip, d)
		}
	}
	for _, ip := range []string{"198.51.100.21", "192.0.3.0", "::ffff:192.0.3.0"} {
		if d := a.Check(ip); d == nil {
			t.Errorf("Check(%q) allowed, want denied", ip)
		}
	}
	// ::/0 is for IPv6 senders; it does not open the list to IPv4 senders.
	v6 := mustAllowlist(t, "::/0")
	if d := v6.Check("203.0.113.10"); d == nil {
		t.Error("::/0 let an IPv4 sender through")
	}
	if d := v6.Check("::ffff:203.0.113.10"); d == nil {
		t.Error("::/0 let a mapped IPv4 sender through")
	}
	if d := v6.Check("2001:db8::1"); d != nil {
		t.Errorf("::/0 refused an IPv6 sender: %v", d)
	}
	all4 := mustAllowlist(t, "0.0.0.0/0")
	if d := all4.Check("::ffff:10.1.2.3"); d != nil {
		t.Errorf("0.0.0.0/0 refused a mapped IPv4 sender: %v", d)
	}
	if d := all4.Check("2001:db8::1"); d == nil {
		t.Error("0.0.0.0/0 let an IPv6 sender through")
	}
}

func TestAllowlistContainsAddr(t *testing.T) {
	a := mustAllowlist(t, "203.0.113.10", "fe80::/64")
	cases := []struct {
		ip   netip.Addr
		want bool
	}{
		{netip.MustParseAddr("203.0.113.10"), true},
		{netip.MustParseAddr("::ffff:203.0.113.10"), true},
		{netip.MustParseAddr("fe80::1%eth0"), true},
		{netip.MustParseAddr("fe81::1"), false},
		{netip.Addr{}, false},
	}
	for _, c := range cases {
		if got := a.Contains(c.ip); got != c.want {
			t.Errorf("Contains(%v) = %v, want %v", c.ip, got, c.want)
		}
	}
}

func TestAllowlistEmpty(t *testing.T) {
	for _, a := range []*Allowlist{nil, {}, mustAllowlist(t)} {
		if !a.Empty() || a.Len() != 0 {
			t.Errorf("%#v: Empty() = %v, Len() = %d", a, a.Empty(), a.Len())
		}
		// Empty lets everyone through, even what does not parse.
		for _, ip := range []string{"203.0.113.10", "2001:db8::1", "", "@"} {
			if d := a.Check(ip); d != nil {
				t.Errorf("empty allowlist refused %q: %v", ip, d)
			}
		}
	}
	a := mustAllowlist(t, "203.0.113.10")
	if a.Empty() || a.Len() != 1 {
		t.Errorf("one entry: Empty() = %v, Len() = %d", a.Empty(), a.Len())
	}
	// The zero Addr never matches, even a catch-all.
	if mustAllowlist(t, "0.0.0.0/0", "::/0").Contains(netip.Addr{}) {
		t.Error("catch-all contains the zero Addr")
	}
}

func TestAllowlistStrings(t *testing.T) {
	a := mustAllowlist(t, "203.0.113.10", "::ffff:198.51.100.0/120", "fe80::1%eth0", "2001:db8::/32")
	want := []string{"203.0.113.10", "198.51.100.0/24", "fe80::1", "2001:db8::/32"}
	if got := a.Strings(); !slices.Equal(got, want) {
		t.Errorf("Strings() = %q, want %q", got, want)
	}
}

func TestParseClientIP(t *testing.T) {
	cases := map[string]string{
		"203.0.113.10":               "203.0.113.10",
		"203.0.113.10:4711":          "203.0.113.10",
		"::ffff:203.0.113.10":        "203.0.113.10",
		"[::ffff:203.0.113.10]:80":   "203.0.113.10",
		"::ffff:203.0.113.10%eth0":   "203.0.113.10",
		"fe80::1%eth0":               "fe80::1",
		"[fe80::1%25eth0]:80":        "fe80::1", // whatever the zone, the address part counts
		"[fe80::1%eth0]:80":          "fe80::1",
		"2001:db8::1":                "2001:db8::1",
		"@":                          "",
		"":                           "",
		"203.0.113.10, 198.51.100.1": "",
	}
	for in, want := range cases {
		ip, err := ParseClientIP(in)
		if want == "" {
			if err == nil {
				t.Errorf("ParseClientIP(%q) = %v, want an error", in, ip)
			}
			continue
		}
		if err != nil || ip.String() != want {
			t.Errorf("ParseClientIP(%q) = %v, %v; want %s", in, ip, err, want)
		}
	}
}
