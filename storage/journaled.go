package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The request path's side of the journal (docs/journal.md): Enqueue appends
// new deliveries to the journal, one fsync per group, and hands them to the
// fresh table, from which their first attempt reads them. Badger receives
// them afterwards, off the request path, in batches: with their outcome
// (absorb), or unattempted (spill). The journal releases its head once
// Badger holds, synced, every delivery written before it.

// Defaults of the journal's Options.
const (
	defaultFreshCount  = 16384
	defaultFreshBytes  = 16 << 20
	defaultFreshAge    = 5 * time.Second
	defaultAbsorbDelay = 25 * time.Millisecond
	// absorbMax bounds the deliveries one absorb or spill hands to the
	// committer at once (one op each, so that Badger's transaction limit
	// splits them as it splits any batch).
	absorbMax = 256
	// spillEvery is how often the table is looked at for entries to spill,
	// and releaseEvery how often the journal's head is released: each
	// release holds the appends for a metadata commit and the deletion of
	// segment files, so it comes rarely (a segment holds about a minute).
	spillEvery   = 250 * time.Millisecond
	releaseEvery = 30 * time.Second
)

// jpending is one Enqueue waiting for its group's fsync.
type jpending struct {
	frames  [][]byte
	entries []*freshEntry
	err     error
	done    chan struct{}
}

// enqueueJournaled writes items (none held) to the journal and returns their
// records once the group holding them is durable.
func (s *Store) enqueueJournaled(ctx context.Context, items []NewDelivery) ([]Delivery, error) {
	// Enqueues faster than Badger can take the spill (a flood for a
	// destination that is down) wait for it here rather than fill memory.
	if err := s.fresh.waitRoom(ctx, s.bgstop); err != nil {
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	now := s.now()
	p := &jpending{done: make(chan struct{})}
	out := make([]Delivery, len(items))
	for n, it := range items {
		i := s.nextID(now)
		d := newRecord(i, it, now)
		e := &freshEntry{id: i, rec: d, payload: append([]byte(nil), it.Payload...)}
		// Sealing here, on the caller's goroutine, keeps the appender's
		// share of the CPU to the write and the fsync.
		p.frames = append(p.frames, s.journal.frame(journaled{id: i, rec: d, payload: e.payload}))
		p.entries = append(p.entries, e)
		out[n] = d
	}
	s.closeMu.RLock()
	if s.closed || s.closing {
		s.closeMu.RUnlock()
		return nil, fmt.Errorf("enqueue: %w", ErrClosed)
	}
	select {
	case s.jops <- p:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return nil, fmt.Errorf("enqueue: %w", ctx.Err())
	}
	s.closeMu.RUnlock()
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("enqueue: %w", ctx.Err())
	}
	if p.err != nil {
		return nil, fmt.Errorf("enqueue: %w", p.err)
	}
	return out, nil
}

// appendLoop is the journal's single writer: it gathers the enqueues that
// are waiting into one append and one fsync (group commit), then puts them
// in the fresh table before answering, so that a Due after Enqueue sees them.
func (s *Store) appendLoop() {
	defer close(s.jdone)
	var group []*jpending
	var frames [][]byte
	for p := range s.jops {
		group = append(group[:0], p)
		frames = append(frames[:0], p.frames...)
	gather:
		for len(frames) < s.opts.MaxBatch {
			select {
			case q, ok := <-s.jops:
				if !ok {
					break gather
				}
				group = append(group, q)
				frames = append(frames, q.frames...)
			default:
				break gather
			}
		}
		first, err := s.journal.append(frames)
		if err == nil {
			var entries []*freshEntry
			idx := first
			for _, q := range group {
				for _, e := range q.entries {
					e.index = idx
					idx++
				}
				entries = append(entries, q.entries...)
			}
			if s.fresh.insert(entries) {
				s.kickSpill()
			}
			s.jnext.Store(idx)
			s.jcommits.Add(1)
		}
		for _, q := range group {
			q.err = err
			close(q.done)
		}
		clear(frames)
	}
}

// absorbReq is one completion of a fresh delivery, waiting for the batch
// that writes it to Badger.
type absorbReq struct {
	item absorbItem
	err  error
	done chan struct{}
}

// absorbItem is a fresh delivery as Badger is to hold it: its record after
// the attempt (or unchanged, spilled), with its payload unless delivered or
// spooled.
type absorbItem struct {
	e         *freshEntry
	d         Delivery
	a         Attempt
	attempted bool
	outErr    string
}

// absorbOp writes one fresh delivery into Badger; once committed it leaves
// the fresh table.
type absorbOp struct{ it absorbItem }

func (o *absorbOp) apply(w *wtx) (any, error) {
	d, e := o.it.d, o.it.e
	w.countOutcome(&d, o.it.a, o.it.attempted, o.it.outErr, w.s.now())
	if d.State == StatePending {
		w.insertDue(d.DIN, d.NextAttempt, e.id)
	}
	if d.HasPayload {
		w.set(payloadKey(e.id), e.payload)
	}
	w.set(deliveryKey(e.id), encodeRecord(&d))
	w.countState(d.DIN, d.State, 1)
	if e.listed {
		w.afterCommit(func() { w.s.fresh.moved(e) })
	}
	return nil, nil
}

// absorb hands items to the committer together, so that they share its
// group commits, and returns each one's error.
func (s *Store) absorb(items []absorbItem) []error {
	ps := make([]*pending, len(items))
	errs := make([]error, len(items))
	s.closeMu.RLock()
	for n, it := range items {
		if s.closed {
			errs[n] = ErrClosed
			continue
		}
		ps[n] = &pending{op: &absorbOp{it: it}, lazy: true, done: make(chan struct{})}
		s.ops <- ps[n]
	}
	s.closeMu.RUnlock()
	for n, p := range ps {
		if p != nil {
			<-p.done
			errs[n] = p.err
		}
	}
	return errs
}

// completeFresh records the outcome of a fresh delivery's attempt: its
// record goes to Badger with the next absorb batch (a retry or a failure
// with its payload), and it leaves the fresh table. found is false when the
// table does not hold id (any more): the caller completes it in Badger.
func (s *Store) completeFresh(i id, a Attempt, out Outcome) (d Delivery, found bool, err error) {
	for {
		e, wait := s.fresh.claim(i)
		if wait != nil {
			<-wait // a spill is writing it: then it is Badger's, or back here
			continue
		}
		if e == nil {
			return Delivery{}, false, nil
		}
		d = e.rec // a fresh record has no attempts yet: nothing shared to copy
		a, attempted := ApplyOutcome(&d, a, out, s.now())
		req := &absorbReq{item: absorbItem{e: e, d: d, a: a, attempted: attempted, outErr: out.Error}, done: make(chan struct{})}
		if err := s.sendAbsorb(req); err != nil {
			s.fresh.unclaim(e)
			return Delivery{}, true, err
		}
		<-req.done
		if req.err != nil {
			s.fresh.unclaim(e)
			return Delivery{}, true, req.err
		}
		return d, true, nil
	}
}

func (s *Store) sendAbsorb(req *absorbReq) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.absorbs <- req
	return nil
}

// absorbLoop writes completions to Badger in batches: it waits up to
// AbsorbDelay for more after the first, so that Badger's synced commits
// (and their msync) come tens of times a second, not once per delivery.
func (s *Store) absorbLoop() {
	defer close(s.adone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []*absorbReq
	for r := range s.absorbs {
		batch = append(batch[:0], r)
		timer.Reset(s.opts.AbsorbDelay)
	gather:
		for len(batch) < absorbMax {
			select {
			case q, ok := <-s.absorbs:
				if !ok {
					break gather
				}
				batch = append(batch, q)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		items := make([]absorbItem, len(batch))
		for n, r := range batch {
			items[n] = r.item
		}
		errs := s.absorb(items)
		for n, r := range batch {
			r.err = errs[n]
			close(r.done)
		}
		clear(batch)
	}
}

// kickSpill asks the journal's maintenance for a spill now.
func (s *Store) kickSpill() {
	select {
	case s.spillKick <- struct{}{}:
	default:
	}
}

// journalLoop spills what has waited too long (or what the bounds cannot
// hold) and releases the journal's head, until Close.
func (s *Store) journalLoop() {
	defer close(s.bgdone)
	spill := time.NewTicker(spillEvery)
	defer spill.Stop()
	release := time.NewTicker(s.opts.releaseEvery)
	defer release.Stop()
	for {
		select {
		case <-s.bgstop:
			return
		case <-spill.C:
			s.spill()
		case <-s.spillKick:
			s.spill()
		case <-release.C:
			if err := s.releaseJournal(); err != nil && !errors.Is(err, ErrClosed) {
				s.log.Warn("journal: releasing its head failed; it keeps growing until it succeeds", "error", err)
			}
		}
	}
}

// spill moves to Badger, pending and with their payload, the fresh
// deliveries that no attempt has taken within FreshAge (a destination down
// or slow, a DIN not configured) and those beyond the table's bounds.
func (s *Store) spill() {
	for {
		batch := s.fresh.claimSpill(s.now().Add(-s.opts.FreshAge), absorbMax, false)
		if len(batch) == 0 {
			return
		}
		if err := s.moveUnattempted(batch); err != nil {
			if !errors.Is(err, ErrClosed) {
				s.log.Warn("journal: moving deliveries into the store failed; they stay in the journal", "error", err)
			}
			return
		}
	}
}

// moveUnattempted writes claimed fresh deliveries into Badger as they are:
// pending, with their payload. Those that fail go back to the table; the
// first error is returned.
func (s *Store) moveUnattempted(batch []*freshEntry) error {
	items := make([]absorbItem, len(batch))
	for n, e := range batch {
		items[n] = absorbItem{e: e, d: e.rec}
	}
	var failed error
	for n, err := range s.absorb(items) {
		if err != nil {
			s.fresh.unclaim(batch[n])
			failed = cmp.Or(failed, err)
		} else {
			s.spilled.Add(1)
		}
	}
	return failed
}

// settleJournal moves every delivery of the fresh table into Badger (at
// Close: no attempt runs any more) and releases the journal up to its last
// entry, whose delivery Badger then holds too.
func (s *Store) settleJournal() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		batch := s.fresh.claimSpill(time.Time{}, absorbMax, true)
		if len(batch) == 0 {
			if n, _ := s.fresh.len(); n == 0 {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("completions still being recorded")
			}
			time.Sleep(time.Millisecond) // a completion being recorded
			continue
		}
		if err := s.moveUnattempted(batch); err != nil {
			return err
		}
	}
	return s.journal.release(s.journalNext())
}

// releaseJournal releases the journal's segments that hold only deliveries
// Badger has (every Badger commit is synced).
func (s *Store) releaseJournal() error {
	lw := s.fresh.lowWater(s.journalNext())
	if lw <= s.released {
		return nil
	}
	if err := s.journal.release(lw); err != nil {
		return err
	}
	s.released = lw
	return nil
}

// journalNext is the index after the last entry the fresh table has been
// given: the appender publishes it only after the insert, so that a release
// never passes entries the table has not seen yet.
func (s *Store) journalNext() uint64 { return s.jnext.Load() }

// replayJournal moves every delivery of the journal that Badger does not
// hold into Badger, pending, due at once, with its payload and its id: those
// whose outcome was not recorded before a stop or a crash (at-least-once:
// the destination sees the same X-Postback-Id again). Then it empties the
// journal, which also starts a fresh tail segment: raft-wal reopens a tail
// that a crash left sealed (between its seal and its rotation) as sealed for
// good, and refuses every append to it.
func (s *Store) replayJournal() (int, error) {
	first, last, err := s.journal.bounds()
	if err != nil {
		return 0, fmt.Errorf("journal: %w", err)
	}
	if last == 0 {
		return 0, nil
	}
	n := 0
	seen := map[id]bool{}
	txn := s.db.NewTransaction(false) // one snapshot for the scan: seen covers what this replay writes
	defer txn.Discard()
	var chunk []absorbItem
	flush := func() error {
		for _, err := range s.absorb(chunk) {
			if err != nil {
				return fmt.Errorf("journal replay: %w", err)
			}
		}
		n += len(chunk)
		chunk = chunk[:0]
		return nil
	}
	for idx := first; idx <= last; idx++ {
		b, err := s.journal.read(idx)
		if err != nil {
			return n, err
		}
		j, err := s.journal.unframe(b)
		if err != nil {
			return n, fmt.Errorf("journal entry %d: %w (move the folder %s aside to start without it, and keep it: it holds deliveries)", idx, err, s.journal.dir)
		}
		if ns := j.id.time().UnixNano(); ns > s.lastNs {
			s.lastNs = ns
		}
		if seen[j.id] {
			continue // the first entry of an id is the one that counts
		}
		seen[j.id] = true
		if _, err := txn.Get(deliveryKey(j.id)); err == nil {
			continue // Badger has it: attempted, or spilled, before the stop
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return n, err
		}
		chunk = append(chunk, absorbItem{e: &freshEntry{id: j.id, rec: j.rec, payload: j.payload}, d: j.rec})
		if len(chunk) == absorbMax {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := flush(); err != nil {
		return n, err
	}
	// Every Badger commit is synced: the journal may go.
	if err := s.journal.reset(); err != nil {
		return n, err
	}
	return n, nil
}

// AttemptStarted tells the store that an attempt at id begins
// (delivery.AttemptStarter): a fresh delivery being attempted is not
// spilled meanwhile. The store always holds what it hands out: true.
func (s *Store) AttemptStarted(deliveryID string) bool {
	if s.fresh != nil {
		if i, ok := parseID(deliveryID); ok {
			s.fresh.started(i)
		}
	}
	return true
}

// JournalStats are the journal's figures, for metrics.
type JournalStats struct {
	Waiting int    // deliveries in the journal that Badger does not hold yet
	Bytes   int    // their payload bytes
	Commits uint64 // group commits (one fsync each) since Open
	Spilled uint64 // deliveries moved into Badger unattempted since Open
}

// JournalStats reports the journal's figures; false when the store has no
// journal.
func (s *Store) JournalStats() (JournalStats, bool) {
	if s.fresh == nil {
		return JournalStats{}, false
	}
	n, b := s.fresh.len()
	return JournalStats{Waiting: n, Bytes: b, Commits: s.jcommits.Load(), Spilled: s.spilled.Load()}, true
}
