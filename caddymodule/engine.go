package caddymodule

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/storage"
)

// enginePool shares one store and one set of workers per storage folder
// across config reloads: Caddy starts the new config before it stops the old
// one, and Badger allows one opener per folder.
var enginePool = caddy.NewUsagePool()

// engine is the pooled store plus the dispatcher that drains it.
type engine struct {
	dir        string
	keyID      string
	store      *storage.Store
	dispatcher *delivery.Dispatcher
	metrics    *Metrics
	logger     *zap.Logger
	// sensitive is the current config's redact list; a reload replaces it.
	sensitive atomic.Pointer[handlers.Sensitive]
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

func loadEngine(dir string, key []byte, retention caddy.Duration, logger *zap.Logger, m *Metrics) (*engine, error) {
	v, loaded, err := enginePool.LoadOrNew(dir, func() (caddy.Destructor, error) {
		return openEngine(dir, key, time.Duration(retention), logger, m)
	})
	if err != nil {
		return nil, err
	}
	e := v.(*engine)
	if loaded && e.keyID != keyFingerprint(key) {
		_, _ = enginePool.Delete(dir)
		return nil, fmt.Errorf("storage_dir %s: encryption_key differs from the key the open store uses; restart Caddy to change it (see README: key rotation)", dir)
	}
	return e, nil
}

func openEngine(dir string, key []byte, retention time.Duration, logger *zap.Logger, m *Metrics) (*engine, error) {
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
	e := &engine{dir: dir, keyID: keyFingerprint(key), store: store, metrics: m, logger: logger}
	e.dispatcher = delivery.New(store, delivery.Options{
		Logger:    slogger.With("component", "delivery"),
		Observer:  e,
		UserAgent: userAgent(),
		Sensitive: func(name string) bool {
			s := e.sensitive.Load()
			return s != nil && s.Match(name)
		},
	})
	e.dispatcher.Start()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		store.RunMaintenance(ctx, 5*time.Minute)
	}()
	e.refreshDepth()
	return e, nil
}

// Destruct stops the workers (bounded) and closes the store, when the last
// config using this folder stops.
func (e *engine) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := e.dispatcher.Stop(ctx); err != nil {
		e.logger.Warn("stopping delivery workers", zap.Error(err))
	}
	e.cancel()
	e.wg.Wait()
	if err := e.store.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", e.dir, err)
	}
	return nil
}

// Attempted implements delivery.Observer.
func (e *engine) Attempted(din, result string, d time.Duration) {
	e.metrics.Attempts.WithLabelValues(din, result).Inc()
	e.metrics.DeliverySecs.WithLabelValues(din).Observe(d.Seconds())
}

// Finished implements delivery.Observer.
func (e *engine) Finished(din string, state storage.State) {
	switch state {
	case storage.StateDelivered:
		e.metrics.Delivered.WithLabelValues(din).Inc()
	case storage.StateSpooled:
		e.metrics.Spooled.WithLabelValues(din).Inc()
	case storage.StateFailed:
		e.metrics.Failed.WithLabelValues(din).Inc()
	}
}

// Circuit implements delivery.CircuitObserver.
func (e *engine) Circuit(din string, open bool) {
	v := 0.0
	if open {
		v = 1
	}
	e.metrics.CircuitOpen.WithLabelValues(din).Set(v)
}

// refreshDepth copies pending counts into the queue-depth gauge; with no
// DIN given it refreshes all of them. Stats are in-memory counters plus an
// index seek per DIN, so this runs when metrics are scraped
// (depthCollector), not per delivery.
func (e *engine) refreshDepth(dins ...string) {
	stats, err := e.store.Stats()
	if err != nil {
		return
	}
	if len(dins) == 0 {
		for din, s := range stats {
			e.metrics.QueueDepth.WithLabelValues(din).Set(float64(s.Pending))
		}
		return
	}
	for _, din := range dins {
		e.metrics.QueueDepth.WithLabelValues(din).Set(float64(stats[din].Pending))
	}
}

var (
	_ delivery.Observer        = (*engine)(nil)
	_ delivery.CircuitObserver = (*engine)(nil)
)
