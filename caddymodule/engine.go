package caddymodule

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/notelog"
	"github.com/postbackedge/caddy-postback/report"
	"github.com/postbackedge/caddy-postback/storage"
)

// enginePool shares one store and one set of workers per storage folder
// across config reloads: Caddy starts the new config before it stops the old
// one, and Badger allows one opener per folder.
var enginePool = caddy.NewUsagePool()

// pooledEngine is what the pool holds for a folder: the delivery engine,
// and the Badger store under it, which also keeps the replay records.
type pooledEngine struct {
	*delivery.Engine
	dir    string
	keyID  string
	store  *storage.Store
	logger *zap.Logger
	// configuredBy is the app whose destinations the engine runs.
	configuredBy atomic.Pointer[App]
	// records is where the store's records go besides the store: the
	// fleet's history with cluster, nowhere without.
	records recordSwitch
	// alerts is where its events go besides the metrics: the running
	// config's Alerter, or nowhere.
	alerts *alertSwitch
	// notes writes the notification log into store.
	notes *notelog.Log
}

// recordSwitch is a delivery.RecordSink that a config (re)load can point
// at a fleet, or at nothing, while the engine runs.
type recordSwitch struct {
	sink atomic.Pointer[delivery.RecordSink]
}

func (s *recordSwitch) set(sink delivery.RecordSink) {
	if sink == nil {
		s.sink.Store(nil)
		return
	}
	s.sink.Store(&sink)
}

func (s *recordSwitch) Record(d storage.Delivery) {
	if p := s.sink.Load(); p != nil {
		(*p).Record(d)
	}
}

func loadEngine(dir string, key []byte, retention caddy.Duration, logger *zap.Logger, m *Metrics) (*pooledEngine, error) {
	v, loaded, err := enginePool.LoadOrNew(dir, func() (caddy.Destructor, error) {
		return openEngine(dir, key, time.Duration(retention), logger, m)
	})
	if err != nil {
		return nil, err
	}
	e := v.(*pooledEngine)
	if loaded && e.keyID != keyFingerprint(key) {
		_, _ = enginePool.Delete(dir)
		return nil, fmt.Errorf("storage_dir %s: encryption_key differs from the key the open store uses; restart Caddy to change it (see README: key rotation)", dir)
	}
	return e, nil
}

func openEngine(dir string, key []byte, retention time.Duration, logger *zap.Logger, m *Metrics) (*pooledEngine, error) {
	slogger := slogFor(logger)
	store, err := storage.Open(storage.Options{
		Dir:           dir,
		EncryptionKey: key,
		Retention:     retention,
		Logger:        slogger,
	})
	if err != nil {
		return nil, err
	}
	p := &pooledEngine{dir: dir, keyID: keyFingerprint(key), store: store, logger: logger, alerts: newAlertSwitch()}
	p.Engine = delivery.NewEngine(delivery.WithRecords(store, &p.records), delivery.Options{
		Logger:    slogger.With("component", "delivery"),
		Observer:  metricsObserver{m, p.alerts},
		UserAgent: userAgent(),
	})
	p.notes = notelog.New(notelog.Options{Sink: store, Counters: noteCounters{m}, Logger: slogger.With("component", "notelog")})
	p.notes.Start()
	p.Start()
	return p, nil
}

// Destruct stops the workers (bounded) and closes the store, when the last
// config using this folder stops.
func (e *pooledEngine) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	// The log's last records go in before the store closes.
	if err := e.notes.Stop(ctx); err != nil {
		e.logger.Warn("notification log: last records not written", zap.Error(err))
	}
	if err := e.Stop(ctx); err != nil {
		return fmt.Errorf("stop postback engine %s: %w", e.dir, err)
	}
	return nil
}

// refreshDepth copies every DIN's pending count into the queue-depth gauge.
// Stats are in-memory counters plus an index seek per DIN, so this runs when
// metrics are scraped (depthCollector), not per delivery.
func (e *pooledEngine) refreshDepth(depth *prometheus.GaugeVec) {
	stats, err := e.Stats()
	if err != nil {
		return
	}
	for din, s := range stats {
		depth.WithLabelValues(din).Set(float64(s.Pending))
	}
}

// metricsObserver turns the engine's events into Prometheus metrics, and
// those an operator must hear about into alerts.
type metricsObserver struct {
	m      *Metrics
	alerts *alertSwitch
}

func (o metricsObserver) Enqueued(din string) { o.m.Enqueued.WithLabelValues(din).Inc() }

func (o metricsObserver) Attempted(din, result string, d time.Duration) {
	o.m.Attempts.WithLabelValues(din, result).Inc()
	o.m.DeliverySecs.WithLabelValues(din).Observe(d.Seconds())
}

func (o metricsObserver) Finished(din string, state storage.State) {
	o.alerts.finished(din, state)
	switch state {
	case storage.StateDelivered:
		o.m.Delivered.WithLabelValues(din).Inc()
	case storage.StateSpooled:
		o.m.Spooled.WithLabelValues(din).Inc()
	case storage.StateFailed:
		o.m.Failed.WithLabelValues(din).Inc()
	case storage.StateCancelled:
		o.m.Cancelled.WithLabelValues(din).Inc()
	}
}

func (o metricsObserver) RateDelayed(din string) { o.m.RateDelayed.WithLabelValues(din).Inc() }

func (o metricsObserver) Circuit(din string, open bool) {
	v := 0.0
	if open {
		v = 1
	}
	o.m.CircuitOpen.WithLabelValues(din).Set(v)
	o.alerts.circuit(din, open)
}

var (
	_ delivery.Observer     = metricsObserver{}
	_ report.DeliverySource = (*delivery.Engine)(nil)
)
