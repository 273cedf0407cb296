package delivery

import (
	"sync/atomic"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

const (
	minBatch   = 32
	maxBatch   = 1024
	storePause = time.Second // back-off after a store error
	// maxRecording bounds the attempts of one DIN whose outcome is being
	// written (spool, synced store commit) after the destination answered.
	// Many of them share one group commit, which is what makes a drain fast.
	maxRecording = 256
)

// runner is the loop of one DIN. Only its goroutine touches its counters,
// inflight, queue and pauseUntil, so a page read from the store is filtered against an
// in-flight set that cannot change during the read: a delivery is never
// attempted twice at once, nor re-read in a state older than its last
// completion. A removed DIN's runner drains its in-flight attempts and exits,
// unless the DIN comes back first: one runner per DIN at any time.
type runner struct {
	d      *Dispatcher
	din    string
	dest   atomic.Pointer[Destination] // nil while the DIN is not configured
	wake   chan struct{}               // Notify and config changes, coalesced
	events chan event                  // from the attempt goroutines

	inflight   map[string]struct{} // ids from dispatch until their outcome is recorded
	sending    int                 // attempts talking to the destination (≤ Concurrency)
	running    int                 // attempt goroutines; the loop ends only at zero
	queue      []storage.Delivery  // due and not in flight (circuit open: held past their span): one page at most
	pauseUntil time.Time
	cur        *Destination // the settings the breaker's state belongs to
	brk        breaker
	openSince  atomic.Int64 // the breaker's since in Unix ns, 0 while closed (read by CircuitOpen)
	probeNow   atomic.Bool  // an operator asked for an attempt (ProbeNow)
	pace       pacer        // the destination's rate
	delayed    atomic.Uint64
}

// event is news from an attempt goroutine: first that the destination is
// done with (sent), then that the attempt ended.
type event struct {
	id       string
	sent     bool
	answer   answer // with sent
	storeErr bool   // with the end
}

func newRunner(d *Dispatcher, din string, dst *Destination) *runner {
	r := &runner{
		d:        d,
		din:      din,
		wake:     make(chan struct{}, 1),
		events:   make(chan event, 64),
		inflight: map[string]struct{}{},
	}
	r.dest.Store(dst)
	return r
}

// poke wakes the loop without blocking.
func (r *runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// set swaps the settings (nil: removed) and wakes the loop.
func (r *runner) set(dst *Destination) {
	r.dest.Store(dst)
	r.poke()
}

func (r *runner) run() {
	defer r.d.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	stop := r.d.stopCh
	dirty := true // look at the store: at start, whatever is already due
	for {
		dest := r.dest.Load()
		if dest != nil && dest != r.cur {
			// A config load (a corrected URL, perhaps): judge the destination
			// afresh; at worst it costs the threshold's attempts again.
			if r.cur != nil && r.brk.reset() {
				r.circuitChanged(false, "configuration loaded")
			}
			r.cur = dest
		}
		if dest == nil || stop == nil {
			r.queue = nil
			timer.Stop()
			if r.running == 0 {
				if r.exit(stop == nil) {
					if r.brk.reset() { // nobody will close it: the gauge must not stay at 1
						r.circuitChanged(false, "stopped")
					}
					return
				}
				continue // revived by SetDestinations
			}
		} else {
			dirty = r.dispatch(dest, dirty)
			r.arm(timer, dest, dirty)
		}
		select {
		case <-r.wake:
			dirty = true
		case ev := <-r.events:
			if ev.sent {
				r.sending--
				if r.cur != nil && r.brk.ended(r.d.now(), ev.id, ev.answer, r.cur, r.d.jitter) {
					why := "an attempt succeeded"
					if r.brk.open {
						why = "attempts failed in a row"
					}
					r.circuitChanged(r.brk.open, why)
					dirty = true
				}
				continue // a free slot; the queue or the next event refills it
			}
			r.running--
			delete(r.inflight, ev.id)
			if ev.storeErr {
				r.pauseUntil = r.d.now().Add(storePause)
			}
			dirty = true
		case <-timer.C:
			dirty = true
		case <-stop:
			stop = nil // a closed channel would spin the loop
		}
	}
}

// exit unregisters a runner with nothing in flight; false when the DIN was
// configured again meanwhile.
func (r *runner) exit(stopping bool) bool {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	if !stopping && r.dest.Load() != nil {
		return false
	}
	if r.d.runners[r.din] == r {
		delete(r.d.runners, r.din)
	}
	return true
}

// dispatch starts attempts while slots are free, reading the next page of
// due deliveries when the queue is empty and something may have changed
// (dirty). It returns whether the store still needs a look.
func (r *runner) dispatch(dest *Destination, dirty bool) bool {
	if r.brk.open {
		return r.dispatchOpen(dest, dirty)
	}
	r.probeNow.Store(false) // nothing to hurry while closed
	for r.sending < dest.Concurrency && r.running < dest.Concurrency+maxRecording && !r.d.stopped() {
		if len(r.queue) == 0 {
			if !dirty || r.paused() {
				break
			}
			dirty = false
			r.fetch(dest, r.d.now())
			if len(r.queue) == 0 {
				break
			}
		}
		if !r.paced(dest, r.queue[0].ID) {
			break
		}
		dl := r.queue[0]
		r.queue[0] = storage.Delivery{}
		r.queue = r.queue[1:]
		r.start(dest, dl)
	}
	return dirty
}

// paced reports whether dest's rate lets the attempt of id start now; a
// delivery held back is counted once, however often it is looked at.
func (r *runner) paced(dest *Destination, id string) bool {
	if r.pace.take(dest.Rate, r.d.now()) {
		return true
	}
	if r.pace.delayed != id {
		r.pace.delayed = id
		r.delayed.Add(1)
		r.d.obs.RateDelayed(r.din)
	}
	return false
}

// fetch reads one page of deliveries due by until. The page is larger than
// the in-flight set, which it includes, so it always holds new work if any
// is due.
func (r *runner) fetch(dest *Destination, until time.Time) {
	// At least as many new ones as in flight, so re-reading those is not the bulk.
	batch := min(max(4*dest.Concurrency, r.running, minBatch), maxBatch)
	page, err := r.d.store.Due(r.din, until, r.running+batch)
	if err != nil {
		r.d.log.Warn("delivery: reading due deliveries", "din", r.din, "error", err)
		r.pauseUntil = r.d.now().Add(storePause)
		return
	}
	r.queue = r.queue[:0]
	for _, dl := range page {
		if _, busy := r.inflight[dl.ID]; busy || dl.State != storage.StatePending || dl.DIN != r.din {
			continue
		}
		r.queue = append(r.queue, dl)
	}
}

func (r *runner) paused() bool {
	return !r.pauseUntil.IsZero() && r.d.now().Before(r.pauseUntil)
}

// arm sets the timer for when the loop must look again by itself: the end of
// a store back-off, or the next due delivery (bounded by the poll interval).
// While waiting for a free slot, a finishing attempt wakes the loop instead.
func (r *runner) arm(t *time.Timer, dest *Destination, dirty bool) {
	t.Stop()
	now := r.d.now()
	var wait time.Duration
	// At or before now means in flight or waiting for a slot: a completion
	// wakes us.
	soonest := func(at time.Time) {
		if w := at.Sub(now); w > 0 && w < wait {
			wait = w
		}
	}
	switch {
	case r.paused():
		wait = r.pauseUntil.Sub(now)
	case len(r.queue) > 0 && r.sending < dest.Concurrency && r.rateHolds(dest, now):
		wait = r.pace.next.Sub(now) // nothing else wakes us: no attempt is running
	case len(r.queue) > 0 || dirty:
		return
	default:
		wait = r.d.poll
		next, ok := r.d.store.NextDue(r.din)
		switch {
		case !ok:
		case !r.brk.open:
			soonest(next)
		default:
			soonest(next.Add(dest.holdSpan())) // the first held delivery to give up on (or a probe's failure wakes us)
			if r.brk.probe == "" {
				soonest(later(later(next, r.brk.probeAt), r.pace.next))
			}
		}
	}
	t.Reset(wait)
}

func (r *runner) rateHolds(dest *Destination, now time.Time) bool {
	_, holds := r.pace.waiting(dest.Rate, now)
	return holds
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// start runs one attempt in its own goroutine; the loop hears of its steps.
func (r *runner) start(dest *Destination, dl storage.Delivery) {
	r.inflight[dl.ID] = struct{}{}
	r.sending++
	r.running++
	r.d.wg.Add(1)
	go func() {
		defer r.d.wg.Done()
		storeErr := r.d.attempt(dest, &dl, func(a answer) { r.events <- event{id: dl.ID, sent: true, answer: a} })
		r.events <- event{id: dl.ID, storeErr: storeErr}
	}()
}
