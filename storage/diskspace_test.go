package storage

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// Below MinFreeSpace enqueues are refused; below half of it Badger writes
// (a delivery's outcome) are refused too; once space is freed both go on at
// once, and a refused outcome is recorded when it is tried again.
func TestMinFreeSpaceFloors(t *testing.T) {
	for _, journal := range []bool{true, false} {
		t.Run(map[bool]string{true: "journal", false: "badger"}[journal], func(t *testing.T) {
			const floor = 100 << 20
			clk := newTestClock()
			var free atomic.Int64
			free.Store(1 << 30)
			s := openQueue(t, Options{
				Clock: clk.Now, MinFreeSpace: floor, noJournal: !journal,
				diskFree: func(string) (int64, error) { return free.Load(), nil },
			})
			setFree := func(n int64) {
				free.Store(n)
				clk.Add(time.Second) // older than the guard trusts a measure
			}
			a := enqueueOne(t, s, "1001", "n=1")
			b := enqueueOne(t, s, "1001", "n=2")

			setFree(floor - 1) // enqueues refused; outcomes still recorded
			_, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "1001", Payload: []byte("n=3")}})
			if !errors.Is(err, ErrDiskFull) {
				t.Fatalf("enqueue below MinFreeSpace: %v, want ErrDiskFull", err)
			}
			mustComplete(t, s, a.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})

			setFree(floor/2 - 1) // every write refused
			retry := Outcome{State: StatePending, NextAttempt: clk.Now().Add(time.Hour)}
			if _, err := s.Complete(b.ID, Attempt{Status: 503}, retry); !errors.Is(err, ErrDiskFull) {
				t.Fatalf("outcome below MinFreeSpace/2: %v, want ErrDiskFull", err)
			}
			if d, err := s.Get(b.ID); err != nil || d.State != StatePending || len(d.Attempts) != 0 {
				t.Fatalf("the refused outcome changed %s: %+v, %v", b.ID, d, err)
			}
			// The notification log writes beside the committer: refused too.
			n := []Notification{{At: clk.Now(), Outcome: Outcomes[0]}}
			if err := s.AppendNotifications(n); !errors.Is(err, ErrDiskFull) {
				t.Fatalf("notification log below MinFreeSpace/2: %v, want ErrDiskFull", err)
			}

			free.Store(1 << 30) // no clock step: a refusal measures again at once
			enqueueOne(t, s, "1001", "n=4")
			d := mustComplete(t, s, b.ID, Attempt{Status: 503}, retry)
			if d.State != StatePending || len(d.Attempts) != 1 {
				t.Fatalf("outcome after space was freed: %+v", d)
			}
			if p, err := s.Payload(b.ID); err != nil || string(p) != "n=2" {
				t.Fatalf("payload of %s: %q, %v", b.ID, p, err)
			}
		})
	}
}
