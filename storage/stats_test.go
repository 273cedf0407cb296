package storage

import (
	"reflect"
	"testing"
	"time"
)

func TestHourlyCounters(t *testing.T) {
	clk := newTestClock()
	s := openQueue(t, Options{Clock: clk.Now})
	h0 := clk.Now().Truncate(time.Hour)
	a := enqueueOne(t, s, "7", "a")
	b := enqueueOne(t, s, "7", "b")
	c := enqueueOne(t, s, "8", "c")
	at := h0.Add(10 * time.Minute)
	mustComplete(t, s, a.ID, Attempt{At: at, Status: 500}, Outcome{State: StatePending, NextAttempt: at})
	mustComplete(t, s, a.ID, Attempt{At: at.Add(time.Hour), Status: 204}, Outcome{State: StateDelivered})
	mustComplete(t, s, b.ID, Attempt{At: at, Error: "dial tcp: refused"}, Outcome{State: StateFailed})
	mustComplete(t, s, c.ID, Attempt{At: at, Status: 200}, Outcome{State: StateDelivered})

	got, err := s.Hourly(h0)
	if err != nil {
		t.Fatal(err)
	}
	want := []HourBucket{
		{Hour: h0, DIN: "7", Attempts: 2, Failed: 1},
		{Hour: h0, DIN: "8", Attempts: 1, Successes: 1, Delivered: 1},
		{Hour: h0.Add(time.Hour), DIN: "7", Attempts: 1, Successes: 1, Delivered: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Hourly =\n%+v\nwant\n%+v", got, want)
	}
	if later, _ := s.Hourly(h0.Add(time.Hour)); len(later) != 1 {
		t.Fatalf("Hourly(since next hour) = %+v", later)
	}
}
