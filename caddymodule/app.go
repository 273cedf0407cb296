package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/postbackedge/caddy-postback/alert"
	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/fleet"
	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/notelog"
	"github.com/postbackedge/caddy-postback/storage"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the `postback` app: it owns the durable store, the secondary
// destinations and the delivery workers that drain the queue.
type App struct {
	// StorageDir holds the Badger database. Default: postback/ under
	// Caddy's data directory.
	StorageDir string `json:"storage_dir,omitempty"`
	// EncryptionKey encrypts the store at rest: 32 bytes given as 64 hex
	// characters or base64. Placeholders such as {env.POSTBACK_DB_KEY}.
	EncryptionKey string `json:"encryption_key,omitempty"`
	// Retention of delivered and spooled records, for reporting. Default 30d.
	Retention caddy.Duration `json:"retention,omitempty"`
	// MinFreeSpace is the free space, in bytes, the store keeps on its
	// disk: below it secondary_post answers 503 (the sender retries), below
	// half of it the store stops writing, so that a full disk never crashes
	// Caddy (the store's files are memory-mapped). Default 256 MiB; -1: no
	// check.
	MinFreeSpace int64 `json:"min_free_space,omitempty"`
	// Destinations by DIN.
	Destinations map[string]*Destination `json:"destinations,omitempty"`
	// Redact lists extra field names whose values must never be shown,
	// besides the built-in card and password names.
	Redact []string `json:"redact,omitempty"`
	// Cluster joins a fleet of edges on NATS JetStream; see Cluster.
	Cluster *Cluster `json:"cluster,omitempty"`
	// Labels names the form fields whose values the notification log keeps
	// with each record (a receipt, a transaction id), to find a sale by.
	// Fields named like card data or secrets are refused.
	Labels []string `json:"labels,omitempty"`
	// LogRefusedPerHour bounds the notification log's records per hour
	// that were not accepted (refused, replays), so a flood of refusals
	// cannot fill the disk. Default 1000; -1 keeps none.
	LogRefusedPerHour int `json:"log_refused_per_hour,omitempty"`
	// Alert posts to webhooks when deliveries are in trouble; see Alert.
	Alert *Alert `json:"alert,omitempty"`

	ctx     caddy.Context
	logger  *zap.Logger
	dir     string
	key     []byte
	dests   map[string]*delivery.Destination
	metrics *Metrics
	// sensitive matches the field names whose values are never shown.
	sensitive *handlers.Sensitive
	// engine is set by Start. Caddy starts apps in no fixed order, so the
	// HTTP server may already serve requests that read it.
	engine atomic.Pointer[pooledEngine]
	// stopped makes Stop release the pooled engine once.
	stopped atomic.Bool
	// started is closed by Start: requests that arrive between the HTTP
	// server's start and ours wait for it rather than get a 503.
	started chan struct{}
	// running finds the app of the config Caddy runs (runningApp; tests).
	running func() *App
	// fleetOpts is set with Cluster; fleet by Start.
	fleetOpts *fleet.Options
	fleet     atomic.Pointer[fleet.Fleet]
	// alertOpts is set with Alert; alerter by Start.
	alertOpts *alert.Options
	alerter   *alert.Alerter
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "postback",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision validates the configuration. It opens nothing: the store is
// opened in Start, so `caddy validate` needs no lock on the database.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.started = make(chan struct{})
	repl := caddy.NewReplacer()

	dir := repl.ReplaceAll(a.StorageDir, "")
	if dir == "" {
		dir = filepath.Join(caddy.AppDataDir(), "postback")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("storage_dir %s: %w", dir, err)
	}
	a.dir = abs

	if a.EncryptionKey != "" {
		key, err := parseKey(repl.ReplaceAll(a.EncryptionKey, ""))
		if err != nil {
			return fmt.Errorf("encryption_key: %w", err)
		}
		a.key = key
	}
	if a.Retention < 0 {
		return fmt.Errorf("retention must not be negative")
	}
	if a.MinFreeSpace < -1 {
		return fmt.Errorf("min_free_space %d: want a number of bytes, or -1 for no check", a.MinFreeSpace)
	}

	a.dests = make(map[string]*delivery.Destination, len(a.Destinations))
	for din, d := range a.Destinations {
		if d == nil {
			return fmt.Errorf("destination %s: empty", din)
		}
		built, err := d.build(din, repl)
		if err != nil {
			return err
		}
		a.dests[din] = built
	}
	a.sensitive = handlers.NewSensitive(a.Redact...)
	if err := notelog.CheckLabels(a.Labels, a.sensitive.Match); err != nil {
		return err
	}
	if a.LogRefusedPerHour < -1 {
		return fmt.Errorf("log_refused_per_hour %d: want a number of records, or -1 for none", a.LogRefusedPerHour)
	}
	if a.Cluster != nil {
		o, err := a.Cluster.options(repl, a.key)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		o.Logger = slogFor(a.logger.Named("fleet"))
		o.Retention = time.Duration(a.Retention)
		a.fleetOpts = &o
	}
	if a.Alert != nil {
		o, insecure, err := a.Alert.options(repl)
		if err != nil {
			return err
		}
		warnInsecureAlerts(a.logger, insecure)
		a.alertOpts = &o
	}
	if a.metrics, err = loadMetrics(ctx); err != nil {
		return err
	}
	return nil
}

// parseKey accepts 64 hex characters or base64 of 32 bytes.
func parseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty (is the environment variable set?)")
	}
	if len(s) == 64 {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != 32 {
				return nil, fmt.Errorf("decodes to %d bytes, want 32", len(k))
			}
			return k, nil
		}
	}
	return nil, errors.New("want 64 hex characters or base64 of 32 bytes")
}

// HasDestination reports whether din is configured.
func (a *App) HasDestination(din string) bool {
	_, ok := a.dests[din]
	return ok
}

// DINs lists the configured DINs, sorted.
func (a *App) DINs() []string {
	dins := make([]string, 0, len(a.dests))
	for din := range a.dests {
		dins = append(dins, din)
	}
	sort.Strings(dins)
	return dins
}

// Start opens (or shares, across a reload) the store and its workers, and
// hands them this config's destinations.
func (a *App) Start() error {
	if a.key == nil {
		a.logger.Warn("postback store is not encrypted at rest: queued payloads (card numbers, passwords) are stored in clear; set encryption_key",
			zap.String("storage_dir", a.dir))
	}
	if a.fleetOpts != nil {
		disk, err := storage.DiskID(a.dir)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		a.fleetOpts.Disk = disk
		f, err := loadFleet(*a.fleetOpts)
		if err != nil {
			return err
		}
		a.fleet.Store(f)
	}
	var queueFleet *fleet.Fleet
	queueKey := ""
	if a.queueJetStream() {
		queueFleet, queueKey = a.fleet.Load(), poolKey(*a.fleetOpts)
	}
	so := storage.Options{Dir: a.dir, EncryptionKey: a.key, Retention: time.Duration(a.Retention), MinFreeSpace: a.MinFreeSpace}
	e, err := loadEngine(so, a.logger, a.metrics, queueFleet, queueKey)
	if err != nil {
		a.releaseFleet()
		return err
	}
	if err := a.startAlerts(e); err != nil {
		_, _ = enginePool.Delete(a.dir)
		a.releaseFleet()
		return err
	}
	if err := a.configure(e); err != nil {
		a.stopAlerts(e)
		_, _ = enginePool.Delete(a.dir)
		a.releaseFleet()
		return err
	}
	a.engine.Store(e)
	close(a.started)
	for _, din := range a.DINs() {
		// The series exists (at 0) before any circuit opens, so an alert on
		// it sees the destination from the start; an existing value stays.
		a.metrics.CircuitOpen.WithLabelValues(din)
	}
	fields := []zap.Field{zap.String("storage_dir", a.dir), zap.Strings("destinations", a.DINs())}
	if a.fleetOpts != nil {
		fields = append(fields, zap.String("node", a.fleetOpts.Node), zap.Strings("nats", a.fleetOpts.Servers))
	}
	a.logger.Info("postback started", fields...)
	return nil
}

// queueJetStream reports whether pending deliveries live in the fleet's
// replicated queue rather than this edge's store.
func (a *App) queueJetStream() bool {
	return a.Cluster != nil && a.Cluster.Queue == queueJetStream
}

// configure hands the shared engine this config's destinations and redact
// list. Provision has checked every destination with the same rules, so it
// cannot fail short of a bug (or, with queue jetstream, NATS refusing the
// consumers); if it does, the config does not start.
func (a *App) configure(e *pooledEngine) error {
	if e.queue != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := e.queue.Configure(ctx, queueConfigs(a.destList()))
		cancel()
		if err != nil {
			return err
		}
	}
	if err := e.SetDestinations(a.destList()); err != nil {
		return fmt.Errorf("postback: %w", err)
	}
	e.SetSensitive(a.sensitive.Match)
	e.alerts.alerter.Store(a.alerter)
	e.notes.SetRefusedPerHour(a.LogRefusedPerHour)
	if f := a.fleet.Load(); f != nil {
		e.records.set(f.Records())
		f.SetLocal(e.Engine)
	} else {
		e.records.set(nil)
	}
	e.configuredBy.Store(a)
	return nil
}

func (a *App) destList() []*delivery.Destination {
	list := make([]*delivery.Destination, 0, len(a.dests))
	for _, din := range a.DINs() {
		list = append(list, a.dests[din])
	}
	return list
}

// Stop releases this config's hold on the store. The store and its workers
// stop only when no config uses them any more, so a reload that keeps the
// same storage_dir never closes the database.
//
// The engine stays referenced: Caddy stops a config's apps in no fixed
// order, so during a reload the old config's server may still be draining
// requests after this app has stopped. They keep using the shared store the
// new config holds open; once the last config has released it, it is closed
// and they are answered 503 (storage.ErrClosed), so the sender retries.
//
// A reload whose new config fails to start stops that config's apps while
// the old config runs on: the running config's destinations, which this
// app's Start replaced, are given back to the shared engine, so that it
// never lacks a DIN the running config enqueues to.
func (a *App) Stop() error {
	e := a.engine.Load()
	if e == nil || !a.stopped.CompareAndSwap(false, true) {
		return nil
	}
	find := a.running
	if find == nil {
		find = runningApp
	}
	// Only when the running config shares this engine (same storage_dir) and
	// this app's config is the engine's: after a successful reload the new
	// config's already is, and an engine of another storage_dir is not ours
	// to configure.
	if running := find(); running != nil && running != a && running.engine.Load() == e && e.configuredBy.Load() == a {
		if err := running.configure(e); err != nil {
			a.logger.Error("restoring the running config's destinations", zap.Error(err))
		}
	}
	a.stopAlerts(e)
	if f := a.fleet.Load(); f != nil {
		// Before the store may close: the fleet keeps this edge's last
		// counts while it is away.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := f.PublishSnapshot(ctx); err != nil {
			a.logger.Warn("cluster: last stats snapshot not published", zap.Error(err))
		}
		cancel()
	}
	_, err := enginePool.Delete(a.dir)
	a.releaseFleet()
	return err
}

// releaseFleet gives up this config's hold on the fleet connection.
func (a *App) releaseFleet() {
	if a.fleet.Load() != nil {
		_, _ = fleetPool.Delete(poolKey(*a.fleetOpts))
	}
}

// runningApp is the postback app of the config Caddy is running, or nil.
func runningApp() *App {
	v, err := caddy.ActiveContext().AppIfConfigured("postback")
	if err != nil {
		return nil
	}
	app, _ := v.(*App)
	return app
}

// errNotStarted is returned when the request path runs before Start, which
// Caddy does not do; it guards against misuse in tests.
var errNotStarted = errors.New("postback app not started")

// Enqueue writes one delivery per DIN for payload, synced to disk, and hands
// them to the workers. An error means nothing may be assumed durable.
func (a *App) Enqueue(ctx context.Context, dins []string, contentType string, payload []byte) ([]storage.Delivery, error) {
	e := a.awaitEngine(ctx)
	if e == nil {
		return nil, errNotStarted
	}
	return e.Enqueue(ctx, dins, contentType, payload)
}

// Hold writes held copies for secondary_post's only_accepted; see
// delivery.Engine.Hold.
func (a *App) Hold(ctx context.Context, dins []string, contentType string, payload []byte) (*delivery.Held, error) {
	e := a.awaitEngine(ctx)
	if e == nil {
		return nil, errNotStarted
	}
	return e.Hold(ctx, dins, contentType, payload)
}

// Store returns the open store, or nil before Start.
func (a *App) Store() *storage.Store {
	if e := a.engine.Load(); e != nil {
		return e.store
	}
	return nil
}

// ReplayStore gives itns_verify's dedupe the app's store, or the fleet's
// bucket with cluster; it resolves it on each call because handlers are
// provisioned before Start.
func (a *App) ReplayStore() handlers.ReplayStore {
	return lazyReplay{open: func() handlers.ReplayStore {
		e := a.awaitEngine(context.Background())
		if e == nil {
			return nil
		}
		if f := a.fleet.Load(); f != nil {
			return f.ReplayStore()
		}
		if a.fleetOpts != nil {
			return nil
		}
		return badgerReplay{e.store}
	}}
}

// ReplayOwner: see replayStoreProvider.
func (a *App) ReplayOwner() string {
	if a.Cluster != nil {
		return ""
	}
	return processID
}

// startWait bounds how long a request waits for the app to start: Caddy
// starts its apps in no fixed order, so the HTTP server can take requests a
// few milliseconds before the store is open.
const startWait = 5 * time.Second

// awaitEngine returns the engine, waiting (bounded, and by ctx) for Start.
func (a *App) awaitEngine(ctx context.Context) *pooledEngine {
	if e := a.engine.Load(); e != nil || a.started == nil {
		return e
	}
	t := time.NewTimer(startWait)
	defer t.Stop()
	select {
	case <-a.started:
	case <-t.C:
	case <-ctx.Done():
	}
	return a.engine.Load()
}

// keyFingerprint identifies an encryption key without revealing it.
func keyFingerprint(key []byte) string {
	if key == nil {
		return ""
	}
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// slogFor bridges Caddy's zap logger to the log/slog API of the plain-Go
// packages, so their lines land in Caddy's logs with its encoders.
func slogFor(l *zap.Logger) *slog.Logger {
	return slog.New(zapslog.NewHandler(l.Core()))
}

// stopTimeout bounds how long a stop waits for in-flight attempts; those
// cut off stay pending and are retried after restart.
const stopTimeout = 10 * time.Second

// Interface guards.
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
