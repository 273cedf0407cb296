package handlers

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Allowlist is the set of senders (single addresses and networks) allowed to
// post. Entries and client addresses are normalised the same way, so that an
// IPv4 sender matches its IPv4 entry however it is written:
//
//   - IPv4-mapped IPv6 addresses (::ffff:198.51.100.20) are unmapped, both in
//     entries and in client addresses; a mapped network written with at least
//     96 bits becomes the IPv4 network it covers.
//   - Zones (fe80::1%eth0) are dropped: an entry is matched on its address
//     part, because the client IP Caddy determines carries no zone.
//
// The zero value and an Allowlist built from no entries are empty; see Empty.
type Allowlist struct {
	prefixes []netip.Prefix
}

// ParseAllowlist parses allowlist entries (IPv4 or IPv6 addresses or CIDR
// networks). The first bad entry is reported with its value.
func ParseAllowlist(entries []string) (*Allowlist, error) {
	a := &Allowlist{prefixes: make([]netip.Prefix, 0, len(entries))}
	for _, e := range entries {
		p, err := ParseAllowEntry(e)
		if err != nil {
			return nil, err
		}
		a.prefixes = append(a.prefixes, p)
	}
	return a, nil
}

// ParseAllowEntry parses one allowlist entry: an address ("203.0.113.10",
// "2001:db8::1", "::ffff:203.0.113.10", "fe80::1%eth0") or a network
// ("198.51.100.0/24", "2001:db8::/32"). A network with host bits set
// ("198.51.100.7/24") stands for the whole network. Host names, ports and
// brackets are refused: the allowlist never resolves names.
func ParseAllowEntry(entry string) (netip.Prefix, error) {
	s := entry
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("allow entry %q: empty", entry)
	}
	// A zone may come before the prefix length (fe80::1%eth0/64) or after it
	// (fe80::/64%eth0, as Caddy's ip matchers write it); only the address
	// part counts.
	if i := strings.IndexByte(s, '%'); i >= 0 {
		rest := s[i+1:]
		zone, bits, hasBits := strings.Cut(rest, "/")
		if zone == "" {
			return netip.Prefix{}, fmt.Errorf("allow entry %q: empty zone", entry)
		}
		s = s[:i]
		if hasBits {
			if strings.Contains(s, "/") {
				return netip.Prefix{}, fmt.Errorf("allow entry %q: two prefix lengths", entry)
			}
			s += "/" + bits
		}
		if !strings.Contains(s, ":") {
			return netip.Prefix{}, fmt.Errorf("allow entry %q: zones are only valid on IPv6 addresses", entry)
		}
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("allow entry %q: not a CIDR network: %w", entry, err)
		}
		return unmapPrefix(p.Masked()), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("allow entry %q: not an IP address or CIDR network: %w", entry, err)
	}
	addr = addr.Unmap()
	return netip.PrefixFrom(addr, addr.BitLen()), nil
}

// unmapPrefix turns a network inside ::ffff:0:0/96 into the IPv4 network it
// covers. Wider IPv6 networks (::/0) stay IPv6: they are meant for IPv6
// senders, and an IPv4 sender is compared in its IPv4 form.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if !p.Addr().Is4In6() || p.Bits() < 96 {
		return p
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
}

// Empty reports whether the allowlist has no entries; the filter then lets
// every sender through.
func (a *Allowlist) Empty() bool { return a == nil || len(a.prefixes) == 0 }

// Len is the number of entries.
func (a *Allowlist) Len() int {
	if a == nil {
		return 0
	}
	return len(a.prefixes)
}

// Contains reports whether ip is in one of the entries. An invalid address
// is never contained.
func (a *Allowlist) Contains(ip netip.Addr) bool {
	if a == nil || !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ParseClientIP parses a client address as Caddy or net/http give it:
// "203.0.113.10", "2001:db8::1", "fe80::1%eth0", or with a port
// ("203.0.113.10:4711", "[2001:db8::1]:4711"). The result is unmapped and
// has no zone.
func ParseClientIP(s string) (netip.Addr, error) {
	host := s
	if h, _, err := net.SplitHostPort(s); err == nil {
		host = h
	}
	// Cut the zone by hand: netip refuses zones on IPv4-mapped addresses.
	host, _, _ = strings.Cut(host, "%")
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("client address %q: %w", s, err)
	}
	return ip.Unmap(), nil
}

// Check decides on a sender given as a string (see ParseClientIP). It
// returns nil when the sender may post: the allowlist is empty or contains
// the address. An address that does not parse (empty, "@" for a Unix socket)
// is refused unless the allowlist is empty.
func (a *Allowlist) Check(clientIP string) *Denial {
	if a.Empty() {
		return nil
	}
	ip, err := ParseClientIP(clientIP)
	if err != nil || !a.Contains(ip) {
		return Deny(http.StatusForbidden, ReasonIP)
	}
	return nil
}

// Strings returns the normalised entries, for logs.
func (a *Allowlist) Strings() []string {
	if a == nil {
		return nil
	}
	out := make([]string, len(a.prefixes))
	for i, p := range a.prefixes {
		if p.IsSingleIP() {
			out[i] = p.Addr().String()
		} else {
			out[i] = p.String()
		}
	}
	return out
}
