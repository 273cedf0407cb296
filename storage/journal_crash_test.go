package storage

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const journalCrashDirEnv = "STORAGE_JOURNAL_CRASH_DIR"

// journalCrashOptions make every part of the journal's life frequent: small
// segments (rotation), a short FreshAge (the spill into Badger) and a short
// release period (segments deleted from the head).
func journalCrashOptions(dir string) Options {
	return Options{
		Dir: dir, EncryptionKey: journalTestKey,
		JournalSegmentSize: 32 << 10, FreshAge: 30 * time.Millisecond,
		AbsorbDelay: time.Millisecond, releaseEvery: 20 * time.Millisecond,
	}
}

// TestJournalCrashChild is the child of TestJournalKill9AtRandomPoints: it
// enqueues and completes until it is killed, printing each acknowledged step.
func TestJournalCrashChild(t *testing.T) {
	dir := os.Getenv(journalCrashDirEnv)
	if dir == "" {
		t.Skip("child process of TestJournalKill9AtRandomPoints")
	}
	opts := journalCrashOptions(dir)
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := Open(opts)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	fmt.Println("OPEN")
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				payload := fmt.Sprintf("w=%d&i=%d&%s", w, i, strings.Repeat("p", 200+i%700))
				ds, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "K", Payload: []byte(payload)}})
				if err != nil {
					say("ERR %v", err)
					return
				}
				id := ds[0].ID
				say("E %s %s", id, payload)
				var out Outcome
				switch i % 4 {
				case 0:
					out = Outcome{State: StateDelivered}
				case 1:
					out = Outcome{State: StatePending, NextAttempt: time.Now().Add(time.Hour)}
				default:
					continue // left to the spill, or to the next life's replay
				}
				if _, err := s.Complete(id, Attempt{Status: 200 + 303*(i%2)}, out); err != nil {
					say("ERR %v", err)
					return
				}
				say("%s %s", map[bool]string{true: "D", false: "R"}[i%4 == 0], id)
			}
		})
	}
	wg.Wait()
	os.Exit(3) // only on error: the parent kills us first
}

// TestJournalKill9AtRandomPoints kills a writing process with SIGKILL at
// random moments of the journal's life (appends, segment rotations, the
// spill into Badger, completions, releases of the head, and, in some rounds,
// the replay at Open itself), then checks in the reopened store that every
// acknowledged enqueue is there with its payload, every acknowledged outcome
// is kept, and the counters agree with the records.
func TestJournalKill9AtRandomPoints(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)
	dir := filepath.Join(t.TempDir(), "db")
	enq := map[string]string{} // every acknowledged enqueue, over all rounds
	outcome := map[string]string{}
	for round := range 8 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestJournalCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), journalCrashDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Every third round dies during Open (the replay of the last one's
		// journal); the others after a random amount of writing.
		duringOpen := round%3 == 2
		killAfter := 200 + rng.IntN(2000)
		if duringOpen {
			time.AfterFunc(time.Duration(rng.IntN(40))*time.Millisecond, func() { _ = cmd.Process.Kill() })
		}
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 4096), 1<<20)
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "E":
				enq[f[1]] = f[2]
				n++
			case len(f) == 2 && (f[0] == "D" || f[0] == "R"):
				outcome[f[1]] = f[0]
			case len(f) > 0 && f[0] == "ERR":
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("round %d: child: %s\nits log:\n%s", round, sc.Text(), stderr.String())
			}
			if n == killAfter {
				_ = cmd.Process.Kill() // SIGKILL: no Close, no flush
			}
		}
		_ = cmd.Wait()

		s, err := Open(journalCrashOptions(dir))
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		for id, payload := range enq {
			d, err := s.Get(id)
			if err != nil {
				t.Fatalf("round %d: acknowledged %s lost: %v", round, id, err)
			}
			switch outcome[id] {
			case "D":
				if d.State != StateDelivered {
					t.Fatalf("round %d: acknowledged delivery of %s lost: %s", round, id, d.State)
				}
				continue
			case "R":
				if d.State != StatePending || len(d.Attempts) != 1 || d.NextAttempt.Before(time.Now()) {
					t.Fatalf("round %d: acknowledged retry of %s lost: %+v", round, id, d)
				}
			default:
				// Its outcome may have been recorded just before the kill,
				// unprinted: only one the child would record.
				var w, i int
				fmt.Sscanf(payload, "w=%d&i=%d", &w, &i)
				recordable := map[int]State{0: StateDelivered, 1: StatePending}[i%4]
				if d.State != StatePending && d.State != recordable {
					t.Fatalf("round %d: %s (i=%d) is %s", round, id, i, d.State)
				}
				if d.State == StateDelivered {
					continue
				}
			}
			p, err := s.Payload(id)
			if err != nil || string(p) != payload {
				t.Fatalf("round %d: payload of %s = %.40q, %v; want %.40q", round, id, p, err, payload)
			}
		}
		due, delivered := countersMatchRecords(t, s, "K", 2*time.Hour)
		t.Logf("round %d (killed %s): %d acknowledged enqueues in all, %d pending, %d delivered, %d journal segments",
			round, map[bool]string{true: "during Open", false: fmt.Sprintf("after %d enqueues", killAfter)}[duringOpen],
			len(enq), due, delivered, len(segmentFiles(t, dir)))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
