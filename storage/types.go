// Package storage is the durable side of caddy-postback: the delivery queue
// and its records in an embedded Badger database, the replay (dedupe) records,
// and the PGP-encrypted spool for deliveries that exhausted their retries.
// It depends on the standard library, Badger and go-crypto only.
package storage

import (
	"errors"
	"time"
)

// State is where a delivery stands.
type State string

const (
	StatePending   State = "pending"   // waiting for its next attempt
	StateDelivered State = "delivered" // a 2xx was received; payload deleted
	StateSpooled   State = "spooled"   // retries exhausted; encrypted file written; payload deleted
	StateFailed    State = "failed"    // retries exhausted, no spool (or spool error); payload kept
	// With only_accepted: written before the script runs, sent only once it
	// has answered 2xx (then pending), cancelled otherwise.
	StateHeld      State = "held"      // waiting for the script's answer; payload kept
	StateCancelled State = "cancelled" // the script did not accept the notification; payload deleted
)

// Valid reports whether s is one of the six states.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateDelivered, StateSpooled, StateFailed, StateHeld, StateCancelled:
		return true
	}
	return false
}

// outcome reports whether an attempt may end in s (Complete).
func (s State) outcome() bool {
	switch s {
	case StatePending, StateDelivered, StateSpooled, StateFailed:
		return true
	}
	return false
}

// Attempt is one try at a destination.
type Attempt struct {
	At       time.Time     `json:"at"`
	Status   int           `json:"status,omitempty"` // HTTP status, 0 when no response
	Error    string        `json:"error,omitempty"`  // transport error or short reason; never payload data
	Duration time.Duration `json:"duration"`
}

// Delivery is the record of one notification copied to one destination.
// It never holds the payload; see Store.Payload.
type Delivery struct {
	ID          string    `json:"id"` // sortable by creation time
	DIN         string    `json:"din"`
	State       State     `json:"state"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	NextAttempt time.Time `json:"next_attempt,omitzero"` // zero unless pending
	Attempts    []Attempt `json:"attempts,omitempty"`
	ContentType string    `json:"content_type,omitempty"`
	Size        int       `json:"size"`                 // payload bytes
	HasPayload  bool      `json:"has_payload"`          // false once delivered or spooled
	SpoolFile   string    `json:"spool_file,omitempty"` // set when spooled
	LastError   string    `json:"last_error,omitempty"` // e.g. a spool write error
	// Node is the edge that holds the delivery, in a fleet's history;
	// empty in an edge's own store.
	Node string `json:"node,omitempty"`
}

// Retryable is the one rule of a manual retry: a failed delivery, or a
// spooled one whose payload is still stored, may be made pending again.
func (d *Delivery) Retryable() bool {
	return d.State == StateFailed || d.State == StateSpooled && d.HasPayload
}

// LastAttempt returns the most recent attempt, if any.
func (d *Delivery) LastAttempt() (Attempt, bool) {
	if len(d.Attempts) == 0 {
		return Attempt{}, false
	}
	return d.Attempts[len(d.Attempts)-1], true
}

// NewDelivery is what the request path enqueues.
type NewDelivery struct {
	DIN         string
	ContentType string
	Payload     []byte // exactly what will be posted (body, or form string for GET)
	// Held writes the delivery held rather than pending: see Store.Release.
	Held bool
}

// Outcome is what the delivery workers decided after an attempt.
type Outcome struct {
	State       State     // pending (retry), delivered, spooled or failed
	NextAttempt time.Time // with StatePending
	SpoolFile   string    // with StateSpooled
	Error       string    // recorded as LastError (e.g. a spool write error)
}

// Filter selects deliveries for List. Zero fields do not filter.
type Filter struct {
	DIN    string
	State  State
	Since  time.Time // created at or after
	Until  time.Time // created before
	Limit  int       // default 50, at most 1000
	Cursor string    // from a previous page
	// Node selects one edge's deliveries in a fleet's history; an edge's
	// own store holds only its own and ignores it.
	Node string
}

// DINStats are the counts for one destination.
type DINStats struct {
	Pending       int       `json:"pending"`
	Delivered     int       `json:"delivered"`
	Failed        int       `json:"failed"`
	Spooled       int       `json:"spooled"`
	Held          int       `json:"held"`
	Cancelled     int       `json:"cancelled"`
	OldestPending time.Time `json:"oldest_pending,omitzero"`
	LastSuccess   time.Time `json:"last_success,omitzero"`
	LastError     time.Time `json:"last_error_at,omitzero"`
	LastErrorText string    `json:"last_error,omitempty"`
}

// HourBucket counts attempt outcomes of one destination in one UTC hour.
type HourBucket struct {
	Hour      time.Time `json:"hour"`
	DIN       string    `json:"din"`
	Attempts  int       `json:"attempts"`
	Successes int       `json:"successes"` // attempts answered with a 2xx
	Delivered int       `json:"delivered"`
	Failed    int       `json:"failed"`
	Spooled   int       `json:"spooled"`
}

var (
	// ErrNotFound: no delivery with that id.
	ErrNotFound = errors.New("delivery not found")
	// ErrConflict: the delivery is not in a state that allows the operation.
	ErrConflict = errors.New("delivery state does not allow this")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store closed")
	// ErrBadCursor: a List cursor that this store did not produce.
	ErrBadCursor = errors.New("malformed cursor")
)
