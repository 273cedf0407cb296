package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/postbackedge/caddy-postback/alert"
	"github.com/postbackedge/caddy-postback/storage"
)

// Alert is the postback app's alert block: webhooks told when deliveries
// are in trouble (see package alert).
type Alert struct {
	Webhooks []AlertWebhook `json:"webhooks,omitempty"`
	// MinInterval is the debounce window per destination and event.
	// Default 10m.
	MinInterval caddy.Duration `json:"min_interval,omitempty"`
	// MaxPendingAge: a destination whose oldest pending delivery is older
	// is reported (pending_too_old). Default 1h.
	MaxPendingAge caddy.Duration `json:"max_pending_age,omitempty"`
}

// AlertWebhook is one endpoint alerts are posted to. URL and header values
// take placeholders ({env.SLACK_WEBHOOK}).
type AlertWebhook struct {
	URL    string      `json:"url"`
	Header http.Header `json:"header,omitempty"`
}

// options checks the block with placeholders resolved; insecure lists the
// http:// webhooks, for a warning.
func (al *Alert) options(repl *caddy.Replacer) (o alert.Options, insecure []string, err error) {
	if len(al.Webhooks) == 0 {
		return o, nil, fmt.Errorf("alert: no webhook")
	}
	if al.MinInterval < 0 || al.MaxPendingAge < 0 {
		return o, nil, fmt.Errorf("alert: durations must not be negative")
	}
	for i, w := range al.Webhooks {
		hook := alert.Webhook{URL: repl.ReplaceAll(w.URL, ""), Header: make(http.Header, len(w.Header))}
		http, err := alert.CheckURL(hook.URL)
		if err != nil {
			return o, nil, fmt.Errorf("alert: webhook %d: %w", i+1, err)
		}
		if http {
			insecure = append(insecure, hook.Redacted())
		}
		for name, values := range w.Header {
			for _, v := range values {
				hook.Header.Add(name, repl.ReplaceAll(v, ""))
			}
		}
		o.Webhooks = append(o.Webhooks, hook)
	}
	o.MinInterval = time.Duration(al.MinInterval)
	o.MaxPendingAge = time.Duration(al.MaxPendingAge)
	return o, insecure, nil
}

// alertSwitch is where the shared engine's events go: the Alerter of the
// config that runs, or nowhere. The debounce memory belongs to the engine,
// so a reload does not send every first alert again.
type alertSwitch struct {
	alerter atomic.Pointer[alert.Alerter]
	memory  *alert.Memory
}

func newAlertSwitch() *alertSwitch { return &alertSwitch{memory: alert.NewMemory()} }

func (s *alertSwitch) notify(ev alert.Event) {
	if a := s.alerter.Load(); a != nil {
		a.Notify(ev)
	}
}

// circuit and finished turn the engine's observed events into alerts.
func (s *alertSwitch) circuit(din string, open bool) {
	kind := alert.CircuitClosed
	if open {
		kind = alert.CircuitOpen
	}
	s.notify(alert.Event{Kind: kind, DIN: din})
}

func (s *alertSwitch) finished(din string, state storage.State) {
	switch state {
	case storage.StateFailed:
		s.notify(alert.Event{Kind: alert.DeliveryFailed, DIN: din})
	case storage.StateSpooled:
		s.notify(alert.Event{Kind: alert.DeliverySpooled, DIN: din})
	}
}

// startAlerts starts this config's Alerter; configure points the engine's
// events at it, and the previous config's stops with that config.
func (a *App) startAlerts(e *pooledEngine) error {
	if a.alertOpts == nil {
		return nil
	}
	o := *a.alertOpts
	o.Memory = e.alerts.memory
	o.Logger = slogFor(a.logger.Named("alert"))
	o.Counters = alertCounters{a.metrics}
	o.UserAgent = userAgent()
	if a.fleetOpts != nil {
		o.Node = a.fleetOpts.Node
	}
	o.Pending = func() (map[string]time.Time, error) {
		stats, err := e.pendingStats()
		if err != nil {
			return nil, err
		}
		oldest := make(map[string]time.Time, len(stats))
		for din, s := range stats {
			oldest[din] = s.OldestPending
		}
		return oldest, nil
	}
	al, err := alert.New(o)
	if err != nil {
		return fmt.Errorf("alert: %w", err)
	}
	al.Start()
	a.alerter = al
	return nil
}

// stopAlerts stops this config's Alerter, and unhooks it unless a newer
// config's already took its place.
func (a *App) stopAlerts(e *pooledEngine) {
	if a.alerter == nil {
		return
	}
	e.alerts.alerter.CompareAndSwap(a.alerter, nil)
	a.alerter.Stop()
}

// alertStoreRefused reports a request answered 503 because the store
// refused the write.
func (a *App) alertStoreRefused(dins []string, err error) {
	e := a.engine.Load()
	if e == nil || errors.Is(err, context.Canceled) {
		// A sender that hung up is not the store's failure.
		return
	}
	ev := alert.Event{Kind: alert.StoreRefusingWrites, Error: err.Error()}
	if len(dins) == 1 {
		ev.DIN = dins[0]
	}
	e.alerts.notify(ev)
}

// alertCounters counts alerts in the caddy_postback_alerts_* metrics.
type alertCounters struct{ m *Metrics }

func (c alertCounters) Sent(k alert.Kind)   { c.m.AlertsSent.WithLabelValues(string(k)).Inc() }
func (c alertCounters) Failed(k alert.Kind) { c.m.AlertsFailed.WithLabelValues(string(k)).Inc() }
func (c alertCounters) Suppressed(k alert.Kind) {
	c.m.AlertsSuppressed.WithLabelValues(string(k)).Inc()
}

// warnInsecureAlerts logs the http:// webhooks once per load.
func warnInsecureAlerts(l *zap.Logger, urls []string) {
	for _, u := range urls {
		l.Warn("alert webhook over plain http: alerts carry no transaction data, but may be read or forged on the way", zap.String("webhook", u))
	}
}
