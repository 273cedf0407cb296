package storage

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const crashDirEnv = "STORAGE_CRASH_CHILD_DIR"

// TestCrashChild is the child of TestKill9KeepsAcknowledged: it writes to the
// store until it is killed, printing each id once its write was acknowledged.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("child process of TestKill9KeepsAcknowledged")
	}
	s, err := Open(Options{Dir: dir, EncryptionKey: []byte(strings.Repeat("k", 32))})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...) // unbuffered: the line is out before we go on
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				ds, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "K", Payload: fmt.Appendf(nil, "w=%d&i=%d", w, i)}})
				if err != nil {
					say("ERR %v", err)
					return
				}
				say("E %s w=%d&i=%d", ds[0].ID, w, i)
				if i%4 == 0 {
					if _, err := s.Complete(ds[0].ID, Attempt{Status: 200}, Outcome{State: StateDelivered}); err != nil {
						say("ERR %v", err)
						return
					}
					say("D %s", ds[0].ID)
				}
			}
		}()
	}
	wg.Wait()
	os.Exit(3) // only on error: the parent kills us first
}

// TestKill9KeepsAcknowledged kills a writing process with SIGKILL and checks
// that everything it had acknowledged is in the reopened store, and that the
// persisted counters agree with the records.
func TestKill9KeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a process")
	}
	dir := filepath.Join(t.TempDir(), "db")
	for round := range 2 { // the second round starts from the first one's crash
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		enq := map[string]string{}
		del := map[string]bool{}
		sc := bufio.NewScanner(out)
		killed := false
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "E":
				enq[f[1]] = f[2]
			case len(f) == 2 && f[0] == "D":
				del[f[1]] = true
			case len(f) > 0 && f[0] == "ERR":
				t.Fatalf("child: %s", sc.Text())
			}
			if !killed && len(enq) >= 400+200*round {
				_ = cmd.Process.Kill() // SIGKILL: no Close, no flush
				killed = true
			}
		}
		_ = cmd.Wait()
		if !killed {
			t.Fatalf("child ended before the kill, after %d enqueues", len(enq))
		}

		s, err := Open(Options{Dir: dir, EncryptionKey: []byte(strings.Repeat("k", 32))})
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		for id, payload := range enq {
			d, err := s.Get(id)
			if err != nil {
				t.Fatalf("acknowledged %s lost: %v", id, err)
			}
			if del[id] {
				if d.State != StateDelivered {
					t.Fatalf("acknowledged delivery of %s lost: %s", id, d.State)
				}
				continue
			}
			if d.State == StatePending {
				p, err := s.Payload(id)
				if err != nil || string(p) != payload {
					t.Fatalf("payload of %s = %q, %v; want %q", id, p, err, payload)
				}
			}
		}
		// Counters were persisted in the same transactions as the records.
		due, delivered := countersMatchRecords(t, s, "K", time.Hour)
		t.Logf("round %d: %d acknowledged enqueues, %d deliveries; store has %d pending, %d delivered",
			round, len(enq), len(del), due, delivered)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// countersMatchRecords checks that din's counters agree with its records:
// pending with what is due within ahead, delivered with the listed ones.
func countersMatchRecords(t *testing.T, s *Store, din string, ahead time.Duration) (pending, delivered int) {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	due, err := s.Due(din, time.Now().Add(ahead), 10_000_000)
	if err != nil {
		t.Fatal(err)
	}
	delivered, err = countList(s, Filter{State: StateDelivered})
	if err != nil {
		t.Fatal(err)
	}
	if st[din].Pending != len(due) || st[din].Delivered != delivered {
		t.Fatalf("counters %+v disagree with records: %d due, %d delivered", st[din], len(due), delivered)
	}
	return len(due), delivered
}

func countList(s *Store, f Filter) (int, error) {
	n := 0
	f.Limit = maxListLimit
	for {
		items, next, err := s.List(f)
		if err != nil {
			return 0, err
		}
		n += len(items)
		if next == "" {
			return n, nil
		}
		f.Cursor = next
	}
}

// A process killed while Badger creates a value-log or a memtable file (at
// every start) leaves an empty one, in the queue's database or the
// notification log's; the store still opens, with everything in it.
func TestEmptyLogFileFromACrashOpens(t *testing.T) {
	// Badger's names: 6 digits for value logs, 5 for memtables.
	for ext, name := range map[string]string{"vlog": "000099.vlog", "mem": "00099.mem",
		"notes_vlog": filepath.Join(notificationsDir, "000099.vlog"), "notes_mem": filepath.Join(notificationsDir, "00099.mem")} {
		t.Run(ext, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "db")
			s, err := Open(Options{Dir: dir, EncryptionKey: journalTestKey})
			if err != nil {
				t.Fatal(err)
			}
			d := enqueueOne(t, s, "1", "a=1")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			empty := filepath.Join(dir, name)
			if err := os.WriteFile(empty, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(Options{Dir: dir, EncryptionKey: journalTestKey})
			if err != nil {
				t.Fatalf("open with an empty .%s file: %v", ext, err)
			}
			defer s2.Close()
			if p, err := s2.Payload(d.ID); err != nil || string(p) != "a=1" {
				t.Fatalf("payload after the crash: %q, %v", p, err)
			}
		})
	}
}
