package alert

import (
	"sync"
	"time"
)

// Memory is the debounce state: per destination and event, when the
// current window ends and what was folded into it. It is safe for
// concurrent use so that the Alerters of the old and the new config share
// it across a reload: a fresh memory would send every first alert again.
type Memory struct {
	mu      sync.Mutex
	windows map[key]*window
}

// window is one (destination, event)'s debounce window.
type window struct {
	end    time.Time
	folded int
	first  time.Time // of the first folded event
	last   Event     // the latest folded event
}

// NewMemory returns an empty debounce memory.
func NewMemory() *Memory { return &Memory{windows: make(map[key]*window)} }

// Offer records ev, taken at now. The first event of a window is returned
// to be sent at once (Count 1) and opens a window of interval; later ones
// until the window's end are folded into it, and folded is true.
func (m *Memory) Offer(ev Event, now time.Time, interval time.Duration) (send *Alert, folded bool) {
	if ev.At.IsZero() {
		ev.At = now
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.windows[ev.key()]
	// A window that ended with folded events not yet flushed (the timer is
	// late) keeps folding: Due sends them all as one.
	if w == nil || (!now.Before(w.end) && w.folded == 0) {
		m.windows[ev.key()] = &window{end: now.Add(interval)}
		return &Alert{Event: ev, Count: 1, First: ev.At}, false
	}
	if w.folded == 0 {
		w.first = ev.At
	}
	w.folded++
	w.last = ev
	return nil, true
}

// Due returns, as one alert each, the events folded into windows that have
// ended by now. Each of those opens a new window of interval, so that a
// condition that goes on is reported once per interval; a window that ended
// with nothing folded is forgotten.
func (m *Memory) Due(now time.Time, interval time.Duration) []Alert {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Alert
	for k, w := range m.windows {
		if now.Before(w.end) {
			continue
		}
		if w.folded == 0 {
			delete(m.windows, k)
			continue
		}
		out = append(out, Alert{Event: w.last, Count: w.folded, First: w.first})
		m.windows[k] = &window{end: now.Add(interval)}
	}
	return out
}

// Next returns the earliest end of a window with folded events.
func (m *Memory) Next() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for _, w := range m.windows {
		if w.folded > 0 && (next.IsZero() || w.end.Before(next)) {
			next = w.end
		}
	}
	return next, !next.IsZero()
}
