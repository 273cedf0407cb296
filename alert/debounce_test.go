package alert

import (
	"testing"
	"time"
)

// The first event of a window goes at once; the next ones within
// min_interval are folded and come out as one alert at the window's end,
// which opens another window; a quiet window is forgotten.
func TestMemoryFoldsWithinInterval(t *testing.T) {
	const interval = 10 * time.Minute
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := NewMemory()
	ev := func(kind Kind, din string, at time.Time) Event { return Event{Kind: kind, DIN: din, At: at} }

	send, folded := m.Offer(ev(DeliveryFailed, "1001", t0), t0, interval)
	if send == nil || folded || send.Count != 1 {
		t.Fatalf("first event: send %+v, folded %t; want it sent at once", send, folded)
	}
	for _, d := range []time.Duration{time.Minute, 2 * time.Minute, 9 * time.Minute} {
		if send, folded := m.Offer(ev(DeliveryFailed, "1001", t0.Add(d)), t0.Add(d), interval); send != nil || !folded {
			t.Fatalf("event at +%s: send %+v, folded %t; want it folded", d, send, folded)
		}
	}
	// Another destination, another event: windows of their own.
	if send, _ := m.Offer(ev(DeliveryFailed, "1002", t0.Add(time.Minute)), t0.Add(time.Minute), interval); send == nil {
		t.Fatal("first event of another destination was folded")
	}
	if send, _ := m.Offer(ev(CircuitOpen, "1001", t0.Add(time.Minute)), t0.Add(time.Minute), interval); send == nil {
		t.Fatal("first event of another kind was folded")
	}
	if next, ok := m.Next(); !ok || !next.Equal(t0.Add(interval)) {
		t.Fatalf("next flush %s %t, want %s", next, ok, t0.Add(interval))
	}
	if due := m.Due(t0.Add(interval-time.Second), interval); len(due) != 0 {
		t.Fatalf("due before the window's end: %+v", due)
	}
	due := m.Due(t0.Add(interval), interval)
	if len(due) != 1 || due[0].Count != 3 || due[0].DIN != "1001" || !due[0].First.Equal(t0.Add(time.Minute)) || !due[0].At.Equal(t0.Add(9*time.Minute)) {
		t.Fatalf("due at the window's end: %+v, want one alert of 3 for 1001 from +1m to +9m", due)
	}
	// The flush opened a new window: still folded.
	at := t0.Add(interval + time.Minute)
	if send, folded := m.Offer(ev(DeliveryFailed, "1001", at), at, interval); send != nil || !folded {
		t.Fatal("event right after a flush was not folded")
	}
	if due := m.Due(t0.Add(2*interval), interval); len(due) != 1 || due[0].Count != 1 {
		t.Fatalf("second window: %+v, want one alert of 1", due)
	}
	// A window with nothing folded ends quietly, and the next event goes at once.
	if due := m.Due(t0.Add(3*interval), interval); len(due) != 0 {
		t.Fatalf("quiet window: %+v", due)
	}
	at = t0.Add(3*interval + time.Second)
	if send, _ := m.Offer(ev(DeliveryFailed, "1001", at), at, interval); send == nil || send.Count != 1 {
		t.Fatalf("after a quiet window: %+v, want sent at once", send)
	}
}

// A timer that fires late must not lose folded events, nor send an event
// arriving after the window's end separately from them.
func TestMemoryLateFlushKeepsFolding(t *testing.T) {
	const interval = time.Minute
	t0 := time.Unix(1_700_000_000, 0)
	m := NewMemory()
	m.Offer(Event{Kind: PendingTooOld, DIN: "7"}, t0, interval)
	m.Offer(Event{Kind: PendingTooOld, DIN: "7"}, t0.Add(time.Second), interval)
	late := t0.Add(interval + 5*time.Second)
	if send, folded := m.Offer(Event{Kind: PendingTooOld, DIN: "7"}, late, interval); send != nil || !folded {
		t.Fatalf("event after the end with folded ones waiting: send %+v, folded %t", send, folded)
	}
	if due := m.Due(late, interval); len(due) != 1 || due[0].Count != 2 {
		t.Fatalf("late flush: %+v, want one alert of 2", due)
	}
}
