package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Queue is what the dispatcher drains: the part of Store its workers use.
type Queue interface {
	// Due lists pending deliveries of din with NextAttempt <= now, earliest first.
	Due(din string, now time.Time, limit int) ([]storage.Delivery, error)
	// NextDue is the earliest NextAttempt among the pending deliveries of din.
	NextDue(din string) (time.Time, bool)
	// PendingDINs lists the DINs that have pending deliveries, so that those
	// of a DIN nobody configures are reported.
	PendingDINs() ([]string, error)
	// Payload returns what is to be sent; storage.ErrNotFound when gone.
	Payload(id string) ([]byte, error)
	// Complete appends an attempt and applies the outcome; storage.ErrConflict
	// when the delivery is no longer pending.
	Complete(id string, a storage.Attempt, out storage.Outcome) (storage.Delivery, error)
}

// AttemptStarter is a Queue that is told when an attempt at a delivery
// starts, whether its payload comes from the store or from memory: a
// fleet's queue holds the delivery for this edge from then until Complete.
// False means this edge no longer holds it (another edge may be at it):
// the attempt is not made.
type AttemptStarter interface {
	AttemptStarted(id string) bool
}

// Observer learns about deliveries (metrics). Its methods are called from
// the request path and the worker goroutines, concurrently, and must not
// block.
type Observer interface {
	// Enqueued reports a delivery written for din.
	Enqueued(din string)
	// Attempted reports one recorded attempt; result is one of the Result* constants.
	Attempted(din, result string, d time.Duration)
	// Finished reports a delivery that reached delivered, spooled, failed
	// or cancelled.
	Finished(din string, state storage.State)
	// Circuit reports din's circuit opening or closing.
	Circuit(din string, open bool)
	// RateDelayed reports a due delivery that waits for din's rate.
	RateDelayed(din string)
}

// NopObserver observes nothing; embed it to implement part of Observer.
type NopObserver struct{}

func (NopObserver) Enqueued(string)                         {}
func (NopObserver) Attempted(string, string, time.Duration) {}
func (NopObserver) Finished(string, storage.State)          {}
func (NopObserver) Circuit(string, bool)                    {}
func (NopObserver) RateDelayed(string)                      {}

// Options tune a Dispatcher; zero values mean the defaults.
type Options struct {
	Logger    *slog.Logger
	Observer  Observer
	UserAgent string           // default "caddy-postback"
	Now       func() time.Time // the clock for records and schedules (tests)
	// Jitter spreads retry delays over ±Jitter of themselves; 0 means 0.2,
	// a negative value turns jitter off.
	Jitter float64
	// MaxRetryAfter bounds how far a destination's Retry-After can push the
	// next attempt (default 1h).
	MaxRetryAfter time.Duration
	// PollInterval is how often a DIN's loop looks at the store without being
	// woken (a safety net, e.g. for deliveries re-queued without Notify).
	// Default 10s.
	PollInterval time.Duration
	// Sensitive names form fields whose values are scrubbed from error text
	// whatever their length (a three-digit CVV); nil: none beyond the
	// default scrubbing of longer values.
	Sensitive func(name string) bool
	// FreshPayloadBytes and FreshPayloadCount bound the payloads handed over
	// by Offer for first attempts (defaults 8 MiB and 8192; negative: none
	// kept, every payload is read from the store).
	FreshPayloadBytes int
	FreshPayloadCount int
}

// Defaults applied to Options' zero fields.
const (
	DefaultUserAgent     = "caddy-postback"
	DefaultJitter        = 0.2
	DefaultMaxRetryAfter = time.Hour
	DefaultPollInterval  = 10 * time.Second
)

// Dispatcher runs one loop per configured DIN that drains its due deliveries.
type Dispatcher struct {
	store         Queue
	log           *slog.Logger
	obs           Observer
	userAgent     string
	now           func() time.Time
	jitter        float64
	maxRetryAfter time.Duration
	poll          time.Duration
	sensitive     func(name string) bool
	client        *http.Client // for destinations without their own
	fresh         *freshPayloads

	ctx    context.Context // of all attempts; cancelled when Stop stops waiting
	cancel context.CancelFunc
	stopCh chan struct{} // closed by Stop: take no new work
	wg     sync.WaitGroup

	mu       sync.Mutex
	dests    map[string]*Destination // current config, normalized
	runners  map[string]*runner      // live loops, including draining removed ones
	warned   map[string]bool         // unconfigured DINs already logged
	started  bool
	stopping bool
}

// New returns a dispatcher for store; call SetDestinations and Start.
func New(store Queue, opts Options) *Dispatcher {
	d := &Dispatcher{
		store:         store,
		log:           opts.Logger,
		obs:           opts.Observer,
		userAgent:     opts.UserAgent,
		now:           opts.Now,
		jitter:        opts.Jitter,
		maxRetryAfter: opts.MaxRetryAfter,
		poll:          opts.PollInterval,
		sensitive:     opts.Sensitive,
		stopCh:        make(chan struct{}),
		dests:         map[string]*Destination{},
		runners:       map[string]*runner{},
		warned:        map[string]bool{},
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.obs == nil {
		d.obs = NopObserver{}
	}
	if d.userAgent == "" {
		d.userAgent = DefaultUserAgent
	}
	if d.now == nil {
		d.now = time.Now
	}
	switch {
	case d.jitter == 0:
		d.jitter = DefaultJitter
	case d.jitter < 0:
		d.jitter = 0
	case d.jitter > 1:
		d.jitter = 1
	}
	if d.maxRetryAfter <= 0 {
		d.maxRetryAfter = DefaultMaxRetryAfter
	}
	if d.poll <= 0 {
		d.poll = DefaultPollInterval
	}
	fb, fc := opts.FreshPayloadBytes, opts.FreshPayloadCount
	if fb == 0 {
		fb = DefaultFreshPayloadBytes
	}
	if fc == 0 {
		fc = DefaultFreshPayloadCount
	}
	if fb > 0 && fc > 0 {
		d.fresh = newFreshPayloads(fb, fc)
	}
	d.client, _ = NewClient(nil) // cannot fail without extra CAs
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// SetDestinations replaces the configuration atomically: new DINs start,
// removed ones stop taking work (their in-flight attempts finish), changed
// ones use the new settings from their next attempt. A destination that
// fails Validate, or a DIN given twice, refuses the whole set and changes
// nothing: a running edge never holds a DIN it would not deliver.
func (d *Dispatcher) SetDestinations(dests []*Destination) error {
	next := make(map[string]*Destination, len(dests))
	for _, dst := range dests {
		if dst == nil {
			continue
		}
		if err := dst.Validate(); err != nil {
			return err
		}
		if _, dup := next[dst.DIN]; dup {
			return fmt.Errorf("destination %s given twice", dst.DIN)
		}
		next[dst.DIN] = dst.normalized(d.client)
	}

	var stale []*Destination // replaced settings whose idle connections can go
	d.mu.Lock()
	started := d.started && !d.stopping
	old := d.dests
	d.dests = next
	for din, dst := range next {
		delete(d.warned, din)
		if o := old[din]; o != nil {
			stale = append(stale, o)
		}
		if !d.started || d.stopping {
			continue
		}
		if r := d.runners[din]; r != nil {
			r.set(dst) // also revives a removed DIN still draining
		} else {
			d.startRunner(din, dst)
		}
	}
	for din, o := range old {
		if next[din] != nil {
			continue
		}
		stale = append(stale, o)
		if r := d.runners[din]; r != nil {
			r.set(nil)
		}
	}
	d.mu.Unlock()

	// Old transports nobody uses any more would keep idle connections (and
	// their goroutines) until they time out.
	// Only *http.Transport is compared: other RoundTrippers may not be comparable.
	inUse := map[*http.Transport]bool{}
	mark := func(c *http.Client) {
		if tr, ok := c.Transport.(*http.Transport); ok {
			inUse[tr] = true
		}
	}
	mark(d.client)
	for _, n := range next {
		mark(n.Client)
	}
	for _, o := range stale {
		if tr, ok := o.Client.Transport.(*http.Transport); ok && !inUse[tr] {
			tr.CloseIdleConnections()
		}
	}
	if started {
		d.warnPending()
	}
	return nil
}

// DINs lists the configured destinations, sorted.
func (d *Dispatcher) DINs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	dins := make([]string, 0, len(d.dests))
	for din := range d.dests {
		dins = append(dins, din)
	}
	slices.Sort(dins)
	return dins
}

// warnPending warns about the pending deliveries of unconfigured DINs.
func (d *Dispatcher) warnPending() {
	dins, err := d.store.PendingDINs()
	if err != nil {
		d.log.Warn("delivery: listing pending DINs", "error", err)
		return
	}
	for _, din := range dins {
		d.warnUnconfigured(din)
	}
}

// closeIdle drops a client's idle connections (and their goroutines); busy
// ones are unaffected. The shared http.DefaultTransport is left alone.
func closeIdle(c *http.Client) {
	if c != nil && c.Transport != nil {
		c.CloseIdleConnections()
	}
}

// startRunner starts the loop of din; d.mu is held.
func (d *Dispatcher) startRunner(din string, dst *Destination) {
	r := newRunner(d, din, dst)
	d.runners[din] = r
	d.wg.Add(1)
	go r.run()
}

// Offer hands the payload of a delivery just enqueued to its first attempt,
// so that it need not be read back from the store. payload must not be
// modified afterwards. What the bounds do not keep is read from the store.
func (d *Dispatcher) Offer(id string, payload []byte) {
	d.fresh.put(id, payload)
}

// Notify tells the dispatcher that deliveries were enqueued for din, so the
// loop attempts them now. It never blocks; notifications coalesce.
func (d *Dispatcher) Notify(din string) {
	d.mu.Lock()
	r := d.runners[din]
	configured := d.dests[din] != nil
	stopping := d.stopping
	d.mu.Unlock()
	switch {
	case r != nil && configured:
		r.poke()
	case !configured && !stopping:
		d.warnUnconfigured(din)
	}
}

// warnUnconfigured logs once per DIN that deliveries wait for a destination
// that is not configured; they stay pending until it is.
func (d *Dispatcher) warnUnconfigured(din string) {
	d.mu.Lock()
	first := !d.warned[din] && d.dests[din] == nil
	if first {
		d.warned[din] = true
	}
	d.mu.Unlock()
	if first {
		d.log.Warn("delivery: deliveries pending for a destination that is not configured; left pending", "din", din)
	}
}

// Start starts the loops of the configured DINs. Each first attempts what is
// already due, including deliveries left pending by a crash.
func (d *Dispatcher) Start() {
	d.mu.Lock()
	if d.started || d.stopping {
		d.mu.Unlock()
		return
	}
	d.started = true
	for din, dst := range d.dests {
		d.startRunner(din, dst)
	}
	d.mu.Unlock()
	d.warnPending()
}

// Stop stops taking work and waits for in-flight attempts until ctx is done;
// then it cancels them. A cancelled attempt is not recorded: the delivery
// stays pending and is retried after a restart. When Stop returns, every
// goroutine of the dispatcher has ended. It returns ctx's error if attempts
// had to be cancelled. Calling it again is harmless.
func (d *Dispatcher) Stop(ctx context.Context) error {
	d.mu.Lock()
	if !d.stopping {
		d.stopping = true
		close(d.stopCh)
	}
	clients := []*http.Client{d.client}
	for _, dst := range d.dests {
		clients = append(clients, dst.Client)
	}
	d.mu.Unlock()

	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		d.cancel()
		<-done // cancelled attempts return at once
		err = fmt.Errorf("delivery: stop: in-flight attempts cancelled, left pending: %w", ctx.Err())
	}
	d.cancel()
	for _, c := range clients {
		closeIdle(c)
	}
	return err
}

// stopped reports whether Stop has been called.
func (d *Dispatcher) stopped() bool {
	select {
	case <-d.stopCh:
		return true
	default:
		return false
	}
}
