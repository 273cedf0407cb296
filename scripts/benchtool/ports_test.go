package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestPortsBelowTheEphemeralRange(t *testing.T) {
	f := filepath.Join(t.TempDir(), "range")
	if err := os.WriteFile(f, []byte("32768\t60999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	low := ephemeralLow(f)
	if low != 32768 {
		t.Fatalf("ephemeralLow = %d, want 32768", low)
	}
	ls, err := listenPorts(13, low)
	for _, l := range ls {
		defer l.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, l := range ls {
		p := l.Addr().(*net.TCPAddr).Port
		if p < lowestPort || p >= low {
			t.Errorf("port %d outside [%d, %d)", p, lowestPort, low)
		}
		if seen[p] {
			t.Errorf("port %d twice", p)
		}
		seen[p] = true
	}
	if len(seen) != 13 {
		t.Errorf("%d ports, want 13", len(seen))
	}
}

func TestPortsWithoutRoomBelowLetTheKernelChoose(t *testing.T) {
	if got := ephemeralLow(filepath.Join(t.TempDir(), "missing")); got != 0 {
		t.Fatalf("ephemeralLow of a missing file = %d, want 0", got)
	}
	ls, err := listenPorts(3, 1024)
	for _, l := range ls {
		defer l.Close()
	}
	if err != nil || len(ls) != 3 {
		t.Fatalf("got %d listeners, err %v; want 3", len(ls), err)
	}
}
