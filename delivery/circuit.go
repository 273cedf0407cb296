package delivery

import (
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// The runner's side of the circuit breaker (breaker.go): what its loop does
// while the circuit is open, and how it reports the state.

// dispatchOpen is dispatch while the circuit is open. Deliveries held past
// their span go to the spool, then one probe at a time tests the destination;
// everything else stays pending, untouched.
func (r *runner) dispatchOpen(dest *Destination, dirty bool) bool {
	if r.paused() || r.d.stopped() {
		return dirty
	}
	for r.running < dest.Concurrency+maxRecording {
		if len(r.queue) == 0 {
			if !dirty {
				break
			}
			dirty = false
			r.fetch(dest, r.giveUpBefore(dest))
			if len(r.queue) == 0 {
				break
			}
		}
		dl := r.queue[0]
		r.queue[0] = storage.Delivery{}
		r.queue = r.queue[1:]
		if _, busy := r.inflight[dl.ID]; busy {
			continue // the probe
		}
		r.startGiveUp(dest, dl)
	}
	if r.probeNow.Swap(false) && r.brk.probe == "" {
		r.brk.probeAt = r.d.now()
	}
	if len(r.queue) == 0 && r.sending < dest.Concurrency && r.brk.mayProbe(r.d.now()) {
		if dl, ok := r.firstDue(); ok && r.paced(dest, dl.ID) {
			r.brk.probe = dl.ID
			r.start(dest, dl)
		}
	}
	return dirty
}

// giveUpBefore is the due time before which held deliveries are given up:
// they have waited their schedule's span, and a probe that started after
// they became due has failed. The second condition keeps a short schedule, or a manual retry of
// a one-attempt one, from being given up before a probe had its chance.
func (r *runner) giveUpBefore(dest *Destination) time.Time {
	t := r.d.now().Add(-dest.holdSpan())
	if r.brk.failedStart.Before(t) {
		t = r.brk.failedStart
	}
	return t
}

// firstDue is the earliest due delivery not in flight.
func (r *runner) firstDue() (storage.Delivery, bool) {
	page, err := r.d.store.Due(r.din, r.d.now(), r.running+1)
	if err != nil {
		r.d.log.Warn("delivery: reading due deliveries", "din", r.din, "error", err)
		r.pauseUntil = r.d.now().Add(storePause)
		return storage.Delivery{}, false
	}
	for _, dl := range page {
		if _, busy := r.inflight[dl.ID]; !busy && dl.State == storage.StatePending && dl.DIN == r.din {
			return dl, true
		}
	}
	return storage.Delivery{}, false
}

// startGiveUp spools (or fails) a held delivery in its own goroutine; it
// takes no destination slot, as nothing is sent.
func (r *runner) startGiveUp(dest *Destination, dl storage.Delivery) {
	r.inflight[dl.ID] = struct{}{}
	r.running++
	since := r.brk.since
	r.d.wg.Add(1)
	go func() {
		defer r.d.wg.Done()
		storeErr := r.d.giveUp(dest, &dl, since)
		r.events <- event{id: dl.ID, storeErr: storeErr}
	}()
}

// circuitChanged logs and reports the breaker's new state. The page read
// for the old state is dropped: held deliveries are not all due for a
// give-up, and give-up candidates are attempted normally once closed.
func (r *runner) circuitChanged(open bool, why string) {
	r.queue = nil
	now := r.d.now()
	if open {
		r.openSince.Store(now.UnixNano())
		r.d.log.Warn("delivery: destination failing, circuit open: its deliveries are held and one at a time probes it",
			"din", r.din, "reason", why, "failed_in_a_row", r.brk.streak, "next_probe", r.brk.probeAt,
			"give_up_after", r.cur.holdSpan().String())
	} else {
		since := time.Unix(0, r.openSince.Swap(0))
		r.d.log.Info("delivery: circuit closed", "din", r.din, "reason", why,
			"open_for", now.Sub(since).Round(time.Millisecond).String())
	}
	r.d.obs.Circuit(r.din, open)
}

// ProbeNow is for an operator's manual retry: if din's circuit is open, its
// next probe goes out at once instead of at the end of the probe wait (or of
// a Retry-After). It never blocks; with the circuit closed it only wakes the
// loop, like Notify.
func (d *Dispatcher) ProbeNow(din string) {
	d.mu.Lock()
	r := d.runners[din]
	d.mu.Unlock()
	if r == nil {
		return
	}
	r.probeNow.Store(true)
	r.poke()
}

// CircuitOpen reports whether din's circuit is open, and since when.
func (d *Dispatcher) CircuitOpen(din string) (since time.Time, open bool) {
	d.mu.Lock()
	r := d.runners[din]
	d.mu.Unlock()
	if r == nil {
		return time.Time{}, false
	}
	ns := r.openSince.Load()
	if ns == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}
