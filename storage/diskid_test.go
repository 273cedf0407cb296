package storage

import (
	"os"
	"path/filepath"
	"testing"
)

// The id is made once and kept; the store opens with it beside its files.
func TestDiskID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	first, err := DiskID(dir)
	if err != nil || len(first) != 32 {
		t.Fatalf("DiskID = %q, %v", first, err)
	}
	s := openQueue(t, Options{Dir: dir})
	enqueueOne(t, s, "1001", "a=1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := DiskID(dir)
	if err != nil || again != first {
		t.Fatalf("second DiskID = %q, %v; want %q", again, err, first)
	}
	if other, _ := DiskID(filepath.Join(t.TempDir(), "db")); other == first {
		t.Fatal("two folders share an id")
	}
	if err := os.WriteFile(filepath.Join(dir, diskIDFile), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := DiskID(dir); err == nil {
		t.Fatal("a malformed id was accepted")
	}
}
