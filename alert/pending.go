package alert

import (
	"time"
)

// watchPending checks the oldest pending delivery of every destination
// every CheckEvery: the source is the store's in-memory counters plus one
// index seek per destination with a backlog, so it is cheap.
func (a *Alerter) watchPending() {
	defer a.wg.Done()
	t := time.NewTicker(a.o.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			a.checkPending()
		}
	}
}

func (a *Alerter) checkPending() {
	oldest, err := a.o.Pending()
	if err != nil {
		// The store closing at a stop, or a store error that the request
		// path reports on its own (store_refusing_writes).
		a.log.Debug("pending check", "error", err.Error())
		return
	}
	now := a.o.Now()
	for din, at := range oldest {
		if !at.IsZero() && now.Sub(at) > a.o.MaxPendingAge {
			a.Notify(Event{Kind: PendingTooOld, DIN: din, At: now, OldestPending: at})
		}
	}
}
