package notelog

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Sink stores records; *storage.Store is one.
type Sink interface {
	AppendNotifications([]storage.Notification) error
}

// Counters learn what became of records (metrics); nil counts nothing.
type Counters interface {
	Logged(outcome string)
	// Dropped: reason is "queue_full" or "budget".
	Dropped(reason string)
}

// Options configure a Log; zero values mean the defaults.
type Options struct {
	Sink Sink
	// RefusedPerHour bounds the records kept per clock hour that were not
	// accepted (refused, replays); -1 keeps none of them. Default 1000.
	RefusedPerHour int
	// QueueSize bounds the records waiting for the writer (default 4096).
	QueueSize int
	// Batch is the most records one write takes (default 256); Linger how
	// long the writer waits to fill one (default 200ms).
	Batch    int
	Linger   time.Duration
	Counters Counters
	Logger   *slog.Logger
}

// Defaults of Options.
const (
	DefaultRefusedPerHour = 1000
	DefaultQueueSize      = 4096
	DefaultBatch          = 256
	DefaultLinger         = 200 * time.Millisecond
)

// Log takes finished notes and writes them in the background.
type Log struct {
	o       Options
	q       chan *Note
	dropped atomic.Uint64

	budgetMu   sync.Mutex
	budgetHour int64 // Unix hour of the current budget
	budgetUsed int

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Log; Start starts its writer.
func New(o Options) *Log {
	if o.RefusedPerHour == 0 {
		o.RefusedPerHour = DefaultRefusedPerHour
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.Linger <= 0 {
		o.Linger = DefaultLinger
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{o: o, q: make(chan *Note, o.QueueSize), done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

// Finish completes n with the status the client got and the form its
// labels are read from (a form body or the query; not copied, so it must
// not change afterwards), and queues it without blocking. A note nobody
// decided on is accepted.
func (l *Log) Finish(n *Note, status int, form []byte) {
	if n == nil {
		return
	}
	n.decide(storage.OutcomeAccepted, "")
	n.rec.Status = status
	n.form = form
	if n.rec.Outcome != storage.OutcomeAccepted && !l.spend(n.rec.At) {
		l.drop("budget")
		return
	}
	if l.ctx.Err() != nil {
		l.drop("queue_full")
		return
	}
	select {
	case l.q <- n:
	default:
		l.drop("queue_full")
	}
}

// SetRefusedPerHour changes the budget (a config reload); n as
// Options.RefusedPerHour.
func (l *Log) SetRefusedPerHour(n int) {
	if n == 0 {
		n = DefaultRefusedPerHour
	}
	l.budgetMu.Lock()
	l.o.RefusedPerHour = n
	l.budgetMu.Unlock()
}

// spend takes one record from the budget of at's hour.
func (l *Log) spend(at time.Time) bool {
	hour := at.Unix() / 3600
	l.budgetMu.Lock()
	defer l.budgetMu.Unlock()
	if l.o.RefusedPerHour < 0 {
		return false
	}
	if hour != l.budgetHour {
		l.budgetHour, l.budgetUsed = hour, 0
	}
	if l.budgetUsed >= l.o.RefusedPerHour {
		return false
	}
	l.budgetUsed++
	return true
}

func (l *Log) drop(reason string) {
	n := l.dropped.Add(1)
	if l.o.Counters != nil {
		l.o.Counters.Dropped(reason)
	}
	if n&(n-1) == 0 { // powers of two: a flood must not flood the log too
		l.o.Logger.Warn("notification log: record dropped", "reason", reason, "dropped_total", n)
	}
}

// Dropped is the number of records dropped.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Start starts the writer; Stop writes what is queued and ends it.
func (l *Log) Start() { go l.run() }

// Stop ends the writer after it wrote the records queued before (bounded
// by ctx).
func (l *Log) Stop(ctx context.Context) error {
	l.cancel()
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Log) run() {
	defer close(l.done)
	batch := make([]storage.Notification, 0, l.o.Batch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	write := func() {
		if len(batch) == 0 {
			return
		}
		err := l.o.Sink.AppendNotifications(batch)
		switch {
		case errors.Is(err, storage.ErrDiskFull):
			// The store logs the full disk once; every batch until it is
			// freed would log it again, five times a second.
			for range batch {
				l.drop("disk_full")
			}
		case err != nil:
			l.o.Logger.Error("notification log: records not written", "records", len(batch), "error", err.Error())
		case l.o.Counters != nil:
			for _, n := range batch {
				l.o.Counters.Logged(n.Outcome)
			}
		}
		batch = batch[:0]
	}
	add := func(n *Note) {
		n.rec.Labels = extractLabels(n.form, n.labels)
		n.form = nil // the body may hold card data: not kept a moment longer
		batch = append(batch, n.rec)
		if len(batch) >= l.o.Batch {
			write()
		}
	}
	for {
		select {
		case n := <-l.q:
			add(n)
			if !armed && len(batch) > 0 {
				timer.Reset(l.o.Linger)
				armed = true
			}
		case <-timer.C:
			armed = false
			write()
		case <-l.ctx.Done():
			for {
				select {
				case n := <-l.q:
					add(n)
				default:
					write()
					return
				}
			}
		}
	}
}
