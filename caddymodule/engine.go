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
	"github.com/postbackedge/caddy-postback/fleet"
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
	// With queue jetstream: the fleet's queue the engine drains, the fleet
	// it belongs to, and the fleet pool's key, held while the engine lives.
	queue    *fleet.Queue
	fleet    *fleet.Fleet
	fleetKey string
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

// loadEngine opens (or shares) the engine of the store so (its Dir,
// EncryptionKey, Retention and MinFreeSpace). With queue jetstream, qf is
// the fleet whose queue it drains (nil: the store's own queue), and
// fleetKey is qf's key in fleetPool.
func loadEngine(so storage.Options, logger *zap.Logger, m *Metrics, qf *fleet.Fleet, fleetKey string) (*pooledEngine, error) {
	dir, key := so.Dir, so.EncryptionKey
	v, loaded, err := enginePool.LoadOrNew(dir, func() (caddy.Destructor, error) {
		return openEngine(so, logger, m, qf, fleetKey)
	})
	if err != nil {
		return nil, err
	}
	e := v.(*pooledEngine)
	if loaded && e.keyID != keyFingerprint(key) {
		_, _ = enginePool.Delete(dir)
		return nil, fmt.Errorf("storage_dir %s: encryption_key differs from the key the open store uses; restart Caddy to change it (see README: key rotation)", dir)
	}
	if loaded && e.fleetKey != fleetKey {
		_, _ = enginePool.Delete(dir)
		return nil, fmt.Errorf("storage_dir %s: the cluster's queue (or, with queue jetstream, its NATS servers, node, prefix) differs from the running engine's; restart Caddy to change it", dir)
	}
	return e, nil
}

func openEngine(so storage.Options, logger *zap.Logger, m *Metrics, qf *fleet.Fleet, fleetKey string) (*pooledEngine, error) {
	dir, key := so.Dir, so.EncryptionKey
	slogger := slogFor(logger)
	so.Logger = slogger
	store, err := storage.Open(so)
	if err != nil {
		return nil, err
	}
	p := &pooledEngine{dir: dir, keyID: keyFingerprint(key), store: store, logger: logger, alerts: newAlertSwitch()}
	var queueStore delivery.Store = store
	var poll time.Duration
	if qf != nil {
		qs, err := openQueueStore(qf, fleetKey, store)
		if err != nil {
			store.Close()
			return nil, err
		}
		p.queue, p.fleet, p.fleetKey = qs.Queue, qf, fleetKey
		queueStore, poll = qs, queuePoll
	}
	p.Engine = delivery.NewEngine(delivery.WithRecords(queueStore, &p.records), delivery.Options{
		Logger:       slogger.With("component", "delivery"),
		Observer:     metricsObserver{m, p.alerts},
		UserAgent:    userAgent(),
		PollInterval: poll,
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
	err := e.Stop(ctx)
	if e.fleetKey != "" {
		// The store is closed (the queue's holds given back): the fleet
		// connection may go.
		_, _ = fleetPool.Delete(e.fleetKey)
	}
	if err != nil {
		return fmt.Errorf("stop postback engine %s: %w", e.dir, err)
	}
	return nil
}

// pendingStats are the counts that say what is pending: the fleet's with
// queue jetstream (every edge drains one queue), else this edge's.
func (e *pooledEngine) pendingStats() (map[string]storage.DINStats, error) {
	if e.fleet != nil {
		return e.fleet.History().Stats()
	}
	return e.Stats()
}

// refreshDepth copies every DIN's pending count into the queue-depth gauge.
// Stats are in-memory counters plus an index seek per DIN, so this runs when
// metrics are scraped (depthCollector), not per delivery.
func (e *pooledEngine) refreshDepth(depth *prometheus.GaugeVec) {
	stats, err := e.pendingStats()
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
