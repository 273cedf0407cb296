package storage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
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
	enq     map[string]string // id → payload
	outcome map[string]string // id → D (delivered) or R (retry)
	errs    []string
	opened  bool
	ended   string
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
	enq, outcome := map[string]string{}, map[string]string{}
	keep := func(life *fullDiskLife) {
		merge(enq, life.enq)
		merge(outcome, life.outcome)
	}

	// Life 1 writes until the store refuses, and goes on trying.
	life := runFullDiskWriter(t, dir, func(l *fullDiskLife) bool { return len(l.errs) == 400 })
	keep(&life)
	t.Logf("life 1: %s", life)
	if !life.opened || len(life.enq) == 0 || len(life.errs) == 0 {
		t.Fatalf("life 1 did not fill the disk: %s", life)
	}

	// Life 2 starts on the full disk: Open fails with an error or opens;
	// neither may lose or corrupt anything.
	life = runFullDiskWriter(t, dir, func(l *fullDiskLife) bool { return len(l.errs) == 50 })
	keep(&life)
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
	keep(&life)
	t.Logf("life 3, the disk filled by another process and freed: %s", life)
	if freedAt == 0 || len(life.enq) < freedAt+200 {
		t.Fatalf("life 3 did not take enqueues again once the disk was freed: %s", life)
	}

	s, err := Open(fullDiskOptions(dir))
	if err != nil {
		t.Fatalf("open once space is freed: %v", err)
	}
	defer s.Close()
	for id, payload := range enq {
		d, err := s.Get(id)
		if err != nil {
			t.Fatalf("acknowledged %s lost: %v", id, err)
		}
		if outcome[id] == "D" {
			if d.State != StateDelivered {
				t.Fatalf("acknowledged delivery of %s lost: %s", id, d.State)
			}
			continue
		}
		if d.State == StateDelivered {
			continue // recorded just before an error or the kill, unprinted
		}
		p, err := s.Payload(id)
		if err != nil || string(p) != payload {
			t.Fatalf("payload of %s = %.40q, %v; want %.40q", id, p, err, payload)
		}
	}
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

func merge(dst, src map[string]string) {
	for k, v := range src {
		dst[k] = v
	}
}

func (l fullDiskLife) String() string {
	return fmt.Sprintf("opened %v, %d acknowledged, %d errors (first: %s), ended: %s", l.opened, len(l.enq), len(l.errs), first(l.errs), l.ended)
}

// runFullDiskWriter runs TestFullDiskWriter on dir, calling step after each
// line it reports, until step says to kill it (or it ends by itself).
func runFullDiskWriter(t *testing.T, dir string, step func(*fullDiskLife) (kill bool)) fullDiskLife {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFullDiskWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), fullDiskWriterEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	life := fullDiskLife{enq: map[string]string{}, outcome: map[string]string{}}
	killed := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		switch {
		case line == "OPEN":
			life.opened = true
		case len(f) == 3 && f[0] == "E":
			life.enq[f[1]] = f[2]
		case len(f) == 2 && (f[0] == "D" || f[0] == "R"):
			life.outcome[f[1]] = f[0]
		case strings.HasPrefix(line, "ERR "):
			if !strings.Contains(line, ErrDiskFull.Error()) && !strings.Contains(line, "no space left on device") {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("an error that is not the full disk's: %s", line)
			}
			life.errs = append(life.errs, line[4:])
		}
		if !killed && step(&life) {
			killed = true
			_ = cmd.Process.Kill()
		}
	}
	err = cmd.Wait()
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

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestFullDiskWriter is TestFullDiskInside's writing process: it enqueues
// and completes, reporting errors and going on, until it is killed.
func TestFullDiskWriter(t *testing.T) {
	dir := os.Getenv(fullDiskWriterEnv)
	if dir == "" {
		t.Skip("run by TestFullDiskInside")
	}
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
		mu.Unlock()
	}
	opts := fullDiskOptions(dir)
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var s *Store
	for {
		var err error
		if s, err = Open(opts); err == nil {
			break
		}
		say("ERR open: %v", err)
		time.Sleep(10 * time.Millisecond)
	}
	say("OPEN")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				payload := fmt.Sprintf("w=%d&i=%d&%s", w, i, strings.Repeat("p", 1000+i%3000))
				ds, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "K", Payload: []byte(payload)}})
				if err != nil {
					say("ERR enqueue: %v", err)
					time.Sleep(2 * time.Millisecond)
					continue
				}
				id := ds[0].ID
				say("E %s %s", id, payload)
				var out Outcome
				switch i % 3 {
				case 0:
					out = Outcome{State: StateDelivered}
				case 1:
					out = Outcome{State: StatePending, NextAttempt: time.Now().Add(time.Hour)}
				default:
					continue
				}
				if _, err := s.Complete(id, Attempt{Status: 200 + 303*(i%2)}, out); err != nil {
					say("ERR complete: %v", err)
					continue
				}
				say("%s %s", map[bool]string{true: "D", false: "R"}[i%3 == 0], id)
			}
		})
	}
	wg.Wait()
}

func head(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
