package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

// testClock is a settable clock for the store.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// openQueue opens a store in dir (a fresh temp dir when empty) and closes it
// at the end of the test.
func openQueue(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "db")
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func enqueueOne(t testing.TB, s *Store, din, payload string) Delivery {
	t.Helper()
	ds, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: din, ContentType: "application/x-www-form-urlencoded", Payload: []byte(payload)}})
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return ds[0]
}

func ids(ds []Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func mustComplete(t testing.TB, s *Store, id string, a Attempt, out Outcome) Delivery {
	t.Helper()
	d, err := s.Complete(id, a, out)
	if err != nil {
		t.Fatalf("Complete %s: %v", id, err)
	}
	return d
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	clk := newTestClock()
	s, err := Open(Options{Dir: dir, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	var all []Delivery
	for i := range 20 {
		all = append(all, enqueueOne(t, s, fmt.Sprint(1000+i%3), fmt.Sprintf("n=%d", i)))
	}
	at := clk.Add(time.Minute)
	for i, d := range all[:10] {
		out := Outcome{State: StateDelivered}
		if i%2 == 1 {
			out = Outcome{State: StateFailed, Error: "gave up"}
		}
		mustComplete(t, s, d.ID, Attempt{At: at, Status: 200 + 300*(i%2)}, out)
	}
	if _, _, err := s.DedupeClaim([]byte("k"), []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(Options{Dir: dir, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	after := snapshot(t, s2)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("state changed across reopen:\nbefore %+v\nafter  %+v", before, after)
	}
	for i, d := range all {
		p, err := s2.Payload(d.ID)
		if i < 10 && i%2 == 0 {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("delivered payload still there: %v", err)
			}
			continue
		}
		if err != nil || string(p) != fmt.Sprintf("n=%d", i) {
			t.Fatalf("payload %d = %q, %v", i, p, err)
		}
	}
	if v, claimed, err := s2.DedupeClaim([]byte("k"), []byte("other"), time.Hour); err != nil || claimed || string(v) != "v" {
		t.Fatalf("dedupe after reopen = %q %v %v", v, claimed, err)
	}
	// New ids keep sorting after the old ones even if the clock went back.
	clk.Add(-time.Hour)
	n := enqueueOne(t, s2, "1000", "late")
	if n.ID <= all[len(all)-1].ID {
		t.Fatalf("id after reopen %s not after %s", n.ID, all[len(all)-1].ID)
	}
}

type storeSnapshot struct {
	Stats  map[string]DINStats
	Hourly []HourBucket
	List   []Delivery
	Due    map[string][]Delivery
}

func snapshot(t testing.TB, s *Store) storeSnapshot {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.Hourly(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	l, _, err := s.List(Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	due := map[string][]Delivery{}
	for din := range st {
		d, err := s.Due(din, time.Now().Add(24*time.Hour*365), 1000)
		if err != nil {
			t.Fatal(err)
		}
		due[din] = d
	}
	return storeSnapshot{st, h, l, due}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(Options{Dir: filepath.Join(t.TempDir(), "db")})
	if err != nil {
		t.Fatal(err)
	}
	d := enqueueOne(t, s, "1", "x")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	checks := map[string]error{}
	_, checks["Enqueue"] = s.Enqueue(context.Background(), []NewDelivery{{DIN: "1"}})
	_, checks["Complete"] = s.Complete(d.ID, Attempt{}, Outcome{State: StateDelivered})
	_, checks["Retry"] = s.Retry(d.ID, time.Now())
	_, checks["Get"] = s.Get(d.ID)
	_, checks["Payload"] = s.Payload(d.ID)
	_, checks["Due"] = s.Due("1", time.Now(), 1)
	_, _, checks["List"] = s.List(Filter{})
	_, checks["Stats"] = s.Stats()
	_, checks["Hourly"] = s.Hourly(time.Time{})
	_, checks["Purge"] = s.Purge(time.Now())
	_, checks["PendingDINs"] = s.PendingDINs()
	_, _, checks["DedupeClaim"] = s.DedupeClaim([]byte("k"), nil, 0)
	checks["DedupeSet"] = s.DedupeSet([]byte("k"), nil, 0)
	checks["DedupeDelete"] = s.DedupeDelete([]byte("k"))
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if _, ok := s.NextDue("1"); ok {
		t.Error("NextDue after Close reports a delivery")
	}
	done := make(chan struct{})
	go func() { s.RunMaintenance(context.Background(), time.Hour); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunMaintenance on a closed store does not return")
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	s := openQueue(t, Options{Dir: dir, MemTableSize: 1 << 20})
	payload := make([]byte, 4<<10)
	for range 200 { // enough to flush memtables into tables
		if _, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "1", Payload: payload}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, info.Mode().Perm(), want)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("only %d entries checked", n)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}

// waitFresh waits until the journal's table holds at most n deliveries (the
// spill runs every spillEvery).
func waitFresh(t testing.TB, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := s.fresh.len()
		if got <= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the journal's table still holds %d deliveries, want at most %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
