package alert

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Counters learn what became of alerts (metrics); nil counts nothing.
type Counters interface {
	// Sent: an alert reached a webhook.
	Sent(Kind)
	// Failed: an alert did not reach a webhook after all its tries, or was
	// dropped because a queue was full.
	Failed(Kind)
	// Suppressed: an event was folded into a later alert by the debounce.
	Suppressed(Kind)
}

// Options configure an Alerter; zero values mean the defaults.
type Options struct {
	Webhooks []Webhook
	// MinInterval is the debounce window per destination and event
	// (default 10m).
	MinInterval time.Duration
	// Node names this edge in alerts (default: the host name).
	Node string
	// Memory is the debounce state, shared by the Alerters of successive
	// configs; nil: a memory of its own.
	Memory *Memory
	// Pending returns each destination's oldest pending delivery; with
	// MaxPendingAge it is checked every CheckEvery (default a minute, or a
	// quarter of MaxPendingAge if that is shorter).
	Pending       func() (map[string]time.Time, error)
	MaxPendingAge time.Duration
	CheckEvery    time.Duration

	Logger    *slog.Logger
	Counters  Counters
	Client    *http.Client     // default: a client with Timeout per request
	UserAgent string           // default "caddy-postback"
	Now       func() time.Time // the clock of events and windows (tests)
	// QueueSize bounds the events waiting for the debounce, and the alerts
	// waiting for each webhook (default 256).
	QueueSize int
	// Timeout bounds one request (default 10s); Attempts bounds the tries
	// of one alert at one webhook (default 4), Backoff is the wait after
	// the first failed try, doubled after each (default 2s).
	Timeout  time.Duration
	Attempts int
	Backoff  time.Duration
}

// Defaults of Options.
const (
	DefaultMinInterval   = 10 * time.Minute
	DefaultMaxPendingAge = time.Hour
	DefaultQueueSize     = 256
	DefaultTimeout       = 10 * time.Second
	DefaultAttempts      = 4
	DefaultBackoff       = 2 * time.Second
	// sweep is how often the debounce memory is looked at besides its own
	// timer: windows folded by another config's Alerter during a reload
	// are flushed by this one within it.
	sweep = time.Minute
	// minCheckEvery keeps a tiny max_pending_age from turning the check
	// into a busy loop.
	minCheckEvery = 100 * time.Millisecond
)

// Alerter debounces events and posts them to webhooks. Its methods never
// block on the network.
type Alerter struct {
	o       Options
	log     *slog.Logger
	mem     *Memory
	events  chan Event
	hooks   []*hookQueue
	dropped atomic.Uint64

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started atomic.Bool
}

// hookQueue is one webhook's poster and the alerts waiting for it, so that
// a slow or dead webhook never delays another.
type hookQueue struct {
	p *poster
	q chan outgoing
}

type outgoing struct {
	alert Alert
	body  []byte
}

// New checks o and returns an Alerter, not yet started.
func New(o Options) (*Alerter, error) {
	if len(o.Webhooks) == 0 {
		return nil, errors.New("alert: no webhook")
	}
	if o.MinInterval <= 0 {
		o.MinInterval = DefaultMinInterval
	}
	if o.MaxPendingAge <= 0 {
		o.MaxPendingAge = DefaultMaxPendingAge
	}
	if o.CheckEvery <= 0 {
		o.CheckEvery = max(min(time.Minute, o.MaxPendingAge/4), minCheckEvery)
	}
	if o.Node == "" {
		o.Node, _ = os.Hostname()
	}
	if o.Memory == nil {
		o.Memory = NewMemory()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.UserAgent == "" {
		o.UserAgent = "caddy-postback"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultBackoff
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.Timeout}
	}
	a := &Alerter{o: o, log: o.Logger, mem: o.Memory, events: make(chan Event, o.QueueSize)}
	for _, h := range o.Webhooks {
		if _, err := CheckURL(h.URL); err != nil {
			return nil, err
		}
		a.hooks = append(a.hooks, &hookQueue{
			p: &poster{hook: h, client: o.Client, timeout: o.Timeout, attempts: o.Attempts, backoff: o.Backoff, agent: o.UserAgent},
			q: make(chan outgoing, o.QueueSize),
		})
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	return a, nil
}

// Start starts the goroutines; Stop ends them.
func (a *Alerter) Start() {
	if !a.started.CompareAndSwap(false, true) {
		return
	}
	a.wg.Add(1)
	go a.loop()
	for _, h := range a.hooks {
		a.wg.Add(1)
		go a.deliver(h)
	}
	if a.o.Pending != nil {
		a.wg.Add(1)
		go a.watchPending()
	}
}

// Stop ends the goroutines and waits for them; requests in flight are
// cancelled. Folded events stay in the Memory for the next config's
// Alerter to send.
func (a *Alerter) Stop() {
	a.cancel()
	a.wg.Wait()
}

// Notify takes ev without blocking: when the queue is full the event is
// dropped and counted (Dropped, Counters.Failed).
func (a *Alerter) Notify(ev Event) {
	if a.ctx.Err() != nil {
		return
	}
	if ev.At.IsZero() {
		ev.At = a.o.Now()
	}
	select {
	case a.events <- ev:
	default:
		a.drop(ev.Alert(), "event queue full")
	}
}

// Alert is ev as an alert of its own.
func (ev Event) Alert() Alert { return Alert{Event: ev, Count: 1, First: ev.At} }

// Dropped is the number of events and alerts dropped on full queues.
func (a *Alerter) Dropped() uint64 { return a.dropped.Load() }

func (a *Alerter) drop(al Alert, why string) {
	n := a.dropped.Add(1)
	if a.o.Counters != nil {
		a.o.Counters.Failed(al.Kind)
	}
	// Powers of two only: a flood of drops must not flood the log too.
	if n&(n-1) == 0 {
		a.log.Warn("alert dropped", "why", why, "event", string(al.Kind), "din", al.DIN, "dropped_total", n)
	}
}

// loop is the only reader of the event queue: it debounces, and hands the
// alerts to the webhooks' queues.
func (a *Alerter) loop() {
	defer a.wg.Done()
	timer := time.NewTimer(sweep)
	defer timer.Stop()
	ticker := time.NewTicker(sweep)
	defer ticker.Stop()
	// Windows another Alerter folded into before this one started.
	a.flush()
	for {
		select {
		case <-a.ctx.Done():
			return
		case ev := <-a.events:
			send, folded := a.mem.Offer(ev, a.o.Now(), a.o.MinInterval)
			if send != nil {
				a.dispatch(*send)
			}
			if folded && a.o.Counters != nil {
				a.o.Counters.Suppressed(ev.Kind)
			}
		case <-timer.C:
		case <-ticker.C:
		}
		wait := a.flush()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// flush sends the windows due now and returns how long until the next.
func (a *Alerter) flush() time.Duration {
	now := a.o.Now()
	for _, al := range a.mem.Due(now, a.o.MinInterval) {
		a.dispatch(al)
	}
	if next, ok := a.mem.Next(); ok {
		return max(next.Sub(now), time.Millisecond)
	}
	return sweep
}

func (a *Alerter) dispatch(al Alert) {
	body, err := al.JSON(a.o.Node)
	if err != nil {
		a.log.Error("alert not sent", "event", string(al.Kind), "din", al.DIN, "error", err)
		return
	}
	a.log.Info("alert", "event", string(al.Kind), "din", al.DIN, "count", al.Count)
	for _, h := range a.hooks {
		select {
		case h.q <- outgoing{alert: al, body: body}:
		default:
			a.drop(al, "webhook queue full: "+h.p.hook.Redacted())
		}
	}
}

func (a *Alerter) deliver(h *hookQueue) {
	defer a.wg.Done()
	for {
		select {
		case <-a.ctx.Done():
			return
		case out := <-h.q:
			tries, err := h.p.post(a.ctx, out.body)
			if err != nil {
				if a.o.Counters != nil {
					a.o.Counters.Failed(out.alert.Kind)
				}
				a.log.Warn("alert not delivered", "webhook", h.p.hook.Redacted(), "event", string(out.alert.Kind),
					"din", out.alert.DIN, "tries", tries, "error", err.Error())
				continue
			}
			if a.o.Counters != nil {
				a.o.Counters.Sent(out.alert.Kind)
			}
			a.log.Debug("alert delivered", "webhook", h.p.hook.Redacted(), "event", string(out.alert.Kind), "din", out.alert.DIN, "tries", tries)
		}
	}
}
