// Package handlers holds the request-path logic of caddy-postback: sender
// allowlist, method policy, body capture, the senders' checks behind one
// Verifier (ITNS / ClickBank / JVZoo forms, ClickBank's encrypted JSON,
// Digistore24) and deny decisions.
// It depends on the standard library only, so it is tested without Caddy.
package handlers

import "net/http"

// Reasons a request is refused. They label the caddy_postback_filtered_total
// metric and fill the {postback.deny_reason} placeholder, so the set is fixed
// and small (no user data in a label).
const (
	ReasonMethod            = "method"             // method not allowed
	ReasonIP                = "ip"                 // sender not in the allowlist
	ReasonBodyTooLarge      = "body_too_large"     // body over max_body
	ReasonBodyUnreadable    = "body_unreadable"    // client went away or sent a broken body
	ReasonContentType       = "content_type"       // not the scheme's content type (a form; clickbank_json: JSON)
	ReasonMalformed         = "malformed"          // body does not parse as a form
	ReasonDuplicateField    = "duplicate_field"    // a field name occurs twice
	ReasonTooManyFields     = "too_many_fields"    // more fields than PHP's max_input_vars keeps
	ReasonSignatureMissing  = "signature_missing"  // no <prefix>verify field
	ReasonSignatureMismatch = "signature_mismatch" // no configured secret matches
	ReasonStale             = "stale"              // transtime older than max_age
	ReasonFuture            = "future"             // transtime too far in the future
	ReasonTimeMissing       = "transtime_missing"  // max_age set but transtime absent or not a number
	ReasonReplayInFlight    = "replay_in_flight"   // same notification still being processed
	ReasonDecryptFailed     = "decrypt_failed"     // clickbank_json: no secret decrypts it to a JSON object
	ReasonNotANotification  = "not_a_notification" // clickbank_json: a JSON object without receipt and transactionType
)

// Denial is a decision to refuse a request. It is an error so that callers
// may return it through the usual error paths.
type Denial struct {
	Status int      // HTTP status used when no deny_status is configured
	Reason string   // one of the Reason* constants
	Allow  []string // methods for the Allow header of a 405
}

func (d *Denial) Error() string {
	return "postback: request denied (" + d.Reason + "): " + http.StatusText(d.Status)
}

// Deny is shorthand for a Denial without an Allow header.
func Deny(status int, reason string) *Denial {
	return &Denial{Status: status, Reason: reason}
}
