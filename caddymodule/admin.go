package caddymodule

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/fleet"
	"github.com/postbackedge/caddy-postback/report"
	"github.com/postbackedge/caddy-postback/storage"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves the postback routes on Caddy's admin endpoint:
//
//	GET  /postback/stats
//	GET  /postback/deliveries?din=&state=&since=&until=&limit=&cursor=
//	GET  /postback/deliveries/{id}
//	POST /postback/deliveries/{id}/retry
//
// It is mounted by Caddy whenever the module is compiled in; it needs no
// configuration and reads whichever postback app is running.
type AdminAPI struct {
	api *report.API
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.postback",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision sets up the routes. The admin router is provisioned with every
// config load, but it must not hold that config's app: a request looks up
// the running one instead, so it keeps working across reloads.
func (a *AdminAPI) Provision(caddy.Context) error {
	a.api = &report.API{Source: activeSource}
	return nil
}

// Routes returns the one prefix route; report.API dispatches below it.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: report.APIPrefix, Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	err := a.api.ServeHTTP(w, r)
	var re *report.Error
	if errors.As(err, &re) {
		// Caddy's admin endpoint answers APIError as {"error": message}.
		return caddy.APIError{HTTPStatus: re.Status, Err: err, Message: re.Message}
	}
	return err
}

// activeSource returns the postback app of the running config.
func activeSource() (report.Source, error) {
	v, err := caddy.ActiveContext().AppIfConfigured("postback")
	if err != nil {
		return nil, &report.Error{Status: http.StatusServiceUnavailable, Err: err,
			Message: "the postback app is not configured in the running config (add the postback global option)"}
	}
	app, ok := v.(*App)
	if !ok {
		return nil, &report.Error{Status: http.StatusInternalServerError, Message: "postback app has an unexpected type"}
	}
	return app.source()
}

// source is the running app's engine, as the report reads it; it fails
// until Start.
func (a *App) source() (report.Source, error) {
	e := a.engine.Load()
	if e == nil {
		return nil, &report.Error{Status: http.StatusServiceUnavailable, Err: errNotStarted,
			Message: "the postback app has not started (yet)"}
	}
	// The notification log is this edge's own, in a fleet too.
	if f := a.fleet.Load(); f != nil {
		return withNotes{fleetSource{Engine: e.Engine, history: f.History()}, e.store}, nil
	}
	return withNotes{e.Engine, e.store}, nil
}

// withNotes adds the store's notification log to a delivery source.
type withNotes struct {
	report.DeliverySource
	store *storage.Store
}

func (s withNotes) Notifications(f storage.NotificationFilter) ([]storage.Notification, string, error) {
	return s.store.Notifications(f)
}

// fleetSource is what the report reads in a fleet: the fleet's history,
// and this edge's destinations, circuits and retries.
type fleetSource struct {
	*delivery.Engine
	history fleet.History
}

func (s fleetSource) Stats() (map[string]storage.DINStats, error) { return s.history.Stats() }

func (s fleetSource) Hourly(since time.Time) ([]storage.HourBucket, error) {
	return s.history.Hourly(since)
}

func (s fleetSource) List(f storage.Filter) ([]storage.Delivery, string, error) {
	return s.history.List(f)
}

func (s fleetSource) Get(id string) (storage.Delivery, error) { return s.history.Get(id) }

// Interface guards.
var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)
