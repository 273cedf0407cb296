package fleet

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postbackedge/caddy-postback/storage"
)

// Queue is the fleet's replicated queue of pending deliveries (queue
// jetstream): the queue half of a delivery.Store on JetStream, which every
// edge drains with the dispatcher's rules unchanged. docs/fleet-queue.md
// has the design; in short: one stream, a subject per DIN, one durable
// consumer per DIN shared by the edges (its MaxAckPending is the DIN's
// concurrency, fleet-wide), retries as scheduled messages, failed
// deliveries in a bucket until retried.
//
// A message fetched by this edge is held until Complete; from the start of
// its attempt (AttemptStarted) to Complete the edge tells JetStream it is
// still at it, so no other edge attempts it meanwhile. An edge that dies
// stops telling: after AckWait another edge gets the delivery.
type Queue struct {
	f      *Fleet
	stream jetstream.Stream
	failed jetstream.KeyValue
	now    func() time.Time

	mu    sync.Mutex
	dins  map[string]*dinQueue
	held  map[string]*heldMsg // by delivery id
	cause error               // set by Close

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// DINConfig is what the queue needs of a destination: its concurrency
// (fleet-wide) and how long one attempt may take.
type DINConfig struct {
	Concurrency int
	// Timeout is the destination's attempt timeout.
	Timeout time.Duration
	// AckWait is how long a fetched delivery stays this edge's without a
	// word before JetStream offers it to another edge; the edge renews it
	// while the attempt runs. Default Timeout + 10s.
	AckWait time.Duration
}

type dinQueue struct {
	cons jetstream.Consumer
	cfg  DINConfig
	// hint is the earliest retry this edge scheduled, for NextDue: a
	// scheduled message appears without waking anyone.
	hint time.Time
	// looked is when this edge last looked for redeliveries with the
	// DIN's concurrency used up (fetch).
	looked time.Time
}

type heldMsg struct {
	msg        jetstream.Msg
	d          storage.Delivery
	payload    []byte
	fetched    time.Time
	attempting bool
	renewed    time.Time
	ackWait    time.Duration
}

// queued is a message's content, sealed.
type queued struct {
	Delivery storage.Delivery `json:"d"`
	Payload  []byte           `json:"p"`
}

const (
	// ackMargin is added to the attempt timeout for the default ack wait:
	// recording the answer takes milliseconds, the renewals cover stalls.
	// It is also how long a killed edge's attempts wait for another edge.
	ackMargin = 10 * time.Second
	// idHeader names the delivery a message holds, outside the seal: the
	// seal is bound to it.
	idHeader = "Postback-Delivery"
	// retryNowWithin: a retry due sooner than this goes straight back to
	// the queue (schedules have one-second resolution).
	retryNowWithin = time.Second
	// renewEvery is how often the renewals are looked at, at most (a short
	// ack wait is looked at more often, down to minRenewEvery).
	renewEvery    = time.Second
	minRenewEvery = 50 * time.Millisecond
	// redeliveryLook is how often, and redeliveryWait how long, an edge
	// looks for redeliveries while the fleet's concurrency is used up.
	redeliveryLook = 500 * time.Millisecond
	redeliveryWait = 50 * time.Millisecond
)

var errQueueClosed = errors.New("cluster queue: closed")

// Queue opens (or makes) the fleet's queue stream and failed bucket, and
// starts renewing attempts in flight. Call Configure before Due.
func (f *Fleet) Queue(ctx context.Context) (*Queue, error) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.ConnectTimeout+10*time.Second)
	defer cancel()
	st, err := f.queueStream(ctx)
	if err != nil {
		return nil, err
	}
	failed, err := f.bucket(ctx, "failed", "failed deliveries with their payload, until retried (queue jetstream)")
	if err != nil {
		return nil, err
	}
	q := &Queue{f: f, stream: st, failed: failed, now: time.Now, dins: map[string]*dinQueue{}, held: map[string]*heldMsg{}}
	rctx, stop := context.WithCancel(context.Background())
	q.cancel = stop
	q.wg.Go(func() { q.renew(rctx) })
	f.queue.Store(q)
	return q, nil
}

func (f *Fleet) queueName() string              { return f.opts.Prefix + "_queue" }
func (f *Fleet) queueSubject(din string) string { return f.opts.Prefix + ".queue." + din }
func (f *Fleet) schedSubject(din, id string) string {
	return f.opts.Prefix + ".sched." + din + "." + id
}

// queueStream opens the stream, making it if absent, and checks it as
// bucket does.
func (f *Fleet) queueStream(ctx context.Context) (jetstream.Stream, error) {
	name := f.queueName()
	st, err := f.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = f.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        name,
			Description: "caddy-postback: pending deliveries, sealed (queue jetstream)",
			Subjects:    []string{f.opts.Prefix + ".queue.*", f.opts.Prefix + ".sched.*.*"},
			// A message acknowledged is gone: the stream holds what is
			// pending, nothing else.
			Retention: jetstream.WorkQueuePolicy,
			Storage:   jetstream.FileStorage,
			Replicas:  f.opts.Replicas,
			// A publish retried after a lost acknowledgement is stored once.
			Duplicates:        2 * time.Minute,
			AllowMsgSchedules: true,
			AllowRollup:       true, // message schedules require it
			Metadata:          map[string]string{schemaKey: strconv.Itoa(schemaVersion)},
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = f.js.Stream(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: stream %s: %w", name, explain(err, f.opts.Replicas))
	}
	cfg := st.CachedInfo().Config
	if v := cfg.Metadata[schemaKey]; v != strconv.Itoa(schemaVersion) {
		return nil, fmt.Errorf("cluster: stream %s was not made by this version of caddy-postback (schema %q, want %d); use another prefix, or remove the stream", name, v, schemaVersion)
	}
	if cfg.Replicas != f.opts.Replicas {
		return nil, fmt.Errorf("cluster: stream %s has %d replicas, the config asks for %d; every edge must use the same replicas", name, cfg.Replicas, f.opts.Replicas)
	}
	return st, nil
}

// Configure makes or updates the consumer of each DIN: its MaxAckPending
// is the DIN's concurrency, for the whole fleet. DINs no longer
// configured are no longer fetched (their consumers stay for other edges).
func (q *Queue) Configure(ctx context.Context, dins map[string]DINConfig) error {
	next := make(map[string]*dinQueue, len(dins))
	for din, c := range dins {
		c.Concurrency = max(c.Concurrency, 1)
		if c.AckWait <= 0 {
			c.AckWait = c.Timeout + ackMargin
		}
		cons, err := q.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       "q_" + din,
			Description:   "caddy-postback: deliveries to DIN " + din,
			FilterSubject: q.f.queueSubject(din),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       c.AckWait,
			MaxAckPending: c.Concurrency,
			MaxDeliver:    -1,
		})
		if err != nil {
			return fmt.Errorf("cluster: queue consumer for DIN %s: %w", din, err)
		}
		next[din] = &dinQueue{cons: cons, cfg: c}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for din, dq := range next {
		if old := q.dins[din]; old != nil {
			dq.hint = old.hint
		}
	}
	q.dins = next
	return nil
}

// Enqueue publishes one pending delivery per item and returns when
// JetStream has stored every one (a quorum of replicas): that is the
// durability point of queue jetstream. An error means none may be assumed
// stored (some may be: they are delivered, at least once).
func (q *Queue) Enqueue(ctx context.Context, items []storage.NewDelivery) ([]storage.Delivery, error) {
	if err := q.closed(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	now := q.now()
	out := make([]storage.Delivery, 0, len(items))
	futures := make([]jetstream.PubAckFuture, 0, len(items))
	for _, it := range items {
		if it.Held {
			return nil, fmt.Errorf("cluster queue: held deliveries (only_accepted) are not supported with queue jetstream")
		}
		d := storage.NewRecord(it, now)
		d.Node = q.f.opts.Node // the edge that took the notification, wherever it is attempted
		msg, err := q.message(q.f.queueSubject(d.DIN), d, it.Payload)
		if err != nil {
			return nil, err
		}
		fut, err := q.f.js.PublishMsgAsync(msg, jetstream.WithMsgID(d.ID+".0"))
		if err != nil {
			return nil, fmt.Errorf("cluster queue: publish: %w", err)
		}
		futures = append(futures, fut)
		out = append(out, d)
	}
	for _, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return nil, fmt.Errorf("cluster queue: not stored: %w", err)
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster queue: not stored: %w", ctx.Err())
		}
	}
	return out, nil
}

// message seals d and payload for subject; the seal is bound to the DIN
// and the id, so a message cannot pass for another delivery.
func (q *Queue) message(subject string, d storage.Delivery, payload []byte) (*nats.Msg, error) {
	b, err := json.Marshal(queued{Delivery: d, Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("cluster queue: encode %s: %w", d.ID, err)
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(idHeader, d.ID)
	msg.Data = q.f.seal.seal(sealName(d.DIN, d.ID), b)
	return msg, nil
}

func sealName(din, id string) string { return "queue." + din + "." + id }

// open reads a fetched message.
func (q *Queue) open(din string, msg jetstream.Msg) (queued, error) {
	id := msg.Headers().Get(idHeader)
	plain, err := q.f.seal.open(sealName(din, id), msg.Data())
	if err != nil {
		return queued{}, fmt.Errorf("cluster queue: message of delivery %q: %w", id, err)
	}
	var v queued
	if err := json.Unmarshal(plain, &v); err != nil || v.Delivery.ID != id || v.Delivery.DIN != din {
		return queued{}, fmt.Errorf("cluster queue: message of delivery %q: malformed", id)
	}
	return v, nil
}

// Due returns din's deliveries that this edge holds and not yet completed,
// and fetches up to limit of them from the DIN's consumer: whatever is in
// the queue subject is due (a retry appears there when it is due).
func (q *Queue) Due(din string, now time.Time, limit int) ([]storage.Delivery, error) {
	q.mu.Lock()
	if q.cause != nil {
		q.mu.Unlock()
		return nil, q.cause
	}
	dq := q.dins[din]
	var out []storage.Delivery
	for id, h := range q.held {
		if h.d.DIN != din {
			continue
		}
		if !h.attempting && now.Sub(h.fetched) > h.ackWait {
			delete(q.held, id) // JetStream offers it again, to any edge
			continue
		}
		out = append(out, h.d)
	}
	q.mu.Unlock()
	if dq == nil {
		return out, nil
	}
	batch, err := q.fetch(dq, limit-len(out), len(out))
	if err != nil {
		return out, fmt.Errorf("cluster queue: fetch DIN %s: %w", din, err)
	}
	if batch != nil {
		for msg := range batch.Messages() {
			if d, ok := q.take(din, dq, msg); ok {
				out = append(out, d)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return out, fmt.Errorf("cluster queue: fetch DIN %s: %w", din, err)
		}
	}
	slices.SortFunc(out, func(a, b storage.Delivery) int {
		return cmp.Or(a.NextAttempt.Compare(b.NextAttempt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// fetch takes up to want more of the DIN's deliveries: at most its
// concurrency less what this edge holds, and what the fleet leaves free.
// A fetch without wait that JetStream cannot serve at once (the concurrency
// used up by others) would stall the DIN's loop for a second, so when the
// consumer says nothing is free the edge only looks, now and then and
// briefly, for what it may redeliver (an attempt of a dead edge, whose
// hold ran out, is delivered again even then).
func (q *Queue) fetch(dq *dinQueue, want, heldHere int) (jetstream.MessageBatch, error) {
	n := min(want, dq.cfg.Concurrency-heldHere)
	if n <= 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	info, err := dq.cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return nil, nil // nothing waits, nothing is held anywhere
	}
	if free := info.Config.MaxAckPending - info.NumAckPending; info.NumPending > 0 && free > 0 {
		return dq.cons.FetchNoWait(min(n, free))
	}
	q.mu.Lock()
	due := q.now().Sub(dq.looked) >= redeliveryLook
	if due {
		dq.looked = q.now()
	}
	q.mu.Unlock()
	if !due {
		return nil, nil
	}
	return dq.cons.Fetch(n, jetstream.FetchMaxWait(redeliveryWait))
}

// take holds a fetched message. One that cannot be read is terminated (it
// would come back for ever) and logged: nothing of it can be delivered.
func (q *Queue) take(din string, dq *dinQueue, msg jetstream.Msg) (storage.Delivery, bool) {
	v, err := q.open(din, msg)
	if err != nil {
		q.f.opts.Logger.Error("cluster queue: message dropped", "din", din, "error", err)
		_ = msg.Term()
		return storage.Delivery{}, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	// A redelivery of one this edge held (its ack wait ran out) replaces
	// the old handle, which JetStream no longer honours.
	q.held[v.Delivery.ID] = &heldMsg{msg: msg, d: v.Delivery, payload: v.Payload, fetched: q.now(), ackWait: dq.cfg.AckWait}
	return v.Delivery, true
}

// NextDue is the earliest of din's held deliveries not being attempted and
// of the retries this edge scheduled; other edges' retries and new
// deliveries are found by the dispatcher's poll (or a wake).
func (q *Queue) NextDue(din string) (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var next time.Time
	for _, h := range q.held {
		if h.d.DIN == din && !h.attempting && (next.IsZero() || h.d.NextAttempt.Before(next)) {
			next = h.d.NextAttempt
		}
	}
	if dq := q.dins[din]; dq != nil && !dq.hint.IsZero() {
		if dq.hint.Before(q.now()) {
			dq.hint = time.Time{}
		} else if next.IsZero() || dq.hint.Before(next) {
			next = dq.hint
		}
	}
	return next, !next.IsZero()
}

// PendingDINs lists the DINs with deliveries in the queue subject.
func (q *Queue) PendingDINs() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(q.f.opts.Prefix+".queue.*"))
	if err != nil {
		return nil, fmt.Errorf("cluster queue: pending DINs: %w", err)
	}
	var dins []string
	for subj := range info.State.Subjects {
		dins = append(dins, strings.TrimPrefix(subj, q.f.opts.Prefix+".queue."))
	}
	slices.Sort(dins)
	return dins, nil
}

// AttemptStarted marks id's attempt started (delivery.AttemptStarter):
// the hold is renewed at once, then until Complete. A delivery fetched so
// long ago that JetStream may have offered it to another edge is given
// back instead (false): the attempt is not made here.
func (q *Queue) AttemptStarted(id string) bool {
	q.mu.Lock()
	h := q.held[id]
	switch {
	case h == nil:
		q.mu.Unlock()
		return false
	case h.attempting:
		q.mu.Unlock()
		return true
	case q.now().Sub(h.fetched) > h.ackWait*2/3:
		delete(q.held, id)
		q.mu.Unlock()
		_ = h.msg.Nak()
		return false
	}
	h.attempting, h.renewed = true, q.now()
	q.mu.Unlock()
	if err := h.msg.InProgress(); err != nil {
		q.f.opts.Logger.Warn("cluster queue: attempt not renewed", "id", id, "error", err)
	}
	return true
}

// Payload returns what to send for id; it marks the attempt started too.
func (q *Queue) Payload(id string) ([]byte, error) {
	if !q.AttemptStarted(id) {
		return nil, fmt.Errorf("cluster queue: payload %s: not held by this edge: %w", id, storage.ErrNotFound)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.held[id]
	if h == nil {
		return nil, fmt.Errorf("cluster queue: payload %s: not held by this edge: %w", id, storage.ErrNotFound)
	}
	return h.payload, nil
}

// renew tells JetStream, every renewEvery, that the attempts of this edge
// are still running, well before their ack wait runs out.
func (q *Queue) renew(ctx context.Context) {
	t := time.NewTimer(renewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := q.now()
		var due []jetstream.Msg
		every := renewEvery
		q.mu.Lock()
		for _, h := range q.held {
			// Looked at four times per ack wait, renewed at a third of it.
			every = max(min(every, h.ackWait/4), minRenewEvery)
			if h.attempting && now.Sub(h.renewed) >= h.ackWait/3 {
				h.renewed = now
				due = append(due, h.msg)
			}
		}
		q.mu.Unlock()
		t.Reset(every)
		for _, m := range due {
			if err := m.InProgress(); err != nil {
				q.f.opts.Logger.Warn("cluster queue: attempt not renewed", "error", err)
			}
		}
	}
}

// Complete records the attempt and applies the outcome: delivered or
// spooled, the message is acknowledged; a retry is scheduled with the new
// record first; failed, the delivery goes to the failed bucket first. An
// edge that dies between the two steps leaves the old message, which comes
// back: a duplicate at worst, never a loss.
func (q *Queue) Complete(id string, a storage.Attempt, out storage.Outcome) (storage.Delivery, error) {
	q.mu.Lock()
	h := q.held[id]
	q.mu.Unlock()
	if h == nil {
		return storage.Delivery{}, fmt.Errorf("cluster queue: complete %s: not held by this edge: %w", id, storage.ErrConflict)
	}
	d := h.d
	d.Attempts = slices.Clone(d.Attempts)
	storage.ApplyOutcome(&d, a, out, q.now())
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var err error
	switch d.State {
	case storage.StatePending:
		err = q.schedule(ctx, d, h.payload)
	case storage.StateFailed:
		err = q.keepFailed(ctx, d, h.payload)
	}
	if err != nil {
		// Not recorded: the attempt is over, so its hold is no longer
		// renewed; the delivery comes back (to this edge or another) and
		// is attempted again.
		q.mu.Lock()
		h.attempting = false
		q.mu.Unlock()
		return storage.Delivery{}, fmt.Errorf("cluster queue: complete %s: %w", id, err)
	}
	q.mu.Lock()
	delete(q.held, id)
	q.mu.Unlock()
	if err := h.msg.DoubleAck(ctx); err != nil {
		// The outcome is stored; the old message may come back to an edge
		// (its ack wait ran out, or NATS lost the ack): sent again, with
		// the same id.
		q.f.opts.Logger.Warn("cluster queue: delivery completed, its message not acknowledged", "id", id, "error", err)
	}
	return d, nil
}

// schedule puts a retry of d back for its next attempt.
func (q *Queue) schedule(ctx context.Context, d storage.Delivery, payload []byte) error {
	msgID := d.ID + "." + strconv.Itoa(len(d.Attempts))
	if d.NextAttempt.Sub(q.now()) < retryNowWithin {
		return q.publish(ctx, q.f.queueSubject(d.DIN), d, payload, jetstream.WithMsgID(msgID))
	}
	// Schedules have whole seconds: round up, never attempt early.
	at := d.NextAttempt.Truncate(time.Second)
	if at.Before(d.NextAttempt) {
		at = at.Add(time.Second)
	}
	err := q.publish(ctx, q.f.schedSubject(d.DIN, d.ID), d, payload,
		jetstream.WithMsgID(msgID), jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(q.f.queueSubject(d.DIN)))
	if err != nil {
		return err
	}
	q.mu.Lock()
	if dq := q.dins[d.DIN]; dq != nil && (dq.hint.IsZero() || at.Before(dq.hint)) {
		dq.hint = at
	}
	q.mu.Unlock()
	return nil
}

func (q *Queue) publish(ctx context.Context, subject string, d storage.Delivery, payload []byte, opts ...jetstream.PublishOpt) error {
	msg, err := q.message(subject, d, payload)
	if err != nil {
		return err
	}
	if _, err := q.f.js.PublishMsg(ctx, msg, opts...); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// keepFailed stores a failed delivery with its payload for a manual retry
// from any edge.
func (q *Queue) keepFailed(ctx context.Context, d storage.Delivery, payload []byte) error {
	b, err := json.Marshal(queued{Delivery: d, Payload: payload})
	if err != nil {
		return err
	}
	key := failedKey(d.DIN, d.ID)
	if _, err := q.failed.Put(ctx, key, q.f.seal.seal(key, b)); err != nil {
		return fmt.Errorf("keep failed: %w", err)
	}
	return nil
}

// failedKey is <din>.<id>: the failed of a DIN are counted by its keys.
func failedKey(din, id string) string { return din + "." + id }

// findFailed is the failed bucket's key of id.
func (q *Queue) findFailed(ctx context.Context, id string) (string, error) {
	lister, err := q.failed.ListKeysFiltered(ctx, "*."+id)
	if err != nil {
		return "", err
	}
	defer lister.Stop()
	for k := range lister.Keys() {
		return k, nil
	}
	return "", jetstream.ErrKeyNotFound
}

// Retry puts a failed delivery back in the queue, due now, from any edge.
func (q *Queue) Retry(id string, now time.Time) (storage.Delivery, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	key, err := q.findFailed(ctx, id)
	var entry jetstream.KeyValueEntry
	if err == nil {
		entry, err = q.failed.Get(ctx, key)
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return storage.Delivery{}, fmt.Errorf("cluster queue: retry %s: not a failed delivery of the fleet's queue: %w", id, storage.ErrNotFound)
	}
	if err != nil {
		return storage.Delivery{}, fmt.Errorf("cluster queue: retry %s: %w", id, err)
	}
	plain, err := q.f.seal.open(key, entry.Value())
	if err != nil {
		return storage.Delivery{}, fmt.Errorf("cluster queue: retry %s: %w", id, err)
	}
	var v queued
	if err := json.Unmarshal(plain, &v); err != nil || v.Delivery.ID != id {
		return storage.Delivery{}, fmt.Errorf("cluster queue: retry %s: malformed entry", id)
	}
	d := v.Delivery
	d.State, d.NextAttempt, d.Updated, d.LastError = storage.StatePending, now, now, ""
	// The revision makes each retry a new message for the duplicate window.
	msgID := d.ID + ".r" + strconv.FormatUint(entry.Revision(), 10)
	if err := q.publish(ctx, q.f.queueSubject(d.DIN), d, v.Payload, jetstream.WithMsgID(msgID)); err != nil {
		return storage.Delivery{}, fmt.Errorf("cluster queue: retry %s: %w", id, err)
	}
	// Only the entry this retry read: a second retry of it at once finds
	// it gone (ErrNotFound), not sent twice.
	if err := q.failed.Delete(ctx, key, jetstream.LastRevision(entry.Revision())); err != nil {
		q.f.opts.Logger.Warn("cluster queue: retried delivery still listed as failed", "id", id, "error", err)
	}
	return d, nil
}

// RetryMany is Retry for several; those not failed (any more) are skipped.
func (q *Queue) RetryMany(ids []string, now time.Time) ([]storage.Delivery, error) {
	var out []storage.Delivery
	for _, id := range ids {
		d, err := q.Retry(id, now)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
	return out, nil
}

// Close gives back what this edge holds (at once, for the other edges)
// and stops renewing.
func (q *Queue) Close() error {
	q.cancel()
	q.wg.Wait()
	q.mu.Lock()
	held := q.held
	q.held, q.cause = map[string]*heldMsg{}, errQueueClosed
	q.mu.Unlock()
	for _, h := range held {
		_ = h.msg.Nak()
	}
	return nil
}

func (q *Queue) closed() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.cause
}

type dinCounts struct{ pending, failed int }

// counts is what the queue holds per DIN: pending (in the queue subject,
// being attempted, or a retry scheduled) and failed.
func (q *Queue) counts(ctx context.Context) (map[string]dinCounts, error) {
	out := map[string]dinCounts{}
	info, err := q.stream.Info(ctx, jetstream.WithSubjectFilter(q.f.opts.Prefix+".>"))
	if err != nil {
		return nil, fmt.Errorf("cluster queue: counts: %w", err)
	}
	for subj, n := range info.State.Subjects {
		rest := strings.TrimPrefix(subj, q.f.opts.Prefix+".")
		kind, din, _ := strings.Cut(rest, ".")
		if kind == "sched" {
			din, _, _ = strings.Cut(din, ".")
		}
		c := out[din]
		c.pending += int(n)
		out[din] = c
	}
	lister, err := q.failed.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster queue: counts: %w", err)
	}
	defer lister.Stop()
	for k := range lister.Keys() {
		din, _, _ := strings.Cut(k, ".")
		c := out[din]
		c.failed++
		out[din] = c
	}
	return out, nil
}

// ListFailed lists the fleet's failed deliveries newest first, with
// f's DIN, Since, Until, Limit and Cursor (the last id of the previous
// page): what a bulk retry pages through.
func (q *Queue) ListFailed(f storage.Filter) ([]storage.Delivery, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	filter := "*.*"
	if f.DIN != "" {
		filter = f.DIN + ".*"
	}
	lister, err := q.failed.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, "", fmt.Errorf("cluster queue: list failed: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		_, id, _ := strings.Cut(k, ".")
		created, ok := storage.CreatedAt(id)
		if !ok || f.Cursor != "" && id >= f.Cursor ||
			!f.Since.IsZero() && created.Before(f.Since) || !f.Until.IsZero() && !created.Before(f.Until) {
			continue
		}
		keys = append(keys, k)
	}
	lister.Stop()
	idOf := func(k string) string { _, id, _ := strings.Cut(k, "."); return id }
	slices.SortFunc(keys, func(a, b string) int { return strings.Compare(idOf(b), idOf(a)) })
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	var next string
	if len(keys) > limit {
		keys, next = keys[:limit], idOf(keys[limit-1])
	}
	out := make([]storage.Delivery, 0, len(keys))
	for _, k := range keys {
		entry, err := q.failed.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // retried meanwhile
		}
		if err != nil {
			return nil, "", fmt.Errorf("cluster queue: list failed: %w", err)
		}
		plain, err := q.f.seal.open(k, entry.Value())
		if err != nil {
			return nil, "", fmt.Errorf("cluster queue: list failed %s: %w", k, err)
		}
		var v queued
		if err := json.Unmarshal(plain, &v); err != nil {
			return nil, "", fmt.Errorf("cluster queue: list failed %s: malformed entry", k)
		}
		out = append(out, v.Delivery)
	}
	return out, next, nil
}
