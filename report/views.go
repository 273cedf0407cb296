package report

import (
	"strconv"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// DeliveryView is one delivery as the admin API lists it. It never carries
// the payload, only its size.
type DeliveryView struct {
	ID            string        `json:"id"`
	DIN           string        `json:"din"`
	Node          string        `json:"node,omitempty"` // the edge that took the notification, in a fleet
	State         storage.State `json:"state"`
	Created       time.Time     `json:"created"`
	Updated       time.Time     `json:"updated"`
	Attempts      int           `json:"attempts"`
	NextAttempt   *time.Time    `json:"next_attempt"`    // null unless pending
	LastAttemptAt *time.Time    `json:"last_attempt_at"` // null before the first attempt
	LastStatus    int           `json:"last_status"`     // HTTP status of the last attempt, 0 if none
	LastError     string        `json:"last_error"`      // the last attempt's error, or why the delivery stopped; "" once delivered
	// Reason is why the delivery ended as it did, when that is more than its
	// last attempt's error, e.g. "retry schedule exhausted after 8 attempts"
	// or a spool write error.
	Reason      string `json:"reason,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        int    `json:"size"`
	HasPayload  bool   `json:"has_payload"`
	SpoolFile   string `json:"spool_file,omitempty"`
	Retryable   bool   `json:"retryable"` // POST …/retry would be accepted
}

// AttemptView is one entry of a delivery's attempt history.
type AttemptView struct {
	N          int       `json:"n"` // 1-based; counts only the attempts still kept
	At         time.Time `json:"at"`
	Status     int       `json:"status"` // 0 when there was no HTTP response
	Error      string    `json:"error,omitempty"`
	DurationMS float64   `json:"duration_ms"`
	OK         bool      `json:"ok"`
}

// DeliveryDetail is a delivery with its attempt history, oldest first.
type DeliveryDetail struct {
	DeliveryView
	History []AttemptView `json:"attempt_history"`
}

// DeliveryList is a page of the listing, newest first.
type DeliveryList struct {
	Deliveries []DeliveryView `json:"deliveries"`
	Count      int            `json:"count"`
	NextCursor *string        `json:"next_cursor"` // null on the last page
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// NewDeliveryView turns a record into its API view.
func NewDeliveryView(d *storage.Delivery) DeliveryView {
	v := DeliveryView{
		ID:          d.ID,
		DIN:         d.DIN,
		Node:        d.Node,
		State:       d.State,
		Created:     d.Created.UTC(),
		Updated:     d.Updated.UTC(),
		Attempts:    len(d.Attempts),
		ContentType: d.ContentType,
		Size:        d.Size,
		HasPayload:  d.HasPayload,
		SpoolFile:   d.SpoolFile,
		Retryable:   d.Retryable(),
	}
	if d.State == storage.StatePending {
		v.NextAttempt = timePtr(d.NextAttempt)
	}
	if a, ok := d.LastAttempt(); ok {
		v.LastAttemptAt = timePtr(a.At)
		v.LastStatus = a.Status
		if !attemptOK(a) {
			v.LastError = attemptText(a)
		}
	}
	switch {
	case d.State == storage.StateDelivered:
		v.LastError = "" // history, not a reason: the delivery went through
	case v.LastError == "":
		v.LastError = d.LastError
	case d.LastError != v.LastError && d.State != storage.StatePending:
		// A pending delivery is back in the queue: how it last ended is history.
		v.Reason = d.LastError
	}
	return v
}

// NewDeliveryDetail adds the attempt history to the view.
func NewDeliveryDetail(d *storage.Delivery) DeliveryDetail {
	det := DeliveryDetail{DeliveryView: NewDeliveryView(d), History: make([]AttemptView, 0, len(d.Attempts))}
	for i, a := range d.Attempts {
		det.History = append(det.History, AttemptView{
			N:          i + 1,
			At:         a.At.UTC(),
			Status:     a.Status,
			Error:      a.Error,
			DurationMS: float64(a.Duration.Microseconds()) / 1000,
			OK:         attemptOK(a),
		})
	}
	return det
}

func attemptOK(a storage.Attempt) bool { return a.Status >= 200 && a.Status <= 299 && a.Error == "" }

// attemptText is an attempt's outcome in a few words.
func attemptText(a storage.Attempt) string {
	switch {
	case a.Error != "":
		return a.Error
	case a.Status != 0:
		return "HTTP " + strconv.Itoa(a.Status)
	}
	return "no response"
}
