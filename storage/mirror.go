package storage

import (
	"errors"
	"fmt"
)

// Mirror records in this store an attempt this edge made at a delivery
// whose queue is elsewhere (a fleet's JetStream queue), so that the edge's
// counts tell what it did as with its own queue: the hourly attempts and
// outcomes, the destination's last success and last error, and once the
// delivery is delivered, spooled or failed, its record (never a payload),
// counted in its state and purged with the retention. d is the record
// after the attempt (ApplyOutcome), a the attempt as recorded (zero:
// none), outErr the outcome's own error. A pending d (a retry) leaves no
// record here: the queue holds it, and any edge may attempt it next.
func (s *Store) Mirror(d Delivery, a Attempt, outErr string) error {
	i, ok := parseID(d.ID)
	if !ok {
		return fmt.Errorf("mirror %q: %w", d.ID, ErrNotFound)
	}
	if _, err := s.submitLazy(&mirrorOp{id: i, d: d, a: a, outErr: outErr}); err != nil {
		return fmt.Errorf("mirror %s: %w", d.ID, err)
	}
	return nil
}

type mirrorOp struct {
	id     id
	d      Delivery
	a      Attempt
	outErr string
}

func (o *mirrorOp) apply(w *wtx) (any, error) {
	d, now := o.d, w.s.now()
	w.countOutcome(&d, o.a, !isZeroAttempt(o.a), o.outErr, now)
	if d.State == StateDelivered || d.State == StateSpooled || d.State == StateFailed {
		// A delivery failed here, retried, and ended here again has a
		// record already: it moves from its old state.
		prev, err := w.record(o.id)
		switch {
		case err == nil:
			w.countState(d.DIN, prev.State, -1)
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
		d.HasPayload = false // the payload is the queue's, never copied here
		w.set(deliveryKey(o.id), encodeRecord(&d))
		w.countState(d.DIN, d.State, 1)
	}
	return nil, nil
}
