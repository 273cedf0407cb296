package handlers

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memStore is an in-memory ReplayStore with TTLs on a controllable clock.
type memStore struct {
	mu      sync.Mutex
	now     func() time.Time
	m       map[string]memEntry
	failErr error // returned by every method when set
	claims  atomic.Int64
}

type memEntry struct {
	v   []byte
	exp time.Time
}

func newMemStore() *memStore {
	return &memStore{now: time.Now, m: map[string]memEntry{}}
}

func (s *memStore) get(key string) ([]byte, bool) {
	e, ok := s.m[key]
	if !ok || !s.now().Before(e.exp) {
		delete(s.m, key)
		return nil, false
	}
	return e.v, true
}

func (s *memStore) Claim(key, value []byte, ttl time.Duration) ([]byte, bool, error) {
	s.claims.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil {
		return nil, false, s.failErr
	}
	if v, ok := s.get(string(key)); ok {
		return bytes.Clone(v), false, nil
	}
	s.m[string(key)] = memEntry{bytes.Clone(value), s.now().Add(ttl)}
	return nil, true, nil
}

func (s *memStore) Set(key, value []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil {
		return s.failErr
	}
	s.m[string(key)] = memEntry{bytes.Clone(value), s.now().Add(ttl)}
	return nil
}

func (s *memStore) Delete(key []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil {
		return s.failErr
	}
	delete(s.m, string(key))
	return nil
}

func (s *memStore) record(t *testing.T, key []byte) (ReplayRecord, bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.get(string(key))
	if !ok {
		return ReplayRecord{}, false
	}
	var r ReplayRecord
	if err := r.UnmarshalBinary(v); err != nil {
		t.Fatalf("stored record: %v", err)
	}
	return r, true
}

func newGuard(t *testing.T, s ReplayStore, opts ReplayOptions) *ReplayGuard {
	t.Helper()
	if opts.Window == 0 {
		opts.Window = time.Hour
	}
	g, err := NewReplayGuard(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func begin(t *testing.T, g *ReplayGuard, key []byte) ReplayResult {
	t.Helper()
	res, err := g.Begin(context.Background(), key)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if (res.Ticket == nil) == (res.Answer == nil) {
		t.Fatalf("Begin: want exactly one of ticket and answer, got %+v", res)
	}
	return res
}

func TestReplayKey(t *testing.T) {
	a := ReplayKey(formOf(t, "a=1&b=2&verify=ABCD"))
	if !bytes.Equal(a, ReplayKey(formOf(t, "verify=ABCD&b=2&a=1"))) {
		t.Fatal("field order changes the key")
	}
	if !bytes.Equal(a, ReplayKey(formOf(t, "%61=1&b=%32&verify=ABCD"))) {
		t.Fatal("encoding changes the key")
	}
	distinct := []string{
		"a=1&b=2&verify=ABCE",   // signature counts
		"a=1&b=2",               // so does its absence
		"a=1&b=2&verify=ABCD&c", // an empty extra field
		"a=12&b=&verify=ABCD",   // values moved across the boundary
		"a=1&b2=&verify=ABCD",   // value moved into the name
	}
	seen := map[string]string{string(a): "base"}
	for _, body := range distinct {
		k := string(ReplayKey(formOf(t, body)))
		if other, dup := seen[k]; dup {
			t.Errorf("%q and %q share a key", body, other)
		}
		seen[k] = body
	}
	if !bytes.HasPrefix(a, []byte("itns-replay/")) || len(a) != len("itns-replay/")+64 {
		t.Errorf("key %q: want itns-replay/ + 64 hex digits", a)
	}
}

func TestReplayRecordEncoding(t *testing.T) {
	in := ReplayRecord{State: ReplayDone, Status: 200, ContentType: "text/plain; charset=utf-8", Body: []byte("OK\n"), Time: time.Unix(1_700_000_000, 123)}
	b, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var out ReplayRecord
	if err := out.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if out.State != in.State || out.Status != in.Status || out.ContentType != in.ContentType || !bytes.Equal(out.Body, in.Body) || !out.Time.Equal(in.Time) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
	for i := 0; i < len(b); i++ {
		if err := new(ReplayRecord).UnmarshalBinary(b[:i]); err == nil {
			t.Errorf("truncated to %d bytes: accepted", i)
		}
	}
	for _, bad := range [][]byte{append(bytes.Clone(b), 0), {2, 2, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {1, 9, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if err := new(ReplayRecord).UnmarshalBinary(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := (ReplayRecord{Status: 1000}).MarshalBinary(); err == nil {
		t.Error("status 1000 encoded")
	}
}

func TestReplayAnsweredFromFirst(t *testing.T) {
	s := newMemStore()
	g := newGuard(t, s, ReplayOptions{})
	key := []byte("k")
	first := begin(t, g, key)
	if first.Ticket == nil || first.Retry {
		t.Fatalf("first copy: %+v", first)
	}
	if rec, _ := s.record(t, key); rec.State != ReplayInFlight {
		t.Fatalf("in flight: stored state %d", rec.State)
	}
	if err := first.Ticket.Finish(201, "text/plain", []byte("OK"), true); err != nil {
		t.Fatal(err)
	}
	// A second Finish or Fail is a no-op.
	if err := first.Ticket.Fail(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		r := begin(t, g, key)
		if r.Answer == nil || r.Answer.Status != 201 || r.Answer.ContentType != "text/plain" || string(r.Answer.Body) != "OK" {
			t.Fatalf("replay %d: %+v", i, r)
		}
	}
}

func TestReplayNotRecorded(t *testing.T) {
	cases := []struct {
		name   string
		finish func(*ReplayTicket) error
	}{
		{"5xx", func(tk *ReplayTicket) error { return tk.Finish(500, "text/plain", []byte("ERR"), true) }},
		{"4xx", func(tk *ReplayTicket) error { return tk.Finish(403, "", nil, true) }},
		{"3xx", func(tk *ReplayTicket) error { return tk.Finish(302, "", nil, true) }},
		{"incomplete body", func(tk *ReplayTicket) error { return tk.Finish(200, "", []byte("partial"), false) }},
		{"body too large", func(tk *ReplayTicket) error {
			return tk.Finish(200, "", make([]byte, MaxReplayBody+1), true)
		}},
		{"fail", func(tk *ReplayTicket) error { return tk.Fail() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore()
			g := newGuard(t, s, ReplayOptions{})
			key := []byte("k")
			if err := tc.finish(begin(t, g, key).Ticket); err != nil {
				t.Fatal(err)
			}
			if _, ok := s.record(t, key); ok {
				t.Fatal("a record is left")
			}
			if r := begin(t, g, key); r.Ticket == nil {
				t.Fatalf("the sender's retry is not let through: %+v", r)
			}
		})
	}
}

func TestReplayWaitsForInFlight(t *testing.T) {
	s := newMemStore()
	g := newGuard(t, s, ReplayOptions{Wait: 5 * time.Second})
	key := []byte("k")
	first := begin(t, g, key)
	got := make(chan ReplayResult)
	go func() {
		r, err := g.Begin(context.Background(), key)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	select {
	case r := <-got:
		t.Fatalf("replay did not wait: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	if err := first.Ticket.Finish(200, "text/plain", []byte("OK"), true); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.Answer == nil || string(r.Answer.Body) != "OK" {
			t.Fatalf("replay after the first succeeded: %+v", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("replay not woken")
	}
}

func TestReplayInFlightFailureLetsOneThrough(t *testing.T) {
	s := newMemStore()
	g := newGuard(t, s, ReplayOptions{Wait: 5 * time.Second})
	key := []byte("k")
	first := begin(t, g, key)
	const n = 5
	results := make(chan ReplayResult, n)
	for i := 0; i < n; i++ {
		go func() {
			r, err := g.Begin(context.Background(), key)
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := first.Ticket.Finish(502, "", nil, true); err != nil {
		t.Fatal(err)
	}
	// Exactly one waiter becomes the new first; the others wait for it.
	var second *ReplayTicket
	select {
	case r := <-results:
		if r.Ticket == nil || !r.Retry {
			t.Fatalf("after the first failed: %+v", r)
		}
		second = r.Ticket
	case <-time.After(2 * time.Second):
		t.Fatal("no waiter let through")
	}
	select {
	case r := <-results:
		t.Fatalf("a second waiter went on concurrently: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	if err := second.Finish(200, "text/plain", []byte("OK"), true); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		select {
		case r := <-results:
			if r.Answer == nil || string(r.Answer.Body) != "OK" {
				t.Fatalf("waiter %d: %+v", i, r)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("waiters not answered")
		}
	}
}

func TestReplayInFlightTimeout(t *testing.T) {
	s := newMemStore()
	g := newGuard(t, s, ReplayOptions{Wait: 150 * time.Millisecond})
	key := []byte("k")
	begin(t, g, key) // never finished
	start := time.Now()
	_, err := g.Begin(context.Background(), key)
	if denialReason(err) != ReasonReplayInFlight || denialStatus(err) != 503 {
		t.Fatalf("got %v, want a 503 %s", err, ReasonReplayInFlight)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Fatalf("waited %v, want about 150ms", d)
	}
}

func TestReplayInFlightElsewherePolls(t *testing.T) {
	// Two guards over one store: an old and a new config during a reload.
	s := newMemStore()
	oldG := newGuard(t, s, ReplayOptions{})
	newG := newGuard(t, s, ReplayOptions{Wait: 3 * time.Second, PollInterval: 20 * time.Millisecond})
	key := []byte("k")
	first := begin(t, oldG, key)
	time.AfterFunc(100*time.Millisecond, func() { _ = first.Ticket.Finish(200, "text/plain", []byte("OK"), true) })
	r := begin(t, newG, key)
	if r.Answer == nil || string(r.Answer.Body) != "OK" {
		t.Fatalf("%+v", r)
	}
	if s.claims.Load() < 3 {
		t.Fatalf("%d claims: the store was not polled", s.claims.Load())
	}
}

func TestReplayContextCancelled(t *testing.T) {
	s := newMemStore()
	g := newGuard(t, s, ReplayOptions{Wait: 5 * time.Second})
	key := []byte("k")
	begin(t, g, key)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := g.Begin(ctx, key); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestReplayWindowExpires(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := newMemStore()
	s.now = clock
	g := newGuard(t, s, ReplayOptions{Window: time.Hour, Now: clock})
	key := []byte("k")
	if err := begin(t, g, key).Ticket.Finish(200, "", []byte("OK"), true); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(59 * time.Minute)
	mu.Unlock()
	if r := begin(t, g, key); r.Answer == nil {
		t.Fatal("replay inside the window went on")
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if r := begin(t, g, key); r.Ticket == nil {
		t.Fatal("a copy after the window is still treated as a replay")
	}
}

func TestReplayStoredFailedAndCorruptRecords(t *testing.T) {
	s := newMemStore()
	g := newGuard(t, s, ReplayOptions{})
	failed, _ := ReplayRecord{State: ReplayFailed, Time: time.Now()}.MarshalBinary()
	for name, v := range map[string][]byte{"failed": failed, "corrupt": []byte("garbage")} {
		key := []byte(name)
		if err := s.Set(key, v, time.Hour); err != nil {
			t.Fatal(err)
		}
		r := begin(t, g, key)
		if r.Ticket == nil || !r.Retry {
			t.Fatalf("%s record: %+v", name, r)
		}
		if rec, _ := s.record(t, key); rec.State != ReplayInFlight {
			t.Fatalf("%s record: not replaced by an in-flight one", name)
		}
	}
}

func TestReplayStoreErrors(t *testing.T) {
	s := newMemStore()
	g := newGuard(t, s, ReplayOptions{})
	s.failErr = errors.New("disk gone")
	if _, err := g.Begin(context.Background(), []byte("k")); !errors.Is(err, ErrReplayStore) {
		t.Fatalf("Begin: %v, want ErrReplayStore", err)
	}
	s.failErr = nil
	r := begin(t, g, []byte("k"))
	s.failErr = errors.New("disk gone")
	if err := r.Ticket.Finish(200, "", []byte("OK"), true); !errors.Is(err, ErrReplayStore) {
		t.Fatalf("Finish: %v, want ErrReplayStore", err)
	}
	if _, err := NewReplayGuard(nil, ReplayOptions{Window: time.Second}); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := NewReplayGuard(s, ReplayOptions{}); err == nil {
		t.Error("zero window accepted")
	}
}

func TestReplayConcurrentCopies(t *testing.T) {
	s := newMemStore()
	g := newGuard(t, s, ReplayOptions{Wait: 5 * time.Second})
	key := []byte("k")
	const n = 20
	var tickets, answers atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := g.Begin(context.Background(), key)
			if err != nil {
				t.Error(err)
				return
			}
			if r.Ticket != nil {
				tickets.Add(1)
				time.Sleep(20 * time.Millisecond) // the legacy script at work
				_ = r.Ticket.Finish(200, "text/plain", []byte("OK"), true)
				return
			}
			answers.Add(1)
		}()
	}
	wg.Wait()
	if tickets.Load() != 1 || answers.Load() != n-1 {
		t.Fatalf("%d went on, %d answered; want 1 and %d", tickets.Load(), answers.Load(), n-1)
	}
}

// A process killed while the first copy was in flight leaves an in-flight
// record that no outcome will ever replace. After a restart (a new owner)
// the sender's retry goes on at once instead of waiting for the record to
// expire, and only one of several racing copies takes it over.
func TestReplayOrphanedInFlightRecordIsTakenOver(t *testing.T) {
	store := newMemStore()
	key := []byte("k")
	dead := mustGuard(t, store, ReplayOptions{Window: time.Hour, Owner: "boot-1", Wait: 50 * time.Millisecond})
	if r, err := dead.Begin(context.Background(), key); err != nil || r.Ticket == nil {
		t.Fatalf("first copy: %+v %v", r, err)
	}
	// boot-1 dies here without Finish or Fail.
	g := mustGuard(t, store, ReplayOptions{Window: time.Hour, Owner: "boot-2", Wait: 2 * time.Second})
	var mu sync.Mutex
	tickets := 0
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := g.Begin(context.Background(), key)
			if err == nil && r.Ticket != nil {
				mu.Lock()
				tickets++
				mu.Unlock()
				time.Sleep(100 * time.Millisecond)
				_ = r.Ticket.Finish(200, "text/plain", []byte("OK"), true)
			}
		}()
	}
	wg.Wait()
	if tickets != 1 {
		t.Errorf("%d copies went on after the restart, want exactly 1", tickets)
	}
	// Without an owner (the old behaviour) the orphan is waited for.
	store2 := newMemStore()
	old := mustGuard(t, store2, ReplayOptions{Window: time.Hour, Owner: "boot-1"})
	if _, err := old.Begin(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	anon := mustGuard(t, store2, ReplayOptions{Window: time.Hour, Wait: 150 * time.Millisecond})
	if _, err := anon.Begin(context.Background(), key); err == nil {
		t.Error("an unowned guard went on past another process's in-flight record")
	}
}

func mustGuard(t *testing.T, store ReplayStore, opts ReplayOptions) *ReplayGuard {
	t.Helper()
	g, err := NewReplayGuard(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
