package storage

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
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
		fmt.Println("ERR open:", err)
		os.Exit(2)
	}
	writeAcknowledged(s, 8, 200, 4, false)
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
	all := newAckLines() // every acknowledged step, over all rounds
	for round := range 8 {
		cmd, sc, stderr := startWriter(t, "TestJournalCrashChild", journalCrashDirEnv+"="+dir)
		// Every third round dies during Open (the replay of the last one's
		// journal); the others after a random amount of writing.
		duringOpen := round%3 == 2
		killAfter := 200 + rng.IntN(2000)
		if duringOpen {
			time.AfterFunc(time.Duration(rng.IntN(40))*time.Millisecond, func() { _ = cmd.Process.Kill() })
		}
		life := newAckLines()
		for sc.Scan() {
			if _, isErr := life.add(sc.Text()); isErr {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("round %d: child: %s\nits log:\n%s", round, sc.Text(), stderr.String())
			}
			if len(life.enq) == killAfter {
				_ = cmd.Process.Kill() // SIGKILL: no Close, no flush
			}
		}
		_ = cmd.Wait()

		s, err := Open(journalCrashOptions(dir))
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		all.merge(life)
		checkAcknowledged(t, s, fmt.Sprintf("round %d", round), all, 4)
		due, delivered := countersMatchRecords(t, s, "K", 2*time.Hour)
		t.Logf("round %d (killed %s): %d acknowledged enqueues in all, %d pending, %d delivered, %d journal segments",
			round, map[bool]string{true: "during Open", false: fmt.Sprintf("after %d enqueues", killAfter)}[duringOpen],
			len(all.enq), due, delivered, len(segmentFiles(t, dir)))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
