//go:build unix

package storage

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Modes are exact whatever the umask: 0600 files, 0700 new folders. Not
// parallel: the umask is process-wide.
func TestSpoolModesIgnoreUmask(t *testing.T) {
	_, pub := goCryptoKey(t, goCryptoKeyTypes[0].cfg)
	r, err := ParseRecipient(pub, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, mask := range []int{0o000, 0o022, 0o277} {
		dir := filepath.Join(t.TempDir(), "new")
		old := syscall.Umask(mask)
		s, err := NewSpool(dir, r)
		if err != nil {
			syscall.Umask(old)
			t.Fatal(err)
		}
		path, err := s.Spool("1001", "m", []byte("a=b"))
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(dir); fi.Mode() != fs.ModeDir|0o700 {
			t.Errorf("umask %03o: folder mode %v", mask, fi.Mode())
		}
		if fi, _ := os.Stat(path); fi.Mode() != 0o600 {
			t.Errorf("umask %03o: file mode %v", mask, fi.Mode())
		}
	}
}

// The pickup layout the README recommends: a setgid folder owned by the
// pickup account's group, spool_mode 0640. Each file then belongs to that
// group and its members can read it (and, the folder being group-writable,
// delete it after transfer); nobody else can.
func TestSpoolGroupPickupLayout(t *testing.T) {
	_, pub := goCryptoKey(t, goCryptoKeyTypes[0].cfg)
	r, err := ParseRecipient(pub, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// As root (CI), a group that is not ours, as for a real pickup account;
	// otherwise our own group, whose inheritance shows less but still runs.
	gid := os.Getgid()
	if os.Geteuid() == 0 {
		gid = 65534
	}
	if err := os.Chown(dir, -1, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, fs.ModeSetgid|0o770); err != nil {
		t.Fatal(err)
	}
	s, err := NewSpool(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	mode, err := ParseSpoolMode("0640")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetMode(mode); err != nil {
		t.Fatal(err)
	}
	path, err := s.Spool("1001", "g", []byte("a=b"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o640 {
		t.Errorf("file mode %v, want 0640", fi.Mode())
	}
	if got := fi.Sys().(*syscall.Stat_t).Gid; int(got) != gid {
		t.Errorf("file group %d, want the folder's %d", got, gid)
	}
	if di, _ := os.Stat(dir); di.Mode() != fs.ModeDir|fs.ModeSetgid|0o770 {
		t.Errorf("an existing folder's mode was changed to %v", di.Mode())
	}
	for _, bad := range []string{"0644", "0666", "640x", ""} {
		if _, err := ParseSpoolMode(bad); err == nil {
			t.Errorf("spool_mode %q accepted", bad)
		}
	}
	if err := s.SetMode(0o644); err == nil {
		t.Error("SetMode(0644) accepted")
	}
}
