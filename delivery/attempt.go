package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// attempt makes one attempt of dl at dest and records its outcome. It calls
// sent exactly once, as soon as the destination is done with (before the
// spool and the store write), with what it answered: a synced store write
// then holds no destination slot, and the circuit breaker hears of a failure
// before the next attempt starts. It reports whether the store failed, so
// that the DIN's loop backs off instead of spinning on a delivery it cannot
// progress.
func (d *Dispatcher) attempt(dest *Destination, dl *storage.Delivery, sent func(answer)) (storeErr bool) {
	reported := false
	report := func(a answer) {
		if !reported {
			reported = true
			sent(a)
		}
	}
	defer report(answer{})
	payload, ok, storeErr := d.payload(dest, dl, storage.Attempt{At: d.now(), Error: "payload missing"})
	if !ok {
		return storeErr
	}

	n := len(dl.Attempts) + 1
	s := d.send(dest, dl, payload, n)
	if s.cancelled {
		return false // left pending: at-least-once, retried after restart
	}
	a := answer{result: s.result, started: s.attempt.At}
	if s.hasRA {
		a.retryAfter = min(s.retryAfter, d.maxRetryAfter)
	}
	report(a)
	d.obs.Attempted(dest.DIN, s.result, s.attempt.Duration)
	out := d.decide(dest, dl, n, s, payload)
	if out.State == storage.StatePending {
		d.log.Debug("delivery: attempt failed, will retry", "din", dest.DIN, "id", dl.ID,
			"attempt", n, "status", s.attempt.Status, "error", s.attempt.Error, "next_attempt", out.NextAttempt)
	}
	return d.complete(dest, dl, s.attempt, out)
}

// answer is what the destination said to an attempt, for the circuit breaker.
type answer struct {
	result     string        // Result*, "" when nothing was sent
	retryAfter time.Duration // its Retry-After, bounded; 0 without
	started    time.Time     // when the attempt was sent
}

// decide turns an attempt into the delivery's next state.
func (d *Dispatcher) decide(dest *Destination, dl *storage.Delivery, n int, s sent, payload []byte) storage.Outcome {
	if s.result == ResultSuccess {
		return storage.Outcome{State: storage.StateDelivered}
	}
	if n < len(dest.Schedule) {
		end := d.now()
		next := nextAttempt(end, dest.Schedule[n], d.jitter, s.retryAfter, s.hasRA, d.maxRetryAfter)
		return storage.Outcome{State: storage.StatePending, NextAttempt: next}
	}
	return d.exhaust(dest, dl, payload, fmt.Sprintf("retry schedule exhausted after %d attempts", n))
}

// exhaust is the outcome of a delivery that gets no more attempts: spooled,
// or failed (why) when the destination has no spool.
func (d *Dispatcher) exhaust(dest *Destination, dl *storage.Delivery, payload []byte, why string) storage.Outcome {
	if dest.Spool == nil {
		return storage.Outcome{State: storage.StateFailed, Error: why}
	}
	path, err := dest.Spool.Spool(dest.DIN, dl.ID, payload)
	if err != nil {
		// Failed keeps the payload in the store for a manual retry.
		return storage.Outcome{State: storage.StateFailed,
			Error: clip(redact("spool: "+err.Error(), dest.URL, payload, d.sensitive))}
	}
	return storage.Outcome{State: storage.StateSpooled, SpoolFile: path}
}

// payload is what dl sends: handed over at enqueue, or read from the store.
// Without it (ok false) the store no longer holds dl for this edge (a
// fleet's queue), or a missing payload has made the delivery failed,
// recording a (zero: none), since a pending delivery without payload cannot
// be sent and must be visible to an operator rather than retried forever;
// storeErr reports a store that could not be read or written.
func (d *Dispatcher) payload(dest *Destination, dl *storage.Delivery, a storage.Attempt) (payload []byte, ok, storeErr bool) {
	if s, ok := d.store.(AttemptStarter); ok && !s.AttemptStarted(dl.ID) {
		d.fresh.take(dl.ID)
		return nil, false, false
	}
	if p, ok := d.fresh.take(dl.ID); ok {
		return p, true, false
	}
	p, err := d.store.Payload(dl.ID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil, false, d.complete(dest, dl, a, storage.Outcome{State: storage.StateFailed, Error: "payload missing from store"})
	case err != nil:
		d.log.Warn("delivery: reading payload", "din", dest.DIN, "id", dl.ID, "error", err)
		return nil, false, true
	}
	return p, true, false
}

// giveUp ends a delivery that an open circuit (breaker.go) has held past its
// span: spooled, or failed without a spool, and no further attempt.
func (d *Dispatcher) giveUp(dest *Destination, dl *storage.Delivery, since time.Time) (storeErr bool) {
	payload, ok, storeErr := d.payload(dest, dl, storage.Attempt{})
	if !ok {
		return storeErr
	}
	why := fmt.Sprintf("destination failing since %s (circuit open); held for its whole retry schedule after %d attempts",
		since.UTC().Format(time.RFC3339), len(dl.Attempts))
	out := d.exhaust(dest, dl, payload, why)
	if out.Error == "" {
		out.Error = why // the record says why it was spooled without the attempts
	}
	return d.complete(dest, dl, storage.Attempt{}, out)
}

// complete records the attempt and outcome, and tells the observer about a
// final state.
func (d *Dispatcher) complete(dest *Destination, dl *storage.Delivery, a storage.Attempt, out storage.Outcome) (storeErr bool) {
	_, err := d.store.Complete(dl.ID, a, out)
	switch {
	case errors.Is(err, storage.ErrConflict), errors.Is(err, storage.ErrNotFound):
		// Changed or removed meanwhile (e.g. by an operator): nothing to do.
		d.log.Info("delivery: record changed during attempt", "din", dest.DIN, "id", dl.ID, "error", err)
		return false
	case err != nil:
		// Left pending: the attempt is repeated once the store recovers.
		d.log.Warn("delivery: recording attempt", "din", dest.DIN, "id", dl.ID, "state", out.State, "error", err)
		return true
	}
	if out.State == storage.StatePending {
		return false
	}
	level := slog.LevelDebug
	switch out.State {
	case storage.StateSpooled:
		level = slog.LevelInfo
	case storage.StateFailed:
		level = slog.LevelWarn
	}
	n := len(dl.Attempts)
	if !a.At.IsZero() {
		n++
	}
	d.log.Log(context.Background(), level, "delivery: finished", "din", dest.DIN, "id", dl.ID, "state", out.State,
		"attempts", n, "status", a.Status, "error", a.Error, "spool_file", out.SpoolFile, "last_error", out.Error)
	d.obs.Finished(dest.DIN, out.State)
	return false
}
