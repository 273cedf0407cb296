package storage

import (
	"context"
	"sync"
	"time"
)

// freshTable holds the deliveries that are in the journal but not in Badger:
// pending since their enqueue, with their payload, in journal order. A
// delivery leaves it once Badger holds it, synced: after its first attempt
// (as delivered, spooled, failed, or pending for a retry, with its payload),
// or spilled unattempted (pending, with its payload) when it has waited too
// long or the table is over its bounds. Until then the journal keeps it.
type freshTable struct {
	maxCount, maxBytes int

	mu      sync.Mutex
	byID    map[id]*freshEntry
	byDIN   map[string]*freshQueue
	all     freshQueue // every entry, for the journal's low-water mark and the spill
	bytes   int
	pending map[string]int // entries per DIN
	// room is closed (and replaced) when an entry leaves a table that was
	// full: twice its bounds, where Enqueue waits for the spill (waitRoom).
	room chan struct{}
}

type freshEntry struct {
	id      id
	rec     Delivery // as enqueued: pending, due at its creation
	payload []byte
	index   uint64 // in the journal
	listed  bool   // in the table (a replayed delivery goes to Badger without it)

	started bool // an attempt began (AttemptStarted): never spilled meanwhile
	// moving is non-nil while the entry is being written to Badger (by its
	// completion, or a spill when spilling); it is closed when that ends,
	// and gone tells whether it succeeded.
	moving   chan struct{}
	spilling bool
	gone     bool
}

// freshQueue is entries in journal order; removed ones are skipped at the
// head and compacted away.
type freshQueue struct {
	items []*freshEntry
	head  int
}

func (q *freshQueue) push(e *freshEntry) { q.items = append(q.items, e) }

// live returns the entries from the first that is not gone.
func (q *freshQueue) live() []*freshEntry {
	for q.head < len(q.items) && q.items[q.head].gone {
		q.items[q.head] = nil
		q.head++
	}
	if q.head > 64 && q.head > len(q.items)/2 {
		q.items = append([]*freshEntry(nil), q.items[q.head:]...)
		q.head = 0
	}
	return q.items[q.head:]
}

func newFreshTable(maxCount, maxBytes int) *freshTable {
	return &freshTable{
		maxCount: maxCount, maxBytes: maxBytes,
		byID:    map[id]*freshEntry{},
		byDIN:   map[string]*freshQueue{},
		pending: map[string]int{},
		room:    make(chan struct{}),
	}
}

// fullLocked reports whether the table is at twice its bounds: the spill
// has fallen behind the enqueues, and they wait for it.
func (f *freshTable) fullLocked() bool {
	return len(f.byID) >= 2*f.maxCount || f.bytes >= 2*f.maxBytes
}

// waitRoom returns once the table is not full, or with ctx's error; stop
// (the store closing) ends the wait too.
func (f *freshTable) waitRoom(ctx context.Context, stop <-chan struct{}) error {
	for {
		f.mu.Lock()
		if !f.fullLocked() {
			f.mu.Unlock()
			return nil
		}
		room := f.room
		f.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return ErrClosed
		}
	}
}

// insert adds entries in journal order; it reports whether the table is now
// over its bounds (the spill is due).
func (f *freshTable) insert(entries []*freshEntry) (over bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range entries {
		e.listed = true
		f.byID[e.id] = e
		q := f.byDIN[e.rec.DIN]
		if q == nil {
			q = &freshQueue{}
			f.byDIN[e.rec.DIN] = q
		}
		q.push(e)
		f.all.push(e)
		f.bytes += len(e.payload)
		f.pending[e.rec.DIN]++
	}
	return f.overLocked()
}

func (f *freshTable) overLocked() bool {
	return len(f.byID) > f.maxCount || f.bytes > f.maxBytes
}

// get returns the record of i, if the table holds it.
func (f *freshTable) get(i id) (Delivery, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.byID[i]
	if !ok {
		return Delivery{}, false
	}
	return e.rec, true
}

func (f *freshTable) payload(i id) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.byID[i]
	if !ok {
		return nil, false
	}
	return e.payload, true
}

// due lists up to limit of din's entries due by now, earliest first,
// leaving out those whose attempt is being recorded.
func (f *freshTable) due(din string, now time.Time, limit int) []Delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.byDIN[din]
	if q == nil {
		return nil
	}
	var out []Delivery
	for _, e := range q.live() {
		if len(out) >= limit {
			break
		}
		if e.gone || e.moving != nil && !e.spilling {
			continue
		}
		if e.rec.NextAttempt.After(now) {
			continue
		}
		out = append(out, e.rec)
	}
	return out
}

// first returns the next attempt and the creation time of din's earliest
// entry.
func (f *freshTable) first(din string) (next, created time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.byDIN[din]
	if q == nil {
		return time.Time{}, time.Time{}, false
	}
	for _, e := range q.live() {
		if !e.gone {
			return e.rec.NextAttempt, e.rec.Created, true
		}
	}
	return time.Time{}, time.Time{}, false
}

// counts returns the entries per DIN; the caller holds what keeps them
// consistent with Badger's counters (countersMu).
func (f *freshTable) counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.pending))
	for din, n := range f.pending {
		if n > 0 {
			out[din] = n
		}
	}
	return out
}

// matching returns copies of the records that keep selects.
func (f *freshTable) matching(keep func(*Delivery) bool) []Delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Delivery
	for _, e := range f.all.live() {
		if !e.gone && keep(&e.rec) {
			out = append(out, e.rec)
		}
	}
	return out
}

// started marks i as being attempted, so that the spill leaves it alone.
func (f *freshTable) started(i id) {
	f.mu.Lock()
	if e, ok := f.byID[i]; ok {
		e.started = true
	}
	f.mu.Unlock()
}

// claim takes i for its completion. It returns nil when the table does not
// hold i; wait non-nil when a spill is writing it (wait, then look again).
func (f *freshTable) claim(i id) (e *freshEntry, wait <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.byID[i]
	switch {
	case !ok:
		return nil, nil
	case e.moving != nil:
		return nil, e.moving
	}
	e.moving = make(chan struct{})
	return e, nil
}

// claimSpill takes, oldest first, the entries that no attempt holds and
// that were created before cutoff, or that the table is over its bounds by,
// at most max of them; with all, every entry not being written already.
func (f *freshTable) claimSpill(cutoff time.Time, max int, all bool) []*freshEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	count, bytes := len(f.byID), f.bytes
	var out []*freshEntry
	for _, e := range f.all.live() {
		if len(out) >= max {
			break
		}
		over := count > f.maxCount || bytes > f.maxBytes
		if !all && !over && !e.rec.Created.Before(cutoff) {
			break // journal order is creation order, give or take a few µs
		}
		if e.gone || e.moving != nil || e.started && !all {
			continue
		}
		e.moving, e.spilling = make(chan struct{}), true
		count--
		bytes -= len(e.payload)
		out = append(out, e)
	}
	return out
}

// moved removes e, now in Badger (called with countersMu held, as the
// commit that wrote it applies its counters).
func (f *freshTable) moved(e *freshEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.gone {
		return
	}
	full := f.fullLocked()
	e.gone = true
	delete(f.byID, e.id)
	f.bytes -= len(e.payload)
	// The queues drop gone entries from their head only; until then the
	// entry must not keep its payload alive.
	e.payload = nil
	if q := f.byDIN[e.rec.DIN]; q != nil {
		q.live()
	}
	f.all.live()
	if f.pending[e.rec.DIN]--; f.pending[e.rec.DIN] <= 0 {
		delete(f.pending, e.rec.DIN)
	}
	if e.moving != nil {
		close(e.moving)
	}
	if full && !f.fullLocked() {
		close(f.room)
		f.room = make(chan struct{})
	}
}

// unclaim gives e back after a write that failed.
func (f *freshTable) unclaim(e *freshEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.gone || e.moving == nil {
		return
	}
	close(e.moving)
	e.moving, e.spilling = nil, false
}

// lowWater is the journal index of the oldest entry not yet in Badger, or
// next when there is none: the journal may release everything before it.
func (f *freshTable) lowWater(next uint64) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	// all is in journal order: replayed entries first, then new ones as
	// the appender inserts them.
	if l := f.all.live(); len(l) > 0 {
		return l[0].index
	}
	return next
}

func (f *freshTable) len() (entries, bytes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.byID), f.bytes
}
