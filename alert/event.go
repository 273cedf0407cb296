package alert

import "time"

// Kind names what happened; it is the body's "event" and a metric label.
type Kind string

// The kinds of event.
const (
	CircuitOpen         Kind = "circuit_open"
	CircuitClosed       Kind = "circuit_closed"
	DeliveryFailed      Kind = "delivery_failed"
	DeliverySpooled     Kind = "delivery_spooled"
	PendingTooOld       Kind = "pending_too_old"
	StoreRefusingWrites Kind = "store_refusing_writes"
)

// Kinds lists every kind, for documentation and metrics.
var Kinds = []Kind{CircuitOpen, CircuitClosed, DeliveryFailed, DeliverySpooled, PendingTooOld, StoreRefusingWrites}

// Event is one occurrence. It holds no payload data: only the destination,
// the time and facts about the queue.
type Event struct {
	Kind Kind
	// DIN is the destination; empty for store_refusing_writes when a
	// request named several.
	DIN string
	// At is when it happened; zero means when the Alerter took it.
	At time.Time
	// OldestPending is the oldest pending delivery's time (pending_too_old).
	OldestPending time.Time
	// Error says why (store_refusing_writes): the store's error, which never
	// holds field values.
	Error string
}

// key is what debouncing groups by.
type key struct {
	din  string
	kind Kind
}

func (e Event) key() key { return key{e.DIN, e.Kind} }
