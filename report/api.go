package report

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// APIPrefix is where the admin API's routes live.
const APIPrefix = "/postback/"

// API serves the JSON admin routes:
//
//	GET  /postback/stats
//	GET  /postback/deliveries?din=&state=&since=&until=&limit=&cursor=
//	GET  /postback/deliveries/{id}
//	GET  /postback/notifications?outcome=&path=&label=&delivery=&since=&until=&limit=&cursor=
//	POST /postback/deliveries/{id}/retry
//	POST /postback/deliveries/retry?din=&state=&since=&until=
//
// Errors are returned, not written, so that the caller can answer them in
// its own format (Caddy's admin endpoint writes {"error": "..."}).
type API struct {
	// Source finds the running app at request time: a config reload
	// replaces it. An *Error it returns is answered as such.
	Source func() (Source, error)
	Now    func() time.Time // default time.Now
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// ServeHTTP answers one admin request under APIPrefix.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	rest, ok := strings.CutPrefix(r.URL.Path, APIPrefix)
	if !ok {
		return &Error{Status: http.StatusNotFound, Message: "not found"}
	}
	parts := strings.Split(rest, "/")
	switch {
	case rest == "stats":
		if err := allow(w, r, http.MethodGet); err != nil {
			return err
		}
		return a.stats(w, r)
	case rest == "deliveries":
		if err := allow(w, r, http.MethodGet); err != nil {
			return err
		}
		return a.list(w, r)
	case rest == "notifications":
		if err := allow(w, r, http.MethodGet); err != nil {
			return err
		}
		return a.notifications(w, r)
	case rest == "deliveries/retry":
		if err := allow(w, r, http.MethodPost); err != nil {
			return err
		}
		return a.retryMatching(w, r)
	case len(parts) == 2 && parts[0] == "deliveries":
		if err := allow(w, r, http.MethodGet); err != nil {
			return err
		}
		return a.get(w, r, parts[1])
	case len(parts) == 3 && parts[0] == "deliveries" && parts[2] == "retry":
		if err := allow(w, r, http.MethodPost); err != nil {
			return err
		}
		return a.retry(w, r, parts[1])
	}
	return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no route %s (see %sstats, %sdeliveries, %snotifications)", r.URL.Path, APIPrefix, APIPrefix, APIPrefix)}
}

func allow(w http.ResponseWriter, r *http.Request, method string) error {
	if r.Method == method || method == http.MethodGet && r.Method == http.MethodHead {
		return nil
	}
	allowed := method
	if method == http.MethodGet {
		allowed = "GET, HEAD"
	}
	w.Header().Set("Allow", allowed)
	return &Error{Status: http.StatusMethodNotAllowed, Message: fmt.Sprintf("method %s not allowed; use %s", r.Method, method)}
}

func (a *API) source() (Source, error) {
	src, err := a.Source()
	if err != nil {
		if _, ok := err.(*Error); ok {
			return nil, err
		}
		return nil, &Error{Status: http.StatusServiceUnavailable, Message: err.Error(), Err: err}
	}
	return src, nil
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) error {
	if len(r.URL.Query()) > 0 {
		return badRequest("stats takes no parameters")
	}
	src, err := a.source()
	if err != nil {
		return err
	}
	st, err := Collect(src, a.now())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

// Collect reads what Summarize needs from src.
func Collect(src Source, now time.Time) (Stats, error) {
	counters, err := src.Stats()
	if err != nil {
		return Stats{}, storeError("stats", err)
	}
	_, day := Windows(now)
	buckets, err := src.Hourly(day)
	if err != nil {
		return Stats{}, storeError("hourly stats", err)
	}
	st := Summarize(src.DINs(), counters, buckets, now)
	markCircuits(&st, src, now)
	return st, nil
}

func (a *API) list(w http.ResponseWriter, r *http.Request) error {
	f, err := ParseFilter(r.URL.Query(), a.now(), DefaultLimit)
	if err != nil {
		return err
	}
	src, err := a.source()
	if err != nil {
		return err
	}
	items, next, err := src.List(f)
	if err != nil {
		return storeError("list", err)
	}
	out := DeliveryList{Deliveries: make([]DeliveryView, 0, len(items)), Count: len(items)}
	for i := range items {
		out.Deliveries = append(out.Deliveries, NewDeliveryView(&items[i]))
	}
	if next != "" {
		out.NextCursor = &next
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *API) get(w http.ResponseWriter, r *http.Request, id string) error {
	if !ValidID(id) {
		return badRequest("id %q: want the lowercase hex id of a delivery", clipText(id, 80))
	}
	if len(r.URL.Query()) > 0 {
		return badRequest("a delivery takes no parameters")
	}
	src, err := a.source()
	if err != nil {
		return err
	}
	d, err := src.Get(id)
	if err != nil {
		return storeError("delivery "+id, err)
	}
	return writeJSON(w, http.StatusOK, NewDeliveryDetail(&d))
}

func (a *API) retry(w http.ResponseWriter, r *http.Request, id string) error {
	if !ValidID(id) {
		return badRequest("id %q: want the lowercase hex id of a delivery", clipText(id, 80))
	}
	src, err := a.source()
	if err != nil {
		return err
	}
	d, err := RetryDelivery(src, id, a.now())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, NewDeliveryView(&d))
}

// BulkRetry is the answer of POST /postback/deliveries/retry.
type BulkRetry struct {
	Retried int `json:"retried"`
}

func (a *API) retryMatching(w http.ResponseWriter, r *http.Request) error {
	f, err := ParseRetryFilter(r.URL.Query(), a.now())
	if err != nil {
		return err
	}
	src, err := a.source()
	if err != nil {
		return err
	}
	n, err := src.RetryMatching(r.Context(), f, a.now())
	if err != nil {
		return storeError(fmt.Sprintf("bulk retry (%d put back before the error)", n), err)
	}
	return writeJSON(w, http.StatusOK, BulkRetry{Retried: n})
}

// RetryDelivery retries id and explains a refusal in the operator's terms.
func RetryDelivery(src Source, id string, now time.Time) (storage.Delivery, error) {
	d, err := src.Retry(id, now)
	if err == nil {
		return d, nil
	}
	e := storeError("retry "+id, err)
	if e.Status == http.StatusConflict {
		// The store's text names the state; say what would be retryable.
		if cur, gerr := src.Get(id); gerr == nil {
			e.Message = conflictReason(&cur)
		}
	}
	return storage.Delivery{}, e
}

func conflictReason(d *storage.Delivery) string {
	switch d.State {
	case storage.StatePending:
		return fmt.Sprintf("delivery %s is already pending (next attempt %s)", d.ID, fmtTime(d.NextAttempt))
	case storage.StateDelivered:
		return fmt.Sprintf("delivery %s was delivered at %s; there is nothing to retry", d.ID, fmtTime(d.Updated))
	case storage.StateSpooled:
		return fmt.Sprintf("delivery %s was spooled to %s and its payload deleted; the spool file is the copy to hand over", d.ID, d.SpoolFile)
	}
	return fmt.Sprintf("delivery %s is %s and cannot be retried", d.ID, d.State)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write(append(b, '\n'))
	return err
}

// clipText shortens s for an error message.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
