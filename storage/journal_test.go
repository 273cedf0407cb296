package storage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var journalTestKey = bytes.Repeat([]byte{9}, 32)

// segmentFiles lists the journal's segment files of the store in dir.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(journalPath(dir), "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// A delivery whose outcome Badger does not hold when the store is next
// opened is pending again, with its payload and its id; one whose outcome
// was recorded is not replayed. Opening twice replays the same.
func TestJournalReplaysWhatBadgerLacks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	clk := newTestClock()
	opts := Options{Dir: dir, EncryptionKey: journalTestKey, Clock: clk.Now, crashClose: true}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	var untouched, delivered, retried, failed []Delivery
	for n := range 30 {
		d := enqueueOne(t, s, fmt.Sprint(1000+n%2), fmt.Sprintf("n=%d&ccnum=4111111111111111", n))
		switch {
		case n < 10:
			mustComplete(t, s, d.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
			delivered = append(delivered, d)
		case n < 15:
			mustComplete(t, s, d.ID, Attempt{Status: 503}, Outcome{State: StatePending, NextAttempt: clk.Now().Add(time.Hour)})
			retried = append(retried, d)
		case n < 18:
			mustComplete(t, s, d.ID, Attempt{Status: 500}, Outcome{State: StateFailed, Error: "gave up"})
			failed = append(failed, d)
		default:
			untouched = append(untouched, d)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	opts.crashClose = false
	for round := range 2 {
		s := openQueue(t, opts)
		// The first open replays the untouched ones; a clean Close moves
		// everything into Badger, so the second has nothing to replay.
		if want := map[int]int{0: len(untouched), 1: 0}[round]; s.replayed != want {
			t.Fatalf("round %d: %d deliveries replayed, want %d", round, s.replayed, want)
		}
		st, err := s.Stats()
		if err != nil {
			t.Fatal(err)
		}
		sum := st["1000"]
		sum.Pending += st["1001"].Pending
		sum.Delivered += st["1001"].Delivered
		sum.Failed += st["1001"].Failed
		if sum.Pending != len(untouched)+len(retried) || sum.Delivered != len(delivered) || sum.Failed != len(failed) {
			t.Fatalf("round %d: stats = %+v, want %d pending, %d delivered, %d failed", round, sum,
				len(untouched)+len(retried), len(delivered), len(failed))
		}
		for _, d := range untouched {
			got, err := s.Get(d.ID)
			if err != nil || got.State != StatePending || len(got.Attempts) != 0 {
				t.Fatalf("round %d: untouched %s = %+v, %v", round, d.ID, got, err)
			}
			if p, err := s.Payload(d.ID); err != nil || !strings.HasPrefix(string(p), "n=") {
				t.Fatalf("round %d: payload of %s = %q, %v", round, d.ID, p, err)
			}
		}
		for _, d := range delivered {
			if got, err := s.Get(d.ID); err != nil || got.State != StateDelivered || got.HasPayload {
				t.Fatalf("round %d: delivered %s = %+v, %v", round, d.ID, got, err)
			}
		}
		for _, d := range retried {
			if got, err := s.Get(d.ID); err != nil || got.State != StatePending || len(got.Attempts) != 1 {
				t.Fatalf("round %d: retried %s = %+v, %v", round, d.ID, got, err)
			}
		}
		// Due now: the untouched ones of each DIN, in creation order; the
		// retries are an hour away.
		var due []string
		for _, din := range []string{"1000", "1001"} {
			page, err := s.Due(din, clk.Now(), 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page {
				due = append(due, d.ID)
			}
		}
		var want []string
		for _, d := range untouched {
			want = append(want, d.ID)
		}
		sort.Strings(due)
		if !slices.Equal(due, want) {
			t.Fatalf("round %d: due = %v, want %v", round, due, want)
		}
		if n, err := countList(s, Filter{}); err != nil || n != 30 {
			t.Fatalf("round %d: List holds %d deliveries (%v), want 30, each once", round, n, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// The journal gives back its segments once Badger holds every delivery
// they hold, and never past the oldest delivery that is only in the journal.
func TestJournalReleasesItsHead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	s := openQueue(t, Options{Dir: dir, JournalSegmentSize: 64 << 10, AbsorbDelay: time.Millisecond, releaseEvery: time.Hour})
	payload := strings.Repeat("x", 1000)
	held := enqueueOne(t, s, "1", payload) // stays pending: holds the head
	for range 300 {
		d := enqueueOne(t, s, "1", payload)
		mustComplete(t, s, d.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
	}
	before := len(segmentFiles(t, dir))
	if before < 4 {
		t.Fatalf("only %d segments for 300 KiB of 64 KiB segments", before)
	}
	if err := s.releaseJournal(); err != nil {
		t.Fatal(err)
	}
	if got := len(segmentFiles(t, dir)); got != before {
		t.Fatalf("segments %d → %d while the first delivery is only in the journal", before, got)
	}
	mustComplete(t, s, held.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
	if err := s.releaseJournal(); err != nil {
		t.Fatal(err)
	}
	if got := len(segmentFiles(t, dir)); got > 2 {
		t.Fatalf("segments %d → %d after every delivery reached Badger", before, got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openQueue(t, Options{Dir: dir})
	if st, _ := s2.Stats(); st["1"].Pending != 0 || st["1"].Delivered != 301 {
		t.Fatalf("after reopen: %+v", st["1"])
	}
}

// A torn tail (an append cut by a crash before its fsync returned: never
// acknowledged) is cut when the journal is opened, never a refusal to start,
// and what was acknowledged before it is all there.
func TestJournalTornTail(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	opts := Options{Dir: dir, EncryptionKey: journalTestKey, crashClose: true}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	var acked []Delivery
	for n := range 20 {
		acked = append(acked, enqueueOne(t, s, "1", fmt.Sprintf("n=%d", n)))
	}
	end1 := dataEnd(t, dir) // each append is on disk once acknowledged
	torn := enqueueOne(t, s, "1", "n=torn")
	end2 := dataEnd(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if end2 <= end1 {
		t.Fatalf("the last append wrote nothing after %d", end1)
	}

	for _, tc := range []struct {
		name string
		tear func(f *os.File)
	}{
		{"half of the last append", func(f *os.File) {
			mid := end1 + (end2-end1)/2
			if _, err := f.WriteAt(make([]byte, end2-mid), mid); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage after the last append", func(f *os.File) {
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 300), end2+100); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			copyDir := filepath.Join(t.TempDir(), "db")
			if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			segs := segmentFiles(t, copyDir)
			f, err := os.OpenFile(segs[len(segs)-1], os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			tc.tear(f)
			f.Close()
			o := opts
			o.Dir = copyDir
			s := openQueue(t, o)
			for _, d := range acked {
				if got, err := s.Get(d.ID); err != nil || got.State != StatePending {
					t.Fatalf("acknowledged %s after the tear: %+v, %v", d.ID, got, err)
				}
			}
			_, err = s.Get(torn.ID)
			switch tc.name {
			case "half of the last append":
				if err == nil {
					t.Fatal("the torn append was read back")
				}
			default:
				if err != nil {
					t.Fatalf("the last whole append was lost: %v", err)
				}
			}
			// And the journal goes on from there.
			d := enqueueOne(t, s, "1", "n=after")
			if _, err := s.Get(d.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// dataEnd is the offset after the last non-zero byte of the store's tail
// segment (segments are preallocated with zeros).
func dataEnd(t *testing.T, dir string) int64 {
	t.Helper()
	segs := segmentFiles(t, dir)
	b, err := os.ReadFile(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	return int64(end)
}

// Enqueue after Close fails; a journal entry that cannot be opened (another
// key) refuses to start with an error that names the folder.
func TestJournalKeyIsTheStoreKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	s, err := Open(Options{Dir: dir, EncryptionKey: journalTestKey})
	if err != nil {
		t.Fatal(err)
	}
	d := enqueueOne(t, s, "1", "ccnum=4111111111111111")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "1", Payload: []byte("x")}}); err == nil {
		t.Fatal("Enqueue after Close succeeded")
	}
	// Rotating the store key rewraps the journal's key: the entry opens
	// with the new key, and the rotation can be run again.
	newKey := bytes.Repeat([]byte{4}, 32)
	for range 2 {
		if err := RotateKey(dir, journalTestKey, newKey); err != nil && !strings.Contains(err.Error(), "old key") {
			t.Fatal(err)
		}
	}
	s2 := openQueue(t, Options{Dir: dir, EncryptionKey: newKey})
	if p, err := s2.Payload(d.ID); err != nil || string(p) != "ccnum=4111111111111111" {
		t.Fatalf("payload after rotation: %q, %v", p, err)
	}
}

// Enqueues faster than the spill (nothing attempts them) wait for it once
// the table holds twice its bounds, rather than fill memory; none is lost.
func TestJournalFloodWaitsForTheSpill(t *testing.T) {
	s := openQueue(t, Options{FreshCount: 100, FreshAge: time.Hour})
	const writers, each = 16, 200
	var peak atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			n, _ := s.fresh.len()
			if int64(n) > peak.Load() {
				peak.Store(int64(n))
			}
			select {
			case <-stop:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				enqueueOne(t, s, "1", fmt.Sprintf("w=%d&i=%d", w, i))
			}
		})
	}
	wg.Wait()
	close(stop)
	<-watched
	if p := peak.Load(); p > 2*100+writers {
		t.Fatalf("the table held %d deliveries, bounds 100 (full at 200, +%d enqueues in flight)", p, writers)
	}
	st, _ := s.Stats()
	if st["1"].Pending != writers*each {
		t.Fatalf("pending = %d, want %d", st["1"].Pending, writers*each)
	}
	t.Logf("peak %d deliveries in the table for bounds of 100", peak.Load())
}

// Deliveries that leave the table leave its queues too, payload and all,
// even for a DIN whose due list nobody reads (TestSoakCycles' RSS went from
// 99 to 296 MiB before this).
func TestJournalTableKeepsNothingOfWhatLeft(t *testing.T) {
	s := openQueue(t, Options{AbsorbDelay: time.Millisecond})
	payload := strings.Repeat("x", 1000)
	for range 500 {
		d := enqueueOne(t, s, "1", payload)
		mustComplete(t, s, d.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
	}
	s.fresh.mu.Lock()
	all, din := len(s.fresh.all.items), len(s.fresh.byDIN["1"].items)
	s.fresh.mu.Unlock()
	if all > 130 || din > 130 {
		t.Fatalf("queues hold %d and %d entries after 500 deliveries left the table", all, din)
	}
}

// New segments are the spares zeroed ahead (journalfiles.go), and what is
// appended to them is replayed like what went to raft-wal's own files.
func TestJournalSegmentsComeZeroed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	opts := Options{Dir: dir, EncryptionKey: journalTestKey, JournalSegmentSize: 32 << 10, crashClose: true}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	z := s.journal.files
	var enq []Delivery
	for round := range 3 {
		z.wg.Wait() // the spare for the next rotation is written
		if _, err := os.Stat(filepath.Join(journalPath(dir), spareSegment)); err != nil {
			t.Fatalf("round %d: no spare segment ready: %v", round, err)
		}
		used := z.used.Load()
		for n := range 40 { // 40 KiB: at least one rotation of a 32 KiB segment
			enq = append(enq, enqueueOne(t, s, "K", fmt.Sprintf("r=%d&n=%d&%s", round, n, strings.Repeat("z", 1000))))
		}
		if z.used.Load() == used {
			t.Fatalf("round %d: the rotation did not take the spare", round)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	opts.crashClose = false
	s = openQueue(t, opts)
	if s.replayed != len(enq) {
		t.Fatalf("replayed %d, want %d", s.replayed, len(enq))
	}
	for _, d := range enq {
		if p, err := s.Payload(d.ID); err != nil || !strings.HasPrefix(string(p), "r=") {
			t.Fatalf("payload of %s after replay: %.20q, %v", d.ID, p, err)
		}
	}
}
