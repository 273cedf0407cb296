package storage

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Enqueue writes one pending delivery per item, due now (held, with
// NewDelivery.Held: see Release), and returns once the group commit holding
// them is synced to disk: pending ones in the journal (journaled.go), held
// ones in Badger. The items of one call are written atomically. When ctx
// ends first its error is returned and the deliveries may still be written.
func (s *Store) Enqueue(ctx context.Context, items []NewDelivery) ([]Delivery, error) {
	if len(items) == 0 {
		return nil, nil
	}
	for _, it := range items {
		if err := CheckDIN(it.DIN); err != nil {
			return nil, fmt.Errorf("enqueue: %w", err)
		}
		// Badger refuses a value larger than a value-log file; refusing it
		// here keeps it from failing the whole group commit.
		if int64(len(it.Payload)) >= s.opts.ValueLogFileSize/2 {
			return nil, fmt.Errorf("enqueue: payload of %d bytes is too large", len(it.Payload))
		}
	}
	if err := s.space.enqueue(payloadBytes(items)); err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	if s.journal != nil && !anyHeld(items) {
		return s.enqueueJournaled(ctx, items)
	}
	res, err := s.submit(ctx, &enqueueOp{items: items})
	if err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	return res.([]Delivery), nil
}

func payloadBytes(items []NewDelivery) int64 {
	var n int64
	for _, it := range items {
		n += int64(len(it.Payload))
	}
	return n
}

func anyHeld(items []NewDelivery) bool {
	for _, it := range items {
		if it.Held {
			return true
		}
	}
	return false
}

type enqueueOp struct{ items []NewDelivery }

func (o *enqueueOp) apply(w *wtx) (any, error) {
	now := w.s.now()
	out := make([]Delivery, 0, len(o.items))
	for _, it := range o.items {
		i := w.s.nextID(now)
		d := newRecord(i, it, now)
		if it.Held {
			w.set(heldKey(i), nil)
		} else {
			w.insertDue(d.DIN, now, i)
		}
		w.set(deliveryKey(i), encodeRecord(&d))
		w.set(payloadKey(i), append([]byte(nil), it.Payload...))
		w.countState(d.DIN, d.State, 1)
		out = append(out, d)
	}
	return out, nil
}

// newRecord is the record of a new delivery i made at now: pending and due
// now, or held.
func newRecord(i id, it NewDelivery, now time.Time) Delivery {
	d := Delivery{
		ID:          i.String(),
		DIN:         it.DIN,
		State:       StatePending,
		Created:     i.time(),
		Updated:     now,
		NextAttempt: now,
		ContentType: it.ContentType,
		Size:        len(it.Payload),
		HasPayload:  true,
	}
	if it.Held {
		d.State, d.NextAttempt = StateHeld, time.Time{}
	}
	return d
}

// NewRecord is the record of a new delivery made at now with a fresh id,
// for a queue kept elsewhere than a Store (a fleet's).
func NewRecord(it NewDelivery, now time.Time) Delivery {
	return newRecord(newID(norm(now).UnixNano()), it, norm(now))
}

// nextID issues ids in strictly increasing order, even if the clock steps
// back (lastNs is loaded from the newest record and journal entry at Open),
// to the committer and the journal's enqueues alike.
func (s *Store) nextID(now time.Time) id {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	ns := now.UnixNano()
	if ns <= s.lastNs {
		ns = s.lastNs + 1
	}
	s.lastNs = ns
	return newID(ns)
}

func (w *wtx) insertDue(din string, next time.Time, i id) {
	k := dueKey(din, next, i)
	w.set(k, nil)
	w.hint(dinPrefix(pfxDue, din), k)
}

// record reads and decodes the record of i; ErrNotFound when absent.
func (w *wtx) record(i id) (Delivery, error) {
	v, found, err := w.get(deliveryKey(i))
	if err != nil {
		return Delivery{}, err
	}
	if !found {
		return Delivery{}, fmt.Errorf("delivery %s: %w", i, ErrNotFound)
	}
	return decodeRecord(i, v)
}

// Complete records attempt a (none when a is zero-valued) and applies the
// outcome: pending moves the delivery to out.NextAttempt and keeps the
// payload; delivered and spooled delete the payload and keep the record;
// failed keeps the payload for a manual Retry. Completing a delivery that is
// not pending is ErrConflict; an unknown id is ErrNotFound.
func (s *Store) Complete(id string, a Attempt, out Outcome) (Delivery, error) {
	i, ok := parseID(id)
	if !ok {
		return Delivery{}, fmt.Errorf("complete %q: %w", id, ErrNotFound)
	}
	if !out.State.outcome() {
		return Delivery{}, fmt.Errorf("complete %s: invalid outcome state %q", id, out.State)
	}
	if s.fresh != nil {
		d, found, err := s.completeFresh(i, a, out)
		switch {
		case found && err != nil:
			return Delivery{}, fmt.Errorf("complete %s: %w", id, err)
		case found:
			return d, nil
		}
	}
	res, err := s.submitLazy(&completeOp{id: i, a: a, out: out})
	if err != nil {
		return Delivery{}, fmt.Errorf("complete %s: %w", id, err)
	}
	return res.(Delivery), nil
}

type completeOp struct {
	id  id
	a   Attempt
	out Outcome
}

func isZeroAttempt(a Attempt) bool {
	return a.At.IsZero() && a.Status == 0 && a.Error == "" && a.Duration == 0
}

func attemptOK(a Attempt) bool { return a.Status >= 200 && a.Status < 300 && a.Error == "" }

func attemptErrorText(a Attempt) string {
	if a.Error != "" {
		return a.Error
	}
	return fmt.Sprintf("HTTP %d", a.Status)
}

func (o *completeOp) apply(w *wtx) (any, error) {
	d, err := w.record(o.id)
	if err != nil {
		return nil, err
	}
	if d.State != StatePending {
		return nil, fmt.Errorf("delivery %s is %s, not pending: %w", d.ID, d.State, ErrConflict)
	}
	now := w.s.now()
	oldNext := d.NextAttempt
	a, attempted := ApplyOutcome(&d, o.a, o.out, now)
	w.countOutcome(&d, a, attempted, o.out.Error, now)
	w.del(dueKey(d.DIN, oldNext, o.id))
	switch d.State {
	case StatePending:
		w.insertDue(d.DIN, d.NextAttempt, o.id)
	case StateDelivered, StateSpooled:
		w.del(payloadKey(o.id))
	}
	w.set(deliveryKey(o.id), encodeRecord(&d))
	if d.State != StatePending {
		w.countState(d.DIN, StatePending, -1)
		w.countState(d.DIN, d.State, 1)
	}
	return d, nil
}

// countOutcome counts what an attempt a (none unless attempted) and its
// outcome did to d, now in its new state: the attempt and its success or
// failure, the outcome's own error (outErr) as the destination's last error,
// and a final state, in din's counters and hourly bucket. It is the one home
// of those counts, for a completion here, a mirrored one and an absorbed one.
func (w *wtx) countOutcome(d *Delivery, a Attempt, attempted bool, outErr string, now time.Time) {
	var hc hourCounts
	if attempted {
		hc.Attempts = 1
		if attemptOK(a) {
			hc.Successes = 1
			w.success(d.DIN, a.At)
		} else {
			w.failure(d.DIN, a.At, attemptErrorText(a))
		}
	}
	if outErr != "" {
		// Keep the cause beside the outcome ("HTTP 503; retry schedule
		// exhausted…"): the destination's last error must say what failed.
		text := outErr
		if attempted && !attemptOK(a) {
			text = attemptErrorText(a) + "; " + text
		}
		w.failure(d.DIN, now, text)
	}
	switch d.State {
	case StateDelivered:
		hc.Delivered = 1
	case StateSpooled:
		hc.Spooled = 1
	case StateFailed:
		hc.Failed = 1
	}
	if hc != (hourCounts{}) {
		at := now
		if attempted {
			at = a.At
		}
		w.hourly(d.DIN, at, hc)
	}
}

// ApplyOutcome is the one rule of what an attempt and its outcome do to a
// pending delivery's record, wherever the record lives (this store, a
// fleet's JetStream queue): the attempt appended (its time defaulted to
// now, its error clipped, the oldest dropped past maxAttempts), the last
// error, the new state, the next attempt of a retry (now if unset), the
// payload gone once delivered or spooled. A zero Attempt records none
// (an outcome decided without one). It returns the attempt as recorded,
// and whether there was one.
func ApplyOutcome(d *Delivery, a Attempt, out Outcome, now time.Time) (Attempt, bool) {
	attempted := !isZeroAttempt(a)
	if attempted {
		if a.At.IsZero() {
			a.At = now
		}
		a.At = norm(a.At)
		a.Error = clip(a.Error)
		d.Attempts = append(d.Attempts, a)
		if n := len(d.Attempts); n > maxAttempts {
			d.Attempts = append([]Attempt(nil), d.Attempts[n-maxAttempts:]...)
		}
	}
	d.LastError = clip(out.Error)
	if d.LastError == "" && attempted && !attemptOK(a) {
		d.LastError = clip(attemptErrorText(a))
	}
	d.State = out.State
	d.Updated = now
	switch out.State {
	case StatePending:
		d.NextAttempt = norm(out.NextAttempt)
		if d.NextAttempt.IsZero() {
			d.NextAttempt = now
		}
	case StateDelivered, StateSpooled:
		d.NextAttempt = time.Time{}
		d.HasPayload = false
		if out.State == StateSpooled {
			d.SpoolFile = out.SpoolFile
		}
	default:
		d.NextAttempt = time.Time{}
	}
	return a, attempted
}

// Retry makes a failed delivery (or a spooled one whose payload still
// exists) pending again, due now. Other states are ErrConflict.
func (s *Store) Retry(id string, now time.Time) (Delivery, error) {
	i, ok := parseID(id)
	if !ok {
		return Delivery{}, fmt.Errorf("retry %q: %w", id, ErrNotFound)
	}
	if s.fresh != nil {
		err := s.read(func() error {
			if _, ok := s.fresh.get(i); ok {
				return fmt.Errorf("delivery is pending: %w", ErrConflict)
			}
			return nil
		})
		if err != nil {
			return Delivery{}, fmt.Errorf("retry %s: %w", id, err)
		}
	}
	res, err := s.submit(context.Background(), &retryOp{id: i, now: norm(now)})
	if err != nil {
		return Delivery{}, fmt.Errorf("retry %s: %w", id, err)
	}
	return res.(Delivery), nil
}

type retryOp struct {
	id  id
	now time.Time
}

func (o *retryOp) apply(w *wtx) (any, error) { return retryOne(w, o.id, o.now) }

// RetryMany is Retry for several deliveries in one write: those that are
// not retryable (any more) or gone are skipped, not an error, so that a
// bulk retry can be repeated. It returns the deliveries it made pending.
func (s *Store) RetryMany(ids []string, now time.Time) ([]Delivery, error) {
	o := &retryManyOp{now: norm(now)}
	for _, s := range ids {
		if i, ok := parseID(s); ok {
			o.ids = append(o.ids, i)
		}
	}
	if len(o.ids) == 0 {
		return nil, nil
	}
	res, err := s.submit(context.Background(), o)
	if err != nil {
		return nil, fmt.Errorf("retry %d deliveries: %w", len(o.ids), err)
	}
	return res.([]Delivery), nil
}

type retryManyOp struct {
	ids []id
	now time.Time
}

func (o *retryManyOp) apply(w *wtx) (any, error) {
	var out []Delivery
	for _, i := range o.ids {
		d, err := retryOne(w, i, o.now)
		switch {
		case err == nil:
			out = append(out, d)
		case errors.Is(err, ErrConflict), errors.Is(err, ErrNotFound):
		default:
			return nil, err
		}
	}
	return out, nil
}

// retryOne makes the delivery i pending, due at now (zero: the store's
// clock), if Retryable.
func retryOne(w *wtx, i id, now time.Time) (Delivery, error) {
	d, err := w.record(i)
	if err != nil {
		return Delivery{}, err
	}
	switch {
	case d.Retryable():
	case d.State == StateSpooled:
		return Delivery{}, fmt.Errorf("delivery %s was spooled and its payload deleted: %w", d.ID, ErrConflict)
	default:
		return Delivery{}, fmt.Errorf("delivery %s is %s: %w", d.ID, d.State, ErrConflict)
	}
	if now.IsZero() {
		now = w.s.now()
	}
	w.countState(d.DIN, d.State, -1)
	w.countState(d.DIN, StatePending, 1)
	d.State = StatePending
	d.NextAttempt = now
	d.Updated = now
	w.set(deliveryKey(i), encodeRecord(&d))
	w.insertDue(d.DIN, now, i)
	return d, nil
}
