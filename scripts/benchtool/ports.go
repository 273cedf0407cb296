package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// The kernel hands out source ports of outgoing connections from
// ip_local_port_range. A server port picked from that range (as Listen on
// port 0 does) can be taken by one of wrk's or a proxy's connections while
// its server is down between phases, and a connection in TIME_WAIT on it
// then makes the next bind fail ("address already in use"). Ports below the
// range are never handed out that way.
const (
	portRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	lowestPort    = 10000
)

// cmdPorts prints n loopback TCP ports that were free a moment ago, below
// the ephemeral range where it leaves room.
func cmdPorts(args []string) error {
	fs := flag.NewFlagSet("ports", flag.ExitOnError)
	n := fs.Int("n", 1, "how many")
	_ = fs.Parse(args)
	ls, err := listenPorts(*n, ephemeralLow(portRangeFile))
	for _, l := range ls {
		defer l.Close()
	}
	if err != nil {
		return err
	}
	ports := make([]string, len(ls))
	for i, l := range ls {
		ports[i] = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	}
	fmt.Println(strings.Join(ports, " "))
	return nil
}

// ephemeralLow is the first port of the ephemeral range, or 0 when it
// cannot be read.
func ephemeralLow(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	low, _ := strconv.Atoi(f[0])
	return low
}

// listenPorts holds n distinct loopback ports in [lowestPort, below),
// starting at a random one; without enough room there it lets the kernel
// choose. The caller closes the listeners.
func listenPorts(n, below int) ([]net.Listener, error) {
	var ls []net.Listener
	if span := below - lowestPort; span >= 4*n {
		start := rand.IntN(span)
		for i := 0; i < span && len(ls) < n; i++ {
			p := lowestPort + (start+i)%span
			if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
				ls = append(ls, l)
			}
		}
	}
	for len(ls) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return ls, fmt.Errorf("ports: %w", err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}
