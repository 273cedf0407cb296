package caddymodule

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/storage"
)

func init() {
	caddy.RegisterModule(SecondaryPost{})
}

// SecondaryPost copies each request to secondary destinations, named by DIN,
// through the postback app's durable queue. The copies are synced to disk
// before the request goes on, so the primary script and the secondary
// destinations cannot drift apart: if the queue cannot write, the request is
// answered 503 and the sender retries.
type SecondaryPost struct {
	// DINs of the destinations every request is copied to.
	DINs []string `json:"dins,omitempty"`
	// DINField names a form field carrying further DINs (one per
	// occurrence). Only configured DINs are used; a request can never name
	// a URL.
	DINField string `json:"din_field,omitempty"`
	// MaxBody bounds the body read into memory. Default 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`
	// OnlyAccepted sends the copies only if the script answers 2xx. They
	// are still written durably before the script runs, but held; another
	// answer cancels them (state cancelled). Copies held when the process
	// dies are sent after the restart: at-least-once wins.
	OnlyAccepted bool `json:"only_accepted,omitempty"`

	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (SecondaryPost) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.secondary_post",
		New: func() caddy.Module { return new(SecondaryPost) },
	}
}

// Provision checks every DIN against the postback app's destinations.
func (s *SecondaryPost) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	if len(s.DINs) == 0 && s.DINField == "" {
		return errors.New("secondary_post: name at least one DIN or a din_field")
	}
	appIface, err := ctx.App("postback")
	if err != nil {
		return fmt.Errorf("secondary_post: %w", err)
	}
	s.app = appIface.(*App)
	for _, din := range s.DINs {
		if !s.app.HasDestination(din) {
			return fmt.Errorf("secondary_post: DIN %s is not a configured destination (add `destination %s { ... }` to the postback global option)", din, din)
		}
	}
	if s.MaxBody < 0 {
		return errors.New("secondary_post: max_body must not be negative")
	}
	if s.OnlyAccepted && s.app.queueJetStream() {
		return errors.New("secondary_post: only_accepted is not available with the cluster's queue jetstream (held copies need the edge's own queue); use queue badger")
	}
	return nil
}

// ServeHTTP enqueues the copies, then passes the request on unchanged.
func (s *SecondaryPost) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	w, r, done := s.app.beginNote(w, r)
	defer func() { done(err) }()
	payload, contentType, err := capturePayload(r, s.MaxBody)
	if err != nil {
		if d, ok := asDenial(err); ok {
			note(r).Refuse(d.Reason)
			return caddyhttp.Error(d.Status, err)
		}
		note(r).Refuse(handlers.ReasonBodyUnreadable)
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	dins := s.dinsFor(payload)
	if len(dins) == 0 {
		return next.ServeHTTP(w, r)
	}
	if s.OnlyAccepted {
		return s.serveHeld(w, r, next, dins, contentType, payload)
	}
	ds, err := s.app.Enqueue(r.Context(), dins, contentType, payload)
	if err != nil {
		return s.refuse(w, r, dins, err)
	}
	noteDeliveries(r, ds)
	return next.ServeHTTP(w, r)
}

// refuse answers 503 when the copies are not durable, so the sender retries
// and the legacy script never sees a notification the mirror did not get.
// The response is written here rather than returned as a handler error:
// Caddy would log that error with the request URI, and a GET postback's
// query carries passwords.
func (s *SecondaryPost) refuse(w http.ResponseWriter, r *http.Request, dins []string, err error) error {
	s.logger.Error("enqueue failed; answering 503", zap.String("path", r.URL.Path), zap.Strings("dins", dins), zap.Error(err))
	s.app.alertStoreRefused(dins, err)
	note(r).Refuse("queue_unavailable")
	w.Header().Set("Retry-After", "30")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, werr := io.WriteString(w, "postback queue unavailable, retry later\n")
	return werr
}

// serveHeld is only_accepted: the copies are written held, the script
// runs, and its status releases or cancels them.
func (s *SecondaryPost) serveHeld(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, dins []string, contentType string, payload []byte) error {
	held, err := s.app.Hold(r.Context(), dins, contentType, payload)
	if err != nil {
		return s.refuse(w, r, dins, err)
	}
	noteDeliveries(r, held.Deliveries())
	rec := &statusRecorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	status := 0
	// Deferred, so that a panic below cancels rather than leaves them held.
	defer func() {
		if err := held.Resolve(status); err != nil {
			s.logger.Error("only_accepted: copies stay held until the next start, which sends them",
				zap.Int("status", status), zap.Strings("dins", dins), zap.Error(err))
		}
	}()
	err = next.ServeHTTP(rec, r)
	status = rec.answer(err)
	return err
}

// capturePayload returns what a destination will receive: the body of a
// POST (and its content type), or the query string of a GET.
func capturePayload(r *http.Request, max int64) ([]byte, string, error) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return []byte(r.URL.RawQuery), formContentType, nil
	}
	body, err := handlers.CaptureBody(r, max)
	if err != nil {
		return nil, "", err
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = formContentType
	}
	return body, ct, nil
}

const formContentType = "application/x-www-form-urlencoded"

// dinsFor is the configured DINs plus those named in the din_field.
func (s *SecondaryPost) dinsFor(payload []byte) []string {
	dins := s.DINs
	if s.DINField == "" {
		return dins
	}
	form, err := url.ParseQuery(string(payload))
	if err != nil && len(form) == 0 {
		return dins
	}
	for _, din := range form[s.DINField] {
		switch {
		case slices.Contains(dins, din):
		case s.app.HasDestination(din):
			dins = append(slices.Clip(dins), din)
		default:
			// The value is the sender's, not a secret; bound its length.
			if len(din) > storage.MaxDINLen {
				din = din[:storage.MaxDINLen]
			}
			s.logger.Warn("unknown DIN in din_field; skipped", zap.String("field", s.DINField), zap.String("din", din))
		}
	}
	return dins
}

// Interface guards.
var (
	_ caddyhttp.MiddlewareHandler = (*SecondaryPost)(nil)
	_ caddy.Provisioner           = (*SecondaryPost)(nil)
)
