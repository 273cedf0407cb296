package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// op is one mutation. apply reads through w and stages its writes and counter
// changes on w; it must return a refusal (ErrConflict, ErrNotFound, …) before
// staging anything it would not want written. apply may run twice when the
// batch has to be split, so it must not have other side effects.
type op interface {
	apply(w *wtx) (any, error)
}

// pending is an op waiting for its group commit.
type pending struct {
	op   op
	lazy bool // may wait up to Options.LazyDelay to share a commit
	res  any
	err  error
	done chan struct{}
}

// submit hands op to the committer and waits for its answer. When ctx ends
// first, ctx's error is returned; the write may still happen.
func (s *Store) submit(ctx context.Context, o op) (any, error) {
	return s.submitOp(ctx, &pending{op: o, done: make(chan struct{})})
}

// submitLazy is submit for ops nobody is waiting on the request path for
// (delivery outcomes, maintenance): when nothing urgent is being written they
// wait up to LazyDelay for an urgent op, so that both share one synced commit
// instead of paying for two.
func (s *Store) submitLazy(o op) (any, error) {
	return s.submitOp(context.Background(), &pending{op: o, lazy: true, done: make(chan struct{})})
}

func (s *Store) submitOp(ctx context.Context, p *pending) (any, error) {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return nil, ErrClosed
	}
	// Holding closeMu shared while sending is what keeps Close from closing
	// the channel under us; the committer keeps receiving until it is closed.
	select {
	case s.ops <- p:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return nil, ctx.Err()
	}
	s.closeMu.RUnlock()
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// lazyEnough is the batch of lazy ops that commits without waiting: it
// already shares its sync widely, and waiting would only add latency.
const lazyEnough = 16

// commitLoop is the single writer: it gathers whatever ops are waiting (up to
// MaxBatch) and commits them in one synced transaction. Urgent ops wait for
// nothing else: ops that arrive while a batch is being synced form the next
// batch. A batch of lazy ops only waits up to LazyDelay for an urgent op to
// ride along with.
func (s *Store) commitLoop() {
	defer close(s.done)
	batch := make([]*pending, 0, s.opts.MaxBatch)
	var timer *time.Timer
	for p := range s.ops {
		batch = append(batch[:0], p)
		urgent := !p.lazy
		open := s.gather(&batch, &urgent)
		enough := min(lazyEnough, s.opts.MaxBatch)
		if !urgent && open && s.opts.LazyDelay > 0 && len(batch) < enough {
			if timer == nil {
				timer = time.NewTimer(s.opts.LazyDelay)
			} else {
				timer.Reset(s.opts.LazyDelay)
			}
		wait:
			for len(batch) < enough {
				select {
				case q, ok := <-s.ops:
					if !ok {
						break wait
					}
					batch = append(batch, q)
					urgent = !q.lazy // false until now
					if !s.gather(&batch, &urgent) || urgent {
						break wait
					}
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		s.runBatch(batch)
	}
}

// gather appends the ops already waiting, up to MaxBatch, noting whether one
// is urgent. It reports false once the channel is closed.
func (s *Store) gather(batch *[]*pending, urgent *bool) bool {
	for len(*batch) < s.opts.MaxBatch {
		select {
		case q, ok := <-s.ops:
			if !ok {
				return false
			}
			*batch = append(*batch, q)
			*urgent = *urgent || !q.lazy
		default:
			return true
		}
	}
	return true
}

// runBatch applies a batch in as few transactions as Badger's size limit
// allows (usually one), makes it durable, then answers every op.
func (s *Store) runBatch(batch []*pending) {
	if err := s.space.write(0); err != nil {
		for _, p := range batch {
			p.res, p.err = nil, fmt.Errorf("store write: %w", err)
			close(p.done)
		}
		return
	}
	var committed []*pending // ops of transactions that committed
	wrote := false
	group := make([]*pending, 0, len(batch))
	w := s.newWtx()
	flush := func() {
		if w.count > 0 {
			wrote = true
		}
		err := w.commit()
		if err == nil {
			s.space.wrote(w.size)
		}
		for _, p := range group {
			if err != nil {
				p.res, p.err = nil, fmt.Errorf("store write: %w", err)
			} else {
				committed = append(committed, p)
			}
		}
		group = group[:0]
	}
	for _, p := range batch {
		res, err := w.stage(p.op)
		if err == nil && !w.fits() && len(group) > 0 {
			// Badger refuses transactions over ~15 % of a memtable: commit what
			// we have and run this op again on the next transaction.
			w.drop()
			flush()
			w = s.newWtx()
			res, err = w.stage(p.op)
		}
		if err == nil && !w.fits() {
			w.drop()
			res, err = nil, fmt.Errorf("store write: operation too large for one transaction (limit %d bytes)", s.maxSize)
		}
		if err == nil {
			w.accept()
		} else {
			w.drop()
		}
		p.res, p.err = res, err
		group = append(group, p)
	}
	flush()
	if wrote && len(committed) > 0 {
		s.batches.Add(1)
	}
	if s.opts.syncPerBatch && wrote && len(committed) > 0 {
		if err := s.db.Sync(); err != nil {
			for _, p := range committed {
				p.res, p.err = nil, fmt.Errorf("store sync: %w", err)
			}
		}
	}
	for _, p := range batch {
		close(p.done)
	}
}

// wtx is one Badger write transaction being filled by the committer, with the
// counter and hourly changes of the ops it holds.
type wtx struct {
	s           *Store
	txn         *badger.Txn
	size, count int64 // Badger's accounting of txn (see Txn.checkSize)
	reserved    int64 // room kept for the counters and hourly writes at commit
	broken      error // a write failed after accept: the txn must not commit

	counters map[string]*dinCounters // deltas (counts) and latest times
	hours    map[string]*hourDelta
	after    []func() // run once the transaction has committed (countersMu held)

	cur staged // the op being applied
}

type hourDelta struct {
	hour   time.Time
	din    string
	counts hourCounts
}

type hintKey struct {
	prefix string
	key    []byte
}

type staged struct {
	writes      []write
	size, count int64
	reserved    int64
	counters    map[string]*dinCounters
	hours       map[string]*hourDelta
	hints       []hintKey
	after       []func()
}

// write is one staged Set (e) or Delete (key).
type write struct {
	e   *badger.Entry
	key []byte
	del bool
}

func (s *Store) newWtx() *wtx {
	return &wtx{
		s:        s,
		txn:      s.db.NewTransaction(true),
		counters: make(map[string]*dinCounters),
		hours:    make(map[string]*hourDelta),
	}
}

// stage runs o against w with empty staging.
func (w *wtx) stage(o op) (any, error) {
	w.drop()
	return o.apply(w)
}

func (w *wtx) drop() { w.cur = staged{} }

// entryCost mirrors Badger's Txn.checkSize so that we never hit ErrTxnTooBig
// half-way through an op.
func (w *wtx) entryCost(key []byte, vlen int) int64 {
	v := int64(vlen)
	if v >= w.s.opts.ValueThreshold {
		v = 12 // a value pointer
	}
	return int64(len(key)) + v + 2 + 10
}

// fits reports whether the staged op can join the transaction, keeping room
// for Badger's commit marker.
func (w *wtx) fits() bool {
	size := w.size + w.reserved + w.cur.size + w.cur.reserved + 64
	count := w.count + w.cur.count + 2
	return size < w.s.maxSize && count < w.s.maxCount
}

// accept moves the staged op into the transaction.
func (w *wtx) accept() {
	for _, wr := range w.cur.writes {
		var err error
		if wr.del {
			err = w.txn.Delete(wr.key)
		} else {
			err = w.txn.SetEntry(wr.e)
		}
		if err != nil && w.broken == nil {
			w.broken = err
		}
	}
	w.size += w.cur.size
	w.count += w.cur.count
	w.reserved += w.cur.reserved
	for din, d := range w.cur.counters {
		mergeCounters(w.counter(din), d)
	}
	for k, d := range w.cur.hours {
		if h, ok := w.hours[k]; ok {
			h.counts.addAll(d.counts)
		} else {
			w.hours[k] = d
		}
	}
	for _, h := range w.cur.hints {
		w.s.due.lower(h.prefix, h.key)
	}
	w.after = append(w.after, w.cur.after...)
	w.drop()
}

func (w *wtx) counter(din string) *dinCounters {
	c, ok := w.counters[din]
	if !ok {
		c = &dinCounters{}
		w.counters[din] = c
	}
	return c
}

// commit writes the counters and hourly buckets touched, commits, and on
// success applies the counter deltas to memory, so memory always matches
// what Badger holds.
func (w *wtx) commit() error {
	defer w.s.due.settled()
	if w.broken != nil {
		w.txn.Discard()
		return w.broken
	}
	if w.count == 0 {
		w.txn.Discard()
		return nil
	}
	next := make(map[string]dinCounters, len(w.counters))
	w.s.countersMu.Lock()
	for din, d := range w.counters {
		var c dinCounters
		if old, ok := w.s.counters[din]; ok {
			c = *old
		}
		mergeCounters(&c, d)
		next[din] = c
	}
	w.s.countersMu.Unlock()
	for din, c := range next {
		if err := w.txn.Set(statsKey(din), encodeCounters(&c)); err != nil {
			w.txn.Discard()
			return err
		}
	}
	for k, d := range w.hours {
		key := []byte(k)
		var h hourCounts
		item, err := w.txn.Get(key)
		switch {
		case err == nil:
			v, err := item.ValueCopy(nil)
			if err != nil {
				w.txn.Discard()
				return err
			}
			if h, err = decodeHour(v); err != nil {
				w.s.log.Warn("hourly bucket unreadable, restarting it", "din", d.din, "hour", d.hour, "error", err)
				h = hourCounts{}
			}
		case !errors.Is(err, badger.ErrKeyNotFound):
			w.txn.Discard()
			return err
		}
		h.addAll(d.counts)
		if err := w.txn.Set(key, encodeHour(h)); err != nil {
			w.txn.Discard()
			return err
		}
	}
	if w.s.beforeCommit != nil {
		w.s.beforeCommit()
	}
	if err := w.txn.Commit(); err != nil {
		return err
	}
	w.s.countersMu.Lock()
	for din, c := range next {
		cc := c
		w.s.counters[din] = &cc
	}
	// Under the same lock as the counters, so that Stats never sees a
	// delivery both in the journal's table and in Badger's counts.
	for _, f := range w.after {
		f()
	}
	w.s.countersMu.Unlock()
	return nil
}

func mergeCounters(c *dinCounters, d *dinCounters) {
	c.Pending += d.Pending
	c.Delivered += d.Delivered
	c.Failed += d.Failed
	c.Spooled += d.Spooled
	c.Held += d.Held
	c.Cancelled += d.Cancelled
	if d.LastSuccess.After(c.LastSuccess) {
		c.LastSuccess = d.LastSuccess
	}
	if !d.LastError.IsZero() && !d.LastError.Before(c.LastError) {
		c.LastError = d.LastError
		c.LastErrorText = d.LastErrorText
	}
}

// Staging helpers used by ops.

// get reads key as the transaction sees it (earlier ops of the batch
// included). found is false when the key is absent.
func (w *wtx) get(key []byte) (v []byte, found bool, err error) {
	item, err := w.txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err = item.ValueCopy(nil)
	return v, err == nil, err
}

func (w *wtx) put(e *badger.Entry) {
	w.cur.writes = append(w.cur.writes, write{e: e})
	w.cur.size += w.entryCost(e.Key, len(e.Value))
	w.cur.count++
}

func (w *wtx) set(key, val []byte) { w.put(badger.NewEntry(key, val)) }

func (w *wtx) del(key []byte) {
	w.cur.writes = append(w.cur.writes, write{key: key, del: true})
	w.cur.size += w.entryCost(key, 0)
	w.cur.count++
}

// afterCommit runs f once the transaction holding the op has committed.
func (w *wtx) afterCommit(f func()) { w.cur.after = append(w.cur.after, f) }

// hint records an inserted index key so that scans never seek past it.
func (w *wtx) hint(prefix []byte, key []byte) {
	w.cur.hints = append(w.cur.hints, hintKey{prefix: string(prefix), key: key})
}

// stagedCounter returns the op's counter delta for din, reserving room for
// the DIN's counters write if the transaction does not touch it yet.
func (w *wtx) stagedCounter(din string) *dinCounters {
	if w.cur.counters == nil {
		w.cur.counters = make(map[string]*dinCounters)
	}
	c, ok := w.cur.counters[din]
	if !ok {
		c = &dinCounters{}
		w.cur.counters[din] = c
		if _, inTxn := w.counters[din]; !inTxn {
			w.cur.reserved += w.entryCost(statsKey(din), maxCountersLen)
			w.cur.count++
		}
	}
	return c
}

func (w *wtx) countState(din string, st State, n int64) { w.stagedCounter(din).add(st, n) }

func (w *wtx) success(din string, at time.Time) {
	c := w.stagedCounter(din)
	if at.After(c.LastSuccess) {
		c.LastSuccess = at
	}
}

func (w *wtx) failure(din string, at time.Time, text string) {
	c := w.stagedCounter(din)
	if !at.Before(c.LastError) {
		c.LastError = at
		c.LastErrorText = clip(text)
	}
}

// hourly adds counts to the UTC hour of at for din.
func (w *wtx) hourly(din string, at time.Time, counts hourCounts) {
	hour := at.UTC().Truncate(time.Hour)
	k := string(hourKey(hour, din))
	if w.cur.hours == nil {
		w.cur.hours = make(map[string]*hourDelta)
	}
	h, ok := w.cur.hours[k]
	if !ok {
		h = &hourDelta{hour: hour, din: din}
		w.cur.hours[k] = h
		if _, inTxn := w.hours[k]; !inTxn {
			w.cur.reserved += w.entryCost([]byte(k), maxHourLen)
			w.cur.count++
		}
	}
	h.counts.addAll(counts)
}
