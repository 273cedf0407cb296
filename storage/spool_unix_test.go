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
