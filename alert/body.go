package alert

import (
	"encoding/json"
	"fmt"
	"time"
)

// Alert is what is sent: the latest event of its kind for its destination,
// and how many events it stands for.
type Alert struct {
	Event
	// Count is 1 for an alert sent at once, or the number of events folded
	// into it during a debounce window.
	Count int
	// First is the time of the first event it stands for.
	First time.Time
}

// Body is the JSON posted to a webhook. Text is a sentence that Slack and
// Teams incoming webhooks show as is; the other fields are for machines.
type Body struct {
	Text          string `json:"text"`
	Event         Kind   `json:"event"`
	DIN           string `json:"din,omitempty"`
	Node          string `json:"node"`
	At            string `json:"at"`
	Count         int    `json:"count"`
	FirstAt       string `json:"first_at,omitempty"`
	OldestPending string `json:"oldest_pending,omitempty"`
	PendingFor    string `json:"pending_for,omitempty"`
	Error         string `json:"error,omitempty"`
}

// maxErrorText bounds the error carried, so that an alert stays one line.
const maxErrorText = 300

// Body builds a's body as sent from node.
func (a Alert) Body(node string) Body {
	b := Body{
		Event: a.Kind,
		DIN:   a.DIN,
		Node:  node,
		At:    a.At.UTC().Format(time.RFC3339),
		Count: a.Count,
		Error: truncate(a.Error, maxErrorText),
	}
	if a.Count > 1 {
		b.FirstAt = a.First.UTC().Format(time.RFC3339)
	}
	if !a.OldestPending.IsZero() {
		b.OldestPending = a.OldestPending.UTC().Format(time.RFC3339)
		b.PendingFor = a.At.Sub(a.OldestPending).Round(time.Second).String()
	}
	b.Text = a.text(node, b)
	return b
}

// JSON is the encoded body.
func (a Alert) JSON(node string) ([]byte, error) {
	data, err := json.Marshal(a.Body(node))
	if err != nil {
		return nil, fmt.Errorf("alert body: %w", err)
	}
	return data, nil
}

func (a Alert) text(node string, b Body) string {
	dest := "destination " + a.DIN
	var s string
	switch a.Kind {
	case CircuitOpen:
		s = dest + ": circuit opened, its deliveries are held after failed attempts in a row"
	case CircuitClosed:
		s = dest + ": circuit closed, deliveries resumed"
	case DeliveryFailed:
		s = dest + ": a delivery failed after its whole retry schedule; it is kept for a manual retry"
	case DeliverySpooled:
		s = dest + ": a delivery was spooled (PGP-encrypted file) after its whole retry schedule"
	case PendingTooOld:
		s = fmt.Sprintf("%s: the oldest pending delivery has waited %s (since %s)", dest, b.PendingFor, b.OldestPending)
	case StoreRefusingWrites:
		s = "the postback store refuses writes: notifications are answered 503"
		if a.DIN != "" {
			s += " (" + dest + ")"
		}
		if b.Error != "" {
			s += ": " + b.Error
		}
	default:
		s = dest + ": " + string(a.Kind)
	}
	if a.Count > 1 {
		s += fmt.Sprintf(" — %d times since %s", a.Count, b.FirstAt)
	}
	return "[caddy-postback " + node + "] " + s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
