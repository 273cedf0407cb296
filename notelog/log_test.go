package notelog

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

type memSink struct {
	mu   sync.Mutex
	recs []storage.Notification
	// block, when set, holds every write until it is closed.
	block chan struct{}
}

func (s *memSink) AppendNotifications(ns []storage.Notification) error {
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, ns...)
	return nil
}

func (s *memSink) got() []storage.Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]storage.Notification(nil), s.recs...)
}

type counts struct {
	mu      sync.Mutex
	logged  map[string]int
	dropped map[string]int
}

func newCounts() *counts           { return &counts{logged: map[string]int{}, dropped: map[string]int{}} }
func (c *counts) Logged(o string)  { c.mu.Lock(); c.logged[o]++; c.mu.Unlock() }
func (c *counts) Dropped(r string) { c.mu.Lock(); c.dropped[r]++; c.mu.Unlock() }

func stop(t *testing.T, l *Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

var at = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// The first decision stands; an undecided note is accepted; labels are the
// named fields' first values; Stop writes what was queued.
func TestFinishRecordsOutcomeAndLabels(t *testing.T) {
	sink := &memSink{}
	c := newCounts()
	l := New(Options{Sink: sink, Counters: c})
	l.Start()

	n := NewNote(Request{At: at, Host: "shop", Path: "/ipn.php", Method: "POST", IP: "127.0.0.1", Labels: []string{"ctransreceipt", "ctransaction"}})
	n.AddDeliveries("d1", "d2")
	l.Finish(n, 200, []byte("ctransreceipt=R1&ccustcc=4111111111111111&ctransaction=SALE&ctransreceipt=R2"))

	r := NewNote(Request{At: at, Path: "/ipn.php", Labels: []string{"ctransreceipt"}})
	r.Refuse("bad_signature")
	r.Replay(false) // a later handler never saw it: the refusal stands
	l.Finish(r, 403, nil)

	p := NewNote(Request{At: at, Path: "/ipn.php"})
	p.Replay(true)
	l.Finish(p, 503, nil)
	stop(t, l)

	got := sink.got()
	if len(got) != 3 {
		t.Fatalf("%d records, want 3", len(got))
	}
	a := got[0]
	if a.Outcome != storage.OutcomeAccepted || a.Status != 200 || strings.Join(a.Deliveries, ",") != "d1,d2" ||
		len(a.Labels) != 2 || a.Labels["ctransreceipt"] != "R1" || a.Labels["ctransaction"] != "SALE" {
		t.Errorf("accepted record %+v", a)
	}
	if got[1].Outcome != storage.OutcomeRefused || got[1].Reason != "bad_signature" || got[1].Status != 403 || got[1].Labels != nil {
		t.Errorf("refused record %+v", got[1])
	}
	if got[2].Outcome != storage.OutcomeReplayInFlight {
		t.Errorf("in-flight record %+v", got[2])
	}
	if c.logged[storage.OutcomeAccepted] != 1 || c.logged[storage.OutcomeRefused] != 1 {
		t.Errorf("counted %v", c.logged)
	}
	// After Stop: dropped and counted, never a panic or a block.
	l.Finish(NewNote(Request{At: at}), 200, nil)
	if c.dropped["queue_full"] != 1 {
		t.Errorf("after Stop: dropped %v", c.dropped)
	}
}

// A flood of refusals keeps RefusedPerHour records an hour; accepted ones
// are never held back by the budget, and the next hour has a fresh one.
func TestRefusalBudgetPerHour(t *testing.T) {
	sink := &memSink{}
	c := newCounts()
	l := New(Options{Sink: sink, Counters: c, RefusedPerHour: 5})
	l.Start()
	for i := range 50 {
		n := NewNote(Request{At: at.Add(time.Duration(i) * time.Second)})
		n.Refuse("ip_not_allowed")
		l.Finish(n, 403, nil)
	}
	for range 3 {
		l.Finish(NewNote(Request{At: at.Add(time.Minute)}), 200, nil)
	}
	later := NewNote(Request{At: at.Add(time.Hour)})
	later.Refuse("ip_not_allowed")
	l.Finish(later, 403, nil)
	stop(t, l)
	refused, accepted := 0, 0
	for _, r := range sink.got() {
		if r.Outcome == storage.OutcomeRefused {
			refused++
		} else {
			accepted++
		}
	}
	if refused != 6 || accepted != 3 || c.dropped["budget"] != 45 {
		t.Errorf("refused %d (want 5 + 1 the next hour), accepted %d (want 3), dropped %v (want 45 budget)", refused, accepted, c.dropped)
	}
}

// A writer that cannot keep up never blocks Finish: the queue's overflow is
// dropped and counted.
func TestFinishNeverBlocks(t *testing.T) {
	sink := &memSink{block: make(chan struct{})}
	c := newCounts()
	l := New(Options{Sink: sink, Counters: c, QueueSize: 4, Batch: 1})
	l.Start()
	done := make(chan struct{})
	go func() {
		for range 100 {
			l.Finish(NewNote(Request{At: at}), 200, nil)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Finish blocked on a stuck writer")
	}
	close(sink.block)
	stop(t, l)
	kept := len(sink.got())
	if kept+c.dropped["queue_full"] != 100 || c.dropped["queue_full"] < 90 {
		t.Errorf("kept %d, dropped %v: want every record kept or counted, most dropped", kept, c.dropped)
	}
}

func TestCheckLabels(t *testing.T) {
	sensitive := func(f string) bool {
		return strings.Contains(f, "cc") && strings.HasSuffix(f, "cc") || strings.Contains(f, "password")
	}
	if err := CheckLabels([]string{"ctransreceipt", "ctransaction"}, sensitive); err != nil {
		t.Error(err)
	}
	for _, c := range [][]string{{"ccustcc"}, {"password"}, {"a", "a"}, {" "}} {
		if err := CheckLabels(c, sensitive); err == nil {
			t.Errorf("%q accepted", c)
		}
	}
	if got := extractLabels([]byte("r="+strings.Repeat("é", 100)), []string{"r"})["r"]; len(got) > maxLabelValue || !strings.HasPrefix(got, "éé") {
		t.Errorf("long value cut to %d bytes: %q", len(got), got)
	}
}

// A request's host, path and method are cut, and a label's value too, so a
// flood of refusals with huge URLs cannot make huge records.
func TestRecordsAreBounded(t *testing.T) {
	sink := &memSink{}
	l := New(Options{Sink: sink})
	l.Start()
	huge := strings.Repeat("x", 64<<10)
	n := NewNote(Request{At: at, Host: huge, Path: "/" + huge, Method: huge, Labels: []string{"ctransreceipt"}})
	l.Finish(n, 200, []byte("ctransreceipt="+huge))
	stop(t, l)
	got := sink.got()
	if len(got) != 1 {
		t.Fatalf("%d records, want 1", len(got))
	}
	r := got[0]
	if len(r.Host) != maxHost || len(r.Path) != maxPath || len(r.Method) != maxMethod || len(r.Labels["ctransreceipt"]) != maxLabelValue {
		t.Errorf("record sizes host %d path %d method %d label %d", len(r.Host), len(r.Path), len(r.Method), len(r.Labels["ctransreceipt"]))
	}
}

type fullSink struct{}

func (fullSink) AppendNotifications([]storage.Notification) error {
	return fmt.Errorf("append notifications: %w: 1 bytes free", storage.ErrDiskFull)
}

// On a full disk the records are dropped and counted as disk_full, not
// logged as errors batch after batch.
func TestFullDiskDropsRecords(t *testing.T) {
	c := newCounts()
	l := New(Options{Sink: fullSink{}, Counters: c})
	l.Start()
	for range 3 {
		l.Finish(NewNote(Request{At: at}), 200, nil)
	}
	stop(t, l)
	if c.dropped["disk_full"] != 3 || len(c.logged) != 0 {
		t.Errorf("dropped %v, logged %v; want 3 disk_full, none logged", c.dropped, c.logged)
	}
}
