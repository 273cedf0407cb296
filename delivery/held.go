package delivery

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Held is a notification's copies written durably but held until the
// script has answered (secondary_post's only_accepted): Resolve sends them
// if it accepted the notification, and cancels them otherwise.
type Held struct {
	e       *Engine
	recs    []storage.Delivery
	payload []byte
}

// Hold writes one held delivery per DIN for payload, durably, as Enqueue
// does, but hands nothing to the workers yet. payload must not be modified
// afterwards.
func (e *Engine) Hold(ctx context.Context, dins []string, contentType string, payload []byte) (*Held, error) {
	items := make([]storage.NewDelivery, len(dins))
	for i, din := range dins {
		items[i] = storage.NewDelivery{DIN: din, ContentType: contentType, Payload: payload, Held: true}
	}
	recs, err := e.store.Enqueue(ctx, items)
	if err != nil {
		return nil, err
	}
	for _, din := range dins {
		e.obs.Enqueued(din)
	}
	return &Held{e: e, recs: recs, payload: payload}, nil
}

// Deliveries are the held records, as written.
func (h *Held) Deliveries() []storage.Delivery { return h.recs }

// Accepted is the rule of only_accepted: the script took the notification
// when it answered 2xx.
func Accepted(status int) bool { return status >= 200 && status < 300 }

// Resolve releases the copies when the script's status is accepted (their
// first attempt goes out from memory, at once) and cancels them otherwise.
// An error leaves them held, and the engine's next start releases them:
// a copy too many rather than one lost.
func (h *Held) Resolve(status int) error {
	ids := make([]string, len(h.recs))
	for i, d := range h.recs {
		ids[i] = d.ID
	}
	if !Accepted(status) {
		reason := "the script answered " + statusText(status)
		done, err := h.e.store.Cancel(ids, reason)
		for _, d := range done {
			h.e.obs.Finished(d.DIN, storage.StateCancelled)
		}
		return err
	}
	done, err := h.e.store.Release(ids, time.Time{})
	h.e.handOff(done, h.payload)
	return err
}

func statusText(status int) string {
	if status == 0 {
		return "nothing (the request ended first)"
	}
	return fmt.Sprintf("%d %s", status, http.StatusText(status))
}

// handOff gives released deliveries to the workers, payload in memory.
func (e *Engine) handOff(recs []storage.Delivery, payload []byte) {
	for _, d := range recs {
		if payload != nil {
			e.dispatcher.Offer(d.ID, payload)
		}
		e.dispatcher.Notify(d.DIN)
	}
}

// releaseLeftHeld makes pending whatever a previous run left held: the
// process stopped, or crashed, between writing the copies and learning the
// script's answer. At-least-once wins: the copy goes out.
func (e *Engine) releaseLeftHeld() {
	n := 0
	for {
		ids, err := e.store.HeldIDs(retryPage)
		if err == nil && len(ids) > 0 {
			var done []storage.Delivery
			done, err = e.store.Release(ids, time.Time{})
			n += len(done)
			if err == nil && len(done) == 0 {
				err = fmt.Errorf("%d held deliveries listed but none released", len(ids))
			}
		}
		if err != nil {
			e.log.Error("releasing deliveries left held", "released", n, "error", err)
			return
		}
		if len(ids) == 0 {
			break
		}
	}
	if n > 0 {
		e.log.Warn("deliveries left held by the previous run were released (the script's answer to them is unknown)", "released", n)
	}
}
