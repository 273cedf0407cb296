package testutil

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreePort returns a port on 127.0.0.1 that was free a moment ago, from
// below the kernel's ephemeral range: a port the kernel hands out (listen on
// port 0) is handed out again as the source port of the next outgoing
// connection once released, and a NATS server whose port a route dial took
// that way never became ready (2 of 30 stress runs). Ports below the range
// are only ever taken by a listener; one is picked at random, and checked.
func FreePort(t testing.TB) int {
	t.Helper()
	low := ephemeralLow()
	for range 200 {
		p := 20000 + rand.IntN(low-20000)
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
			l.Close()
			return p
		}
	}
	// The range below is crowded: the kernel's choice, as a last resort.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux;
// the IANA range's start elsewhere), at least 21000.
func ephemeralLow() int {
	low := 49152
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	return max(low, 21000)
}

// DeadAddr returns a loopback address ("127.0.0.1:port") that refuses
// connections: a destination that is down.
func DeadAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
