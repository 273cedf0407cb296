package report

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Error is an error with the HTTP status it should be answered with. Its
// message is meant for the client: it never quotes payload data.
type Error struct {
	Status  int
	Message string
	Err     error // the cause, for logs; may be nil
}

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// storeError maps the store's errors to statuses.
func storeError(what string, err error) *Error {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Message: what + ": no such delivery", Err: err}
	case errors.Is(err, storage.ErrBadCursor):
		return &Error{Status: http.StatusBadRequest, Message: "cursor: not a cursor from a previous page (or from another filter)", Err: err}
	case errors.Is(err, storage.ErrConflict):
		return &Error{Status: http.StatusConflict, Message: what + ": " + err.Error(), Err: err}
	case errors.Is(err, storage.ErrClosed):
		return &Error{Status: http.StatusServiceUnavailable, Message: what + ": the store is closed (Caddy is stopping or reloading)", Err: err}
	}
	return &Error{Status: http.StatusInternalServerError, Message: what + ": " + err.Error(), Err: err}
}

const (
	// DefaultLimit and MaxLimit bound a listing page, as the store does.
	DefaultLimit = 50
	MaxLimit     = 1000
	maxIDLen     = 64
)

// ValidID reports whether s looks like a delivery id: lowercase hex. The
// store decides whether it exists.
func ValidID(s string) bool {
	if s == "" || len(s) > maxIDLen {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// filterParams are the query parameters ParseFilter reads.
var filterParams = []string{"din", "state", "node", "since", "until", "limit", "cursor"}

// ParseFilter reads din, state, node (a fleet's edge), since, until, limit and cursor from q; an
// empty value does not filter. A parameter outside these and extra is an
// error, so that a typo is not silently ignored. now resolves relative
// times such as since=24h.
func ParseFilter(q url.Values, now time.Time, defaultLimit int, extra ...string) (storage.Filter, error) {
	f := storage.Filter{Limit: defaultLimit}
	if err := checkParams(q, filterParams, extra...); err != nil {
		return f, err
	}
	if v := q.Get("din"); v != "" {
		if err := storage.CheckDIN(v); err != nil {
			return f, badRequest("din: %v", err)
		}
		f.DIN = v
	}
	if v := q.Get("node"); v != "" {
		if err := storage.CheckNode(v); err != nil {
			return f, badRequest("%v", err)
		}
		f.Node = v
	}
	if v := q.Get("state"); v != "" {
		st := storage.State(v)
		if !st.Valid() {
			return f, badRequest("state %q: want pending, delivered, failed, spooled, held or cancelled", v)
		}
		f.State = st
	}
	var err error
	if f.Since, f.Until, err = parseRange(q, now); err != nil {
		return f, err
	}
	f.Limit, f.Cursor, err = parsePage(q, f.Limit)
	return f, err
}

// checkParams refuses a parameter of q that is not in known or extra, or
// given twice, so that a typo is not silently ignored.
func checkParams(q url.Values, known []string, extra ...string) error {
	for name, vals := range q {
		if !slices.Contains(known, name) && !slices.Contains(extra, name) {
			return badRequest("unknown parameter %q (known: %s)", name, strings.Join(known, ", "))
		}
		if len(vals) > 1 {
			return badRequest("parameter %q given %d times", name, len(vals))
		}
	}
	return nil
}

// parseRange reads since and until (times, or ages such as 24h from now);
// since must come before until.
func parseRange(q url.Values, now time.Time) (since, until time.Time, err error) {
	if since, err = parseTime("since", q.Get("since"), now); err != nil {
		return since, until, err
	}
	if until, err = parseTime("until", q.Get("until"), now); err != nil {
		return since, until, err
	}
	if !since.IsZero() && !until.IsZero() && !since.Before(until) {
		return since, until, badRequest("since (%s) must be before until (%s)", fmtTime(since), fmtTime(until))
	}
	return since, until, nil
}

// parsePage reads limit (else def) and cursor.
func parsePage(q url.Values, def int) (limit int, cursor string, err error) {
	limit = def
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			return limit, "", badRequest("limit %q: want an integer from 1 to %d", v, MaxLimit)
		}
		limit = n
	}
	if v := q.Get("cursor"); v != "" {
		if len(v) > 512 {
			return limit, "", badRequest("cursor: too long")
		}
		cursor = v
	}
	return limit, cursor, nil
}

// timeLayouts are accepted besides RFC 3339; without a zone they are UTC.
// The second is what an HTML datetime-local input sends.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"}

// parseTime reads an absolute time, or a duration meaning that long before now.
func parseTime(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, badRequest("%s %q: want an RFC 3339 time (2006-01-02T15:04:05Z), a date (2006-01-02) or a duration ago (24h)", name, v)
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// retryParams are what a bulk retry filters on: a listing's filter without
// its paging.
var retryParams = []string{"din", "state", "since", "until"}

// ParseRetryFilter reads a bulk retry's din, state (failed or spooled;
// empty: both), since and until. Anything else is an error, limit and
// cursor included: a bulk retry takes every page.
func ParseRetryFilter(q url.Values, now time.Time) (storage.Filter, error) {
	for name := range q {
		if !slices.Contains(retryParams, name) {
			return storage.Filter{}, badRequest("unknown parameter %q (a bulk retry takes %s)", name, strings.Join(retryParams, ", "))
		}
	}
	f, err := ParseFilter(q, now, 0)
	if err != nil {
		return f, err
	}
	if f.State != "" && f.State != storage.StateFailed && f.State != storage.StateSpooled {
		return f, badRequest("state %q: only failed and spooled deliveries are retried", f.State)
	}
	return f, nil
}
