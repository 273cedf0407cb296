package testutil

import (
	"net"
	"strconv"
	"testing"
)

// FreePort returns a port on 127.0.0.1 that was free a moment ago: it
// listens on port 0, takes the port the kernel chose and closes the
// listener. Something else may take the port before the test does.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// DeadAddr returns a loopback address ("127.0.0.1:port") that refuses
// connections: a destination that is down.
func DeadAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}
