package storage

import (
	"reflect"
	"testing"
	"time"
)

// What an edge records of its attempts at a fleet's queue (Mirror) counts
// as the same attempts at its own queue do: the hourly buckets, the states
// of the finished deliveries, the last success and error. Only pending
// differs: the queue counts it.
func TestMirrorCountsAsTheQueueDoes(t *testing.T) {
	clk := newTestClock()
	own := openQueue(t, Options{Clock: clk.Now})
	mirror := openQueue(t, Options{Clock: clk.Now})
	h0 := clk.Now().Truncate(time.Hour)
	at := h0.Add(10 * time.Minute)
	type step struct {
		a   Attempt
		out Outcome
	}
	histories := map[string][]step{
		"a": {
			{Attempt{At: at, Status: 500}, Outcome{State: StatePending, NextAttempt: at}},
			{Attempt{At: at.Add(time.Hour), Status: 204}, Outcome{State: StateDelivered}},
		},
		"b": {{Attempt{At: at, Error: "dial tcp: refused"}, Outcome{State: StateFailed}}},
		"c": {{Attempt{At: at, Status: 503}, Outcome{State: StateSpooled, SpoolFile: "/spool/c.pgp"}}},
		"d": {{Attempt{At: at, Status: 502}, Outcome{State: StateFailed, Error: "retry schedule exhausted"}}},
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		d := enqueueOne(t, own, "7", name)
		rec := NewRecord(NewDelivery{DIN: "7", Payload: []byte(name)}, clk.Now())
		for _, st := range histories[name] {
			mustComplete(t, own, d.ID, st.a, st.out)
			a, _ := ApplyOutcome(&rec, st.a, st.out, clk.Now())
			if err := mirror.Mirror(rec, a, st.out.Error); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantH, _ := own.Hourly(h0)
	gotH, err := mirror.Hourly(h0)
	if err != nil || !reflect.DeepEqual(gotH, wantH) {
		t.Fatalf("mirrored hourly =\n%+v\nthe queue's\n%+v (%v)", gotH, wantH, err)
	}
	wantS, _ := own.Stats()
	gotS, _ := mirror.Stats()
	w, g := wantS["7"], gotS["7"]
	w.Pending, w.OldestPending = 0, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("mirrored stats %+v, the queue's %+v", g, w)
	}
	list, _, err := mirror.List(Filter{DIN: "7"})
	if err != nil || len(list) != 4 {
		t.Fatalf("mirrored records: %d (%v), want the 4 finished ones", len(list), err)
	}
	for _, d := range list {
		if d.HasPayload {
			t.Errorf("mirrored record %s claims a payload", d.ID)
		}
	}
}
