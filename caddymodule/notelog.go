package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/notelog"
	"github.com/postbackedge/caddy-postback/storage"
)

// configuredApp is the config's postback app if the config has one: the
// notification log lives in its store, and a config of postback_filter
// alone must not open a store for it.
func configuredApp(ctx caddy.Context) *App {
	v, err := ctx.AppIfConfigured("postback")
	if err != nil {
		return nil
	}
	app, _ := v.(*App)
	return app
}

func noteDone(error) {}

// beginNote makes the request's notification log record when this is the
// first postback handler the request passes, and returns the writer and
// request to go on with, and what to call when the chain has returned
// (with its error). Later handlers get the same record from the context
// and a done that does nothing: one record per request.
func (a *App) beginNote(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func(error)) {
	if a == nil || notelog.From(r.Context()) != nil {
		return w, r, noteDone
	}
	e := a.engine.Load()
	if e == nil {
		// Before Start (Caddy starts apps in no fixed order): the request
		// waits for the store further on; it goes unrecorded.
		return w, r, noteDone
	}
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	n := notelog.NewNote(notelog.Request{At: time.Now(), Host: r.Host, Path: r.URL.Path, Method: r.Method, IP: ip, Labels: a.Labels})
	r = r.WithContext(notelog.With(r.Context(), n))
	rec := &statusRecorder{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}}
	return rec, r, func(err error) { e.notes.Finish(n, rec.answer(err), formOf(r)) }
}

// formOf is where the labels are read from: the captured form body, else
// the query.
func formOf(r *http.Request) []byte {
	if c, ok := r.Body.(*handlers.CapturedBody); ok && handlers.CheckFormContentType(r.Header.Get("Content-Type")) == nil {
		return c.Bytes()
	}
	return []byte(r.URL.RawQuery)
}

// note is the request's record, or nil (its methods take nil).
func note(r *http.Request) *notelog.Note { return notelog.From(r.Context()) }

// noteDeliveries adds the copies written for r to its record.
func noteDeliveries(r *http.Request, ds []storage.Delivery) {
	if n := note(r); n != nil {
		for _, d := range ds {
			n.AddDeliveries(d.ID)
		}
	}
}

// noteCounters counts the log's records in the caddy_postback_notifications_* metrics.
type noteCounters struct{ m *Metrics }

func (c noteCounters) Logged(outcome string) { c.m.Notifications.WithLabelValues(outcome).Inc() }
func (c noteCounters) Dropped(reason string) { c.m.NotificationsDropped.WithLabelValues(reason).Inc() }
