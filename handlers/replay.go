package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// ReplayStore persists dedupe records with a time to live. The postback
// app's Badger store implements it; each method must be atomic on its own.
type ReplayStore interface {
	// Claim stores value under key for ttl unless key is present; if it is,
	// it returns the present value and claimed == false.
	Claim(key, value []byte, ttl time.Duration) (existing []byte, claimed bool, err error)
	// Set stores value under key for ttl, replacing what is there.
	Set(key, value []byte, ttl time.Duration) error
	// Delete removes key; a missing key is not an error.
	Delete(key []byte) error
}

// Defaults of the replay guard.
const (
	// DefaultReplayWait bounds how long a replay waits for the outcome of
	// the first copy before it is answered 503 (the sender retries later).
	DefaultReplayWait = 10 * time.Second
	// DefaultReplayInFlightTTL is how long an in-flight record lives: longer
	// than any legacy script runs, short enough that a crash while in flight
	// only delays the sender's retries.
	DefaultReplayInFlightTTL = 5 * time.Minute
	// MaxReplayBody is the largest response kept for answering replays; a
	// larger one makes the notification not replayable.
	MaxReplayBody = 64 << 10

	defaultReplayPoll  = 100 * time.Millisecond
	replayKeyPrefix    = "itns-replay/"
	clickBankKeyPrefix = "clickbank-replay/"
)

// ReplayKey is the store key of a notification: a SHA-256 over its sorted
// name/value pairs, so the same fields and values in any order give the same
// key and nothing is left out (the signature field included). Each name and
// value is length-prefixed, so no two different forms share an encoding.
func ReplayKey(form Form) []byte {
	return replayKeyIn(replayKeyPrefix, form)
}

// replayKeyIn is ReplayKey with the key prefix of a scheme, so that no two
// schemes' notifications share a key.
func replayKeyIn(prefix string, form Form) []byte {
	bp := payloadPool.Get().(*[]byte)
	b := (*bp)[:0]
	for _, f := range form {
		b = binary.AppendUvarint(b, uint64(len(f.Name)))
		b = append(b, f.Name...)
		b = binary.AppendUvarint(b, uint64(len(f.Value)))
		b = append(b, f.Value...)
	}
	sum := sha256.Sum256(b)
	clear(b)
	*bp = b[:0]
	payloadPool.Put(bp)
	key := make([]byte, len(prefix)+hex.EncodedLen(len(sum)))
	copy(key, prefix)
	hex.Encode(key[len(prefix):], sum[:])
	return key
}

// ReplayState is the state of a dedupe record.
type ReplayState uint8

const (
	ReplayInFlight ReplayState = 1 // the first copy is being processed
	ReplayDone     ReplayState = 2 // the first copy was answered with a 2xx, recorded
	ReplayFailed   ReplayState = 3 // the first copy failed; the next copy goes through
)

// ReplayRecord is what the store holds for one notification.
type ReplayRecord struct {
	State       ReplayState
	Status      int    // with ReplayDone
	ContentType string // with ReplayDone
	Body        []byte // with ReplayDone
	Time        time.Time
	// Owner identifies the process that wrote an in-flight record (see
	// ReplayOptions.Owner).
	Owner string
}

const (
	replayRecordV1      = 1 // without Owner
	replayRecordVersion = 2
)

// MarshalBinary encodes r: version, state, status, time, then the content
// type, the body and the owner, each length-prefixed.
func (r ReplayRecord) MarshalBinary() ([]byte, error) {
	if r.Status < 0 || r.Status > 999 {
		return nil, fmt.Errorf("replay record: bad status %d", r.Status)
	}
	b := make([]byte, 0, 12+2*binary.MaxVarintLen64+len(r.ContentType)+len(r.Body))
	b = append(b, replayRecordVersion, byte(r.State))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Status))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(r.ContentType)))
	b = append(b, r.ContentType...)
	b = binary.AppendUvarint(b, uint64(len(r.Body)))
	b = append(b, r.Body...)
	b = binary.AppendUvarint(b, uint64(len(r.Owner)))
	b = append(b, r.Owner...)
	return b, nil
}

var errBadRecord = errors.New("replay record: malformed")

// UnmarshalBinary decodes what MarshalBinary wrote; anything else,
// including trailing bytes, is an error.
func (r *ReplayRecord) UnmarshalBinary(b []byte) error {
	if len(b) < 12 || (b[0] != replayRecordVersion && b[0] != replayRecordV1) {
		return errBadRecord
	}
	st := ReplayState(b[1])
	if st < ReplayInFlight || st > ReplayFailed {
		return errBadRecord
	}
	status := int(binary.BigEndian.Uint16(b[2:4]))
	t := time.Unix(0, int64(binary.BigEndian.Uint64(b[4:12])))
	rest := b[12:]
	ct, rest, ok := cutLengthPrefixed(rest)
	if !ok {
		return errBadRecord
	}
	body, rest, ok := cutLengthPrefixed(rest)
	if !ok {
		return errBadRecord
	}
	var owner []byte
	if b[0] == replayRecordVersion {
		if owner, rest, ok = cutLengthPrefixed(rest); !ok {
			return errBadRecord
		}
	}
	if len(rest) != 0 {
		return errBadRecord
	}
	*r = ReplayRecord{State: st, Status: status, ContentType: string(ct), Body: body, Time: t, Owner: string(owner)}
	return nil
}

func cutLengthPrefixed(b []byte) (field, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	b = b[k:]
	return b[:n:n], b[n:], true
}

// ReplayOptions configures a ReplayGuard.
type ReplayOptions struct {
	// Window is how long the response to an accepted notification answers
	// its replays. Required.
	Window time.Duration
	// InFlightTTL: default DefaultReplayInFlightTTL.
	InFlightTTL time.Duration
	// Wait: default DefaultReplayWait.
	Wait time.Duration
	// PollInterval is how often a replay re-reads the store when the first
	// copy is in flight elsewhere (an older config during a reload, or a
	// process that died): default 100ms.
	PollInterval time.Duration
	// Now stamps records; default time.Now.
	Now func() time.Time
	// Owner identifies this process among those that ever used the store
	// (only one process opens it at a time). An in-flight record of another
	// owner was left by a process that died mid-request: its outcome will
	// never come, so the copy that finds it goes on instead of waiting for
	// the record to expire. Empty: such records are waited for.
	Owner string
}

// ReplayGuard makes a notification's replays within a window harmless: the
// first copy goes on, later copies get the first copy's 2xx answer without
// going on, a copy that arrives while the first is in flight waits for its
// outcome, and when the first failed the next copy goes on (the sender is
// retrying). Records live in a ReplayStore; waiters for a copy in flight in
// this process are woken through memory, others poll the store.
type ReplayGuard struct {
	store ReplayStore
	opts  ReplayOptions

	mu      sync.Mutex
	flights map[string]*flight
	// takeoverMu serialises taking over orphaned in-flight records.
	takeoverMu sync.Mutex
}

// flight is a first copy being processed in this process.
type flight struct {
	done chan struct{}
	rec  *ReplayRecord // the answer, set before done is closed; nil if it failed
}

// NewReplayGuard returns a guard over store.
func NewReplayGuard(store ReplayStore, opts ReplayOptions) (*ReplayGuard, error) {
	if store == nil {
		return nil, errors.New("replay guard: no store")
	}
	if opts.Window <= 0 {
		return nil, errors.New("replay guard: window must be positive")
	}
	if opts.InFlightTTL < 0 || opts.Wait < 0 || opts.PollInterval < 0 {
		return nil, errors.New("replay guard: durations must not be negative")
	}
	if opts.InFlightTTL == 0 {
		opts.InFlightTTL = DefaultReplayInFlightTTL
	}
	if opts.Wait == 0 {
		opts.Wait = DefaultReplayWait
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = defaultReplayPoll
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &ReplayGuard{store: store, opts: opts, flights: make(map[string]*flight)}, nil
}

// ReplayResult is the guard's decision on one copy of a notification.
// Exactly one of Ticket and Answer is set.
type ReplayResult struct {
	// Ticket: pass this copy on, then Finish (or Fail) the ticket.
	Ticket *ReplayTicket
	// Answer: a copy was already accepted; answer with its status,
	// content type and body and do not pass this one on.
	Answer *ReplayRecord
	// Retry: this copy goes on after an earlier one failed or was found in
	// flight (for metrics).
	Retry bool
}

// ErrReplayStore wraps store failures, which the caller answers with a 503
// so the sender retries, rather than guessing.
var ErrReplayStore = errors.New("replay store")

// Begin decides on one copy of the notification identified by key. When the
// same notification is in flight it waits at most the configured Wait and
// then returns a 503 Denial (ReasonReplayInFlight); it also returns early
// with ctx's error. Store errors wrap ErrReplayStore.
func (g *ReplayGuard) Begin(ctx context.Context, key []byte) (ReplayResult, error) {
	inflight, err := ReplayRecord{State: ReplayInFlight, Time: g.opts.Now(), Owner: g.opts.Owner}.MarshalBinary()
	if err != nil {
		return ReplayResult{}, err
	}
	deadline := time.Now().Add(g.opts.Wait)
	retry := false
	failedSeen := 0
	for {
		existing, claimed, err := g.store.Claim(key, inflight, g.opts.InFlightTTL)
		if err != nil {
			return ReplayResult{}, fmt.Errorf("%w: claim: %v", ErrReplayStore, err)
		}
		if claimed {
			return ReplayResult{Ticket: g.newTicket(key), Retry: retry}, nil
		}
		var rec ReplayRecord
		if err := rec.UnmarshalBinary(existing); err != nil {
			// Unreadable (corrupt, or written by a future version): it cannot
			// answer anything, so this copy takes its place.
			if err := g.store.Set(key, inflight, g.opts.InFlightTTL); err != nil {
				return ReplayResult{}, fmt.Errorf("%w: replace unreadable record: %v", ErrReplayStore, err)
			}
			return ReplayResult{Ticket: g.newTicket(key), Retry: true}, nil
		}
		switch rec.State {
		case ReplayDone:
			return ReplayResult{Answer: &rec}, nil
		case ReplayInFlight:
			if g.opts.Owner != "" && rec.Owner != g.opts.Owner {
				// Left by a process that died (kill -9) while the first copy
				// was in flight: this copy takes its place.
				took, err := g.takeOver(key, inflight)
				if err != nil {
					return ReplayResult{}, err
				}
				if took {
					return ReplayResult{Ticket: g.newTicket(key), Retry: true}, nil
				}
				continue // another copy took over first: wait for it
			}
		case ReplayFailed:
			retry = true
			failedSeen++
			// A failed copy is no answer: drop it and claim again. Should the
			// store keep handing back failed records, fall back to waiting so
			// this loop cannot spin.
			if failedSeen <= 3 {
				if err := g.store.Delete(key); err != nil {
					return ReplayResult{}, fmt.Errorf("%w: delete failed record: %v", ErrReplayStore, err)
				}
				continue
			}
		}
		retry = true
		ans, err := g.await(ctx, key, deadline)
		if err != nil {
			return ReplayResult{}, err
		}
		if ans != nil {
			return ReplayResult{Answer: ans}, nil
		}
	}
}

// takeOver replaces an orphaned in-flight record with ours. Copies of the
// same notification racing for it are serialised, and the record is read
// again under the lock, so exactly one of them takes over.
func (g *ReplayGuard) takeOver(key, inflight []byte) (bool, error) {
	g.takeoverMu.Lock()
	defer g.takeoverMu.Unlock()
	existing, claimed, err := g.store.Claim(key, inflight, g.opts.InFlightTTL)
	if err != nil {
		return false, fmt.Errorf("%w: claim: %v", ErrReplayStore, err)
	}
	if claimed {
		return true, nil
	}
	var rec ReplayRecord
	if rec.UnmarshalBinary(existing) == nil && (rec.State != ReplayInFlight || rec.Owner == g.opts.Owner) {
		return false, nil
	}
	if err := g.store.Set(key, inflight, g.opts.InFlightTTL); err != nil {
		return false, fmt.Errorf("%w: replace orphaned record: %v", ErrReplayStore, err)
	}
	return true, nil
}

// await waits for the copy in flight: through memory when it runs in this
// guard, else for one poll interval. It returns the answer when the flight
// it watched succeeded, nil to look at the store again, or an error when
// the deadline or ctx ran out.
func (g *ReplayGuard) await(ctx context.Context, key []byte, deadline time.Time) (*ReplayRecord, error) {
	remaining := time.Until(deadline)
	if remaining <= 0 {
		return nil, Deny(http.StatusServiceUnavailable, ReasonReplayInFlight)
	}
	g.mu.Lock()
	f := g.flights[string(key)]
	g.mu.Unlock()
	var wake <-chan struct{}
	d := remaining
	if f != nil {
		wake = f.done
	} else if g.opts.PollInterval < d {
		d = g.opts.PollInterval
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wake:
		return f.rec, nil
	case <-t.C:
		if f != nil {
			return nil, Deny(http.StatusServiceUnavailable, ReasonReplayInFlight)
		}
		return nil, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the first copy of a notification: %w", ctx.Err())
	}
}

func (g *ReplayGuard) newTicket(key []byte) *ReplayTicket {
	f := &flight{done: make(chan struct{})}
	g.mu.Lock()
	g.flights[string(key)] = f
	g.mu.Unlock()
	return &ReplayTicket{g: g, key: key, f: f}
}

// ReplayTicket is held by the first copy of a notification while it is
// processed. Finish or Fail it exactly once; later calls do nothing.
type ReplayTicket struct {
	g    *ReplayGuard
	key  []byte
	f    *flight
	once sync.Once
}

// Finish records the first copy's response. A 2xx whose body was captured
// whole (complete) answers the replays within the window; anything else is
// forgotten, so that the sender's next copy goes on.
func (t *ReplayTicket) Finish(status int, contentType string, body []byte, complete bool) error {
	if status < 200 || status > 299 || !complete || len(body) > MaxReplayBody {
		return t.Fail()
	}
	var err error
	t.once.Do(func() {
		rec := &ReplayRecord{
			State:       ReplayDone,
			Status:      status,
			ContentType: contentType,
			Body:        append([]byte(nil), body...),
			Time:        t.g.opts.Now(),
		}
		var b []byte
		if b, err = rec.MarshalBinary(); err == nil {
			err = t.g.store.Set(t.key, b, t.g.opts.Window)
		}
		if err != nil {
			err = fmt.Errorf("%w: record response: %v", ErrReplayStore, err)
			// Unrecorded, the in-flight record would hold replays at 503
			// until its TTL; better to let them through now.
			_ = t.g.store.Delete(t.key)
			rec = nil
		}
		t.release(rec)
	})
	return err
}

// Fail forgets the first copy, so that the next copy goes on.
func (t *ReplayTicket) Fail() error {
	var err error
	t.once.Do(func() {
		if err = t.g.store.Delete(t.key); err != nil {
			err = fmt.Errorf("%w: delete in-flight record: %v", ErrReplayStore, err)
		}
		t.release(nil)
	})
	return err
}

// release wakes the waiters after the store holds the outcome.
func (t *ReplayTicket) release(rec *ReplayRecord) {
	t.g.mu.Lock()
	// A newer copy may have claimed the key meanwhile; its flight stays.
	if t.g.flights[string(t.key)] == t.f {
		delete(t.g.flights, string(t.key))
	}
	t.g.mu.Unlock()
	t.f.rec = rec
	close(t.f.done)
}
