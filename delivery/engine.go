package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Store is the durable backend behind the engine: the seam where another
// backend (a replicated stream) plugs in. *storage.Store, the embedded
// Badger store, is one. The delivery semantics (schedule, jitter,
// Retry-After, breaker, spool, states) are the engine's, not the store's.
type Store interface {
	Queue
	// Enqueue writes one pending delivery per item, durably, before it
	// returns; an error means none may be assumed written.
	Enqueue(ctx context.Context, items []storage.NewDelivery) ([]storage.Delivery, error)
	// Retry puts a failed delivery (or a spooled one that still has its
	// payload) back to pending, due at now.
	Retry(id string, now time.Time) (storage.Delivery, error)
	// RetryMany is Retry for several in one write, skipping those that
	// are not retryable; it returns the ones it made pending.
	RetryMany(ids []string, now time.Time) ([]storage.Delivery, error)
	// Release makes held deliveries (NewDelivery.Held) pending, due at now,
	// and Cancel marks them cancelled without their payload; both skip
	// those no longer held and return the ones they changed. Neither needs
	// to be synced: HeldIDs finds what a crash left held.
	Release(ids []string, now time.Time) ([]storage.Delivery, error)
	Cancel(ids []string, reason string) ([]storage.Delivery, error)
	HeldIDs(limit int) ([]string, error)
	History
	// RunMaintenance purges records past their retention and reclaims
	// space, now and then every `every`, until ctx is done or the store is
	// closed.
	RunMaintenance(ctx context.Context, every time.Duration)
	Close() error
}

// History is what the report reads of the store.
type History interface {
	Stats() (map[string]storage.DINStats, error)
	Hourly(since time.Time) ([]storage.HourBucket, error)
	List(f storage.Filter) ([]storage.Delivery, string, error)
	Get(id string) (storage.Delivery, error)
}

// DefaultMaintenanceInterval is how often the engine runs the store's
// maintenance.
const DefaultMaintenanceInterval = 5 * time.Minute

// Engine owns a store and the dispatcher that drains it: the request path
// enqueues through it, the operator retries through it, the report reads
// through it. The adapter only configures it (SetDestinations,
// SetSensitive) and starts and stops it.
type Engine struct {
	store      Store
	dispatcher *Dispatcher
	obs        Observer
	log        *slog.Logger
	// sensitive is the current config's redact rule; a reload replaces it
	// while the workers run.
	sensitive atomic.Pointer[func(name string) bool]

	maintain time.Duration
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// NewEngine returns an engine over store; opts.Sensitive is ignored (use
// SetSensitive). Call SetDestinations and Start.
func NewEngine(store Store, opts Options) *Engine {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{store: store, obs: opts.Observer, log: log, maintain: DefaultMaintenanceInterval}
	if e.obs == nil {
		e.obs = NopObserver{}
	}
	opts.Observer = e.obs
	opts.Sensitive = e.isSensitive
	e.dispatcher = New(store, opts)
	return e
}

// Start releases what the store holds from before (see ReleaseHeld), then
// starts the workers and the store's maintenance.
func (e *Engine) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.releaseLeftHeld()
	e.dispatcher.Start()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.store.RunMaintenance(ctx, e.maintain)
	}()
}

// Stop stops the workers (waiting for in-flight attempts until ctx is
// done; those cut off stay pending), then the maintenance, then closes the
// store. Calling it again returns the first call's result.
func (e *Engine) Stop(ctx context.Context) error {
	e.stopOnce.Do(func() {
		err := e.dispatcher.Stop(ctx)
		if e.cancel != nil {
			e.cancel()
		}
		e.wg.Wait()
		if cerr := e.store.Close(); cerr != nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
		e.stopErr = err
	})
	return e.stopErr
}

// SetDestinations replaces the destinations; see Dispatcher.SetDestinations.
func (e *Engine) SetDestinations(dests []*Destination) error {
	return e.dispatcher.SetDestinations(dests)
}

// SetSensitive sets which form fields' values are scrubbed from attempt
// errors whatever their length; nil: none beyond the default scrubbing.
func (e *Engine) SetSensitive(match func(name string) bool) {
	if match == nil {
		e.sensitive.Store(nil)
		return
	}
	e.sensitive.Store(&match)
}

func (e *Engine) isSensitive(name string) bool {
	m := e.sensitive.Load()
	return m != nil && (*m)(name)
}

// Enqueue writes one delivery per DIN for payload, durably, and hands them
// to the workers: the first attempt goes out from memory, at once. An error
// means nothing may be assumed durable. payload must not be modified
// afterwards.
func (e *Engine) Enqueue(ctx context.Context, dins []string, contentType string, payload []byte) ([]storage.Delivery, error) {
	items := make([]storage.NewDelivery, len(dins))
	for i, din := range dins {
		items[i] = storage.NewDelivery{DIN: din, ContentType: contentType, Payload: payload}
	}
	recs, err := e.store.Enqueue(ctx, items)
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		e.dispatcher.Offer(rec.ID, payload)
	}
	for _, din := range dins {
		e.obs.Enqueued(din)
		e.dispatcher.Notify(din)
	}
	return recs, nil
}

// Retry re-queues a failed (or spooled, payload kept) delivery and wakes
// its DIN's worker at once rather than at its next poll; if the
// destination's circuit is open, its next probe goes out now.
func (e *Engine) Retry(id string, now time.Time) (storage.Delivery, error) {
	d, err := e.store.Retry(id, now)
	if err != nil {
		return d, err
	}
	e.dispatcher.Notify(d.DIN)
	e.dispatcher.ProbeNow(d.DIN)
	return d, nil
}

// RetryMatching retries every retryable delivery (storage.Delivery.Retryable)
// that f selects, whatever f.Limit and f.Cursor say, a page at a time, and
// wakes the DINs it touched. It returns how many it put back; run again, it
// finds them pending and puts back none. ctx ends it between pages.
func (e *Engine) RetryMatching(ctx context.Context, f storage.Filter, now time.Time) (int, error) {
	f.Limit, f.Cursor = retryPage, ""
	touched := map[string]bool{}
	defer func() {
		for din := range touched {
			e.dispatcher.Notify(din)
			e.dispatcher.ProbeNow(din)
		}
	}()
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		page, next, err := e.store.List(f)
		if err != nil {
			return n, err
		}
		var ids []string
		for i := range page {
			if page[i].Retryable() {
				ids = append(ids, page[i].ID)
			}
		}
		done, err := e.store.RetryMany(ids, now)
		if err != nil {
			return n, err
		}
		for _, d := range done {
			touched[d.DIN] = true
		}
		n += len(done)
		if next == "" {
			return n, nil
		}
		f.Cursor = next
	}
}

// retryPage is how many records RetryMatching reads, and retries in one
// write, at a time.
const retryPage = 500

// DINs lists the configured destinations, sorted.
func (e *Engine) DINs() []string { return e.dispatcher.DINs() }

// CircuitOpen reports whether din's circuit is open, and since when.
func (e *Engine) CircuitOpen(din string) (since time.Time, open bool) {
	return e.dispatcher.CircuitOpen(din)
}

// RateDelayed counts din's due deliveries that waited for its rate.
func (e *Engine) RateDelayed(din string) uint64 { return e.dispatcher.RateDelayed(din) }

// Stats, Hourly, List and Get read the store's history.
func (e *Engine) Stats() (map[string]storage.DINStats, error) { return e.store.Stats() }

func (e *Engine) Hourly(since time.Time) ([]storage.HourBucket, error) {
	return e.store.Hourly(since)
}

func (e *Engine) List(f storage.Filter) ([]storage.Delivery, string, error) { return e.store.List(f) }

func (e *Engine) Get(id string) (storage.Delivery, error) { return e.store.Get(id) }

var _ Store = (*storage.Store)(nil)
