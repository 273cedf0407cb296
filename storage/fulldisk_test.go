package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The full-disk test runs in a mount namespace of its own (unshare -rm, no
// root needed where user namespaces are allowed) on a small tmpfs, so that
// the disk that fills is a real one and nothing else on the machine is.
const (
	fullDiskDirEnv    = "STORAGE_FULLDISK_DIR"
	fullDiskWriterEnv = "STORAGE_FULLDISK_WRITER"
	fullDiskSize      = 48 << 20
	fullDiskReserve   = 8 << 20 // deleted to free the disk again
	fullDiskFloor     = 16 << 20
)

func fullDiskOptions(dir string) Options {
	return Options{
		Dir: dir, EncryptionKey: journalTestKey,
		JournalSegmentSize: 256 << 10, FreshAge: 50 * time.Millisecond,
		AbsorbDelay: time.Millisecond, releaseEvery: 50 * time.Millisecond,
		ValueLogFileSize: 4 << 20, MinFreeSpace: fullDiskFloor,
	}
}

// TestFullDisk fills the disk under a writing store: enqueues fail with an
// error while it is full (none is acknowledged and then lost), the process
// neither crashes nor corrupts the store, and once space is freed the store
// opens and takes enqueues again with every acknowledged one there.
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	if runtime.GOOS != "linux" {
		t.Skip("tmpfs in a mount namespace: Linux only")
	}
	dir := t.TempDir()
	script := `mount -t tmpfs -o size="$3" tmpfs "$2" && exec "$1" -test.run='^TestFullDiskInside$' -test.count=1 -test.v`
	cmd := exec.Command("unshare", "-rm", "sh", "-c", script, "sh", os.Args[0], dir, fmt.Sprint(fullDiskSize))
	cmd.Env = append(os.Environ(), fullDiskDirEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("=== RUN")) {
		// unshare itself failed: no user namespaces here.
		if os.Getenv("CI") == "true" {
			t.Fatalf("a tmpfs in a user and mount namespace is needed (unshare -rm): %v\n%s", err, out)
		}
		t.Skipf("no user and mount namespace here (unshare -rm: %v): %s", err, out)
	}
	t.Logf("inside the namespace:\n%s", out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestFullDiskInside")) {
		t.Fatalf("TestFullDiskInside: %v", err)
	}
}

// fullDiskLife is what one writer process acknowledged, and how it ended.
type fullDiskLife struct {
	*ackLines
	ended string
}

// TestFullDiskInside is run by TestFullDisk on the tmpfs it mounted.
func TestFullDiskInside(t *testing.T) {
	mnt := os.Getenv(fullDiskDirEnv)
	if mnt == "" || os.Getenv(fullDiskWriterEnv) != "" {
		t.Skip("run by TestFullDisk")
	}
	reserve := filepath.Join(mnt, "reserve")
	if err := os.WriteFile(reserve, make([]byte, fullDiskReserve), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "db")
	all := newAckLines() // over every life

	// Life 1 writes until the store refuses, and goes on trying.
	life := runFullDiskWriter(t, dir, func(l *fullDiskLife) bool { return len(l.errs) == 400 })
	all.merge(life.ackLines)
	t.Logf("life 1: %s", life)
	if !life.opened || len(life.enq) == 0 || len(life.errs) == 0 {
		t.Fatalf("life 1 did not fill the disk: %s", life)
	}

	// Life 2 starts on the full disk: Open fails with an error or opens;
	// neither may lose or corrupt anything.
	life = runFullDiskWriter(t, dir, func(l *fullDiskLife) bool { return len(l.errs) == 50 })
	all.merge(life.ackLines)
	t.Logf("life 2, on the full disk: %s", life)

	// Life 3 has room; then another process fills the disk below the floor
	// of Badger's own writes (completions and the spill fail too), then
	// frees it: the same process takes enqueues again.
	if err := os.Remove(reserve); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	var freedAt int
	life = runFullDiskWriter(t, dir, func(l *fullDiskLife) bool {
		switch {
		case len(l.enq) == 200 && len(l.errs) == 0:
			fillDisk(t, filler, 3*fullDiskFloor/8) // below Badger's floor, room for a flush
		case len(l.errs) == 100 && freedAt == 0:
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			freedAt = len(l.enq)
		}
		return freedAt > 0 && len(l.enq) == freedAt+200
	})
	all.merge(life.ackLines)
	t.Logf("life 3, the disk filled by another process and freed: %s", life)
	if freedAt == 0 || len(life.enq) < freedAt+200 {
		t.Fatalf("life 3 did not take enqueues again once the disk was freed: %s", life)
	}

	s, err := Open(fullDiskOptions(dir))
	if err != nil {
		t.Fatalf("open once space is freed: %v", err)
	}
	defer s.Close()
	checkAcknowledged(t, s, "once the disk was freed", all, 3)
	countersMatchRecords(t, s, "K", 2*time.Hour)
	enqueueOne(t, s, "K", "after=the-disk-was-freed")
}

// fillDisk writes a file of zeros at path until at most left bytes are
// free (or none: the writer under test races for the same space).
func fillDisk(t *testing.T, path string, left int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		free, err := freeSpace(filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		if free <= left {
			return
		}
		if _, err := f.Write(chunk[:min(int64(len(chunk)), free-left)]); errors.Is(err, syscall.ENOSPC) {
			return
		} else if err != nil {
			t.Fatalf("fill the disk: %v", err)
		}
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return s[0]
}

func (l fullDiskLife) String() string {
	return fmt.Sprintf("opened %v, %d acknowledged, %d errors (first: %s), ended: %s", l.opened, len(l.enq), len(l.errs), first(l.errs), l.ended)
}

// runFullDiskWriter runs TestFullDiskWriter on dir, calling step after each
// line it reports, until step says to kill it (or it ends by itself).
func runFullDiskWriter(t *testing.T, dir string, step func(*fullDiskLife) (kill bool)) fullDiskLife {
	t.Helper()
	cmd, sc, stderr := startWriter(t, "TestFullDiskWriter", fullDiskWriterEnv+"="+dir)
	life := fullDiskLife{ackLines: newAckLines()}
	killed := false
	for sc.Scan() {
		line := sc.Text()
		if e, isErr := life.add(line); isErr && !strings.Contains(e, ErrDiskFull.Error()) && !strings.Contains(e, "no space left on device") {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("an error that is not the full disk's: %s", line)
		}
		if !killed && step(&life) {
			killed = true
			_ = cmd.Process.Kill()
		}
	}
	err := cmd.Wait()
	switch {
	case err == nil:
		life.ended = "exited"
	case killed:
		life.ended = "killed"
	default:
		life.ended = fmt.Sprintf("%v; its stderr:\n%s", err, head(stderr.String(), 3000))
		t.Fatalf("the writer died on its own: %s", life.ended)
	}
	return life
}

// TestFullDiskWriter is TestFullDiskInside's writing process: it enqueues
// and completes, reporting errors and going on, until it is killed.
func TestFullDiskWriter(t *testing.T) {
	dir := os.Getenv(fullDiskWriterEnv)
	if dir == "" {
		t.Skip("run by TestFullDiskInside")
	}
	opts := fullDiskOptions(dir)
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var s *Store
	for {
		var err error
		if s, err = Open(opts); err == nil {
			break
		}
		fmt.Printf("ERR open: %v\n", err)
		time.Sleep(10 * time.Millisecond)
	}
	writeAcknowledged(s, 4, 1000, 3, true)
}

func head(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
