package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postbackedge/caddy-postback/storage"
)

// LocalHistory is what an edge's own store tells of its counts; each edge
// publishes it as its snapshot for the fleet's stats.
type LocalHistory interface {
	Stats() (map[string]storage.DINStats, error)
	Hourly(since time.Time) ([]storage.HourBucket, error)
}

// snapshot is one edge's counts, as of At.
type snapshot struct {
	Node   string                      `json:"node"`
	At     time.Time                   `json:"at"`
	Stats  map[string]storage.DINStats `json:"stats"`
	Hourly []storage.HourBucket        `json:"hourly"`
}

// snapshotEvery is how stale the fleet's stats may be; hourlyKept is how
// much of the hourly chart a snapshot carries (the report shows a day).
const (
	snapshotEvery = 5 * time.Second
	hourlyKept    = 48 * time.Hour
)

// SetLocal sets the store whose counts this edge publishes; nil stops it.
func (f *Fleet) SetLocal(h LocalHistory) {
	if h == nil {
		f.local.Store(nil)
		return
	}
	f.local.Store(&h)
}

// publishSnapshots publishes this edge's counts every snapshotEvery until
// ctx is done.
func (f *Fleet) publishSnapshots(ctx context.Context) {
	t := time.NewTicker(snapshotEvery)
	defer t.Stop()
	for {
		if err := f.PublishSnapshot(ctx); err != nil && ctx.Err() == nil && !IsUnavailable(err) {
			f.opts.Logger.Warn("cluster: stats snapshot not published", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PublishSnapshot publishes this edge's counts now (tests, and a clean
// stop, so the fleet sees the last of them).
func (f *Fleet) PublishSnapshot(ctx context.Context) error {
	h := f.local.Load()
	if h == nil {
		return nil
	}
	stats, err := (*h).Stats()
	if err != nil {
		return fmt.Errorf("local stats: %w", err)
	}
	now := time.Now().UTC()
	hourly, err := (*h).Hourly(now.Add(-hourlyKept))
	if err != nil {
		return fmt.Errorf("local hourly: %w", err)
	}
	b, err := json.Marshal(snapshot{Node: f.opts.Node, At: now, Stats: stats, Hourly: hourly})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	node := f.opts.Node
	msg := &nats.Msg{Subject: "$KV." + f.opts.Prefix + "_stats." + node, Data: f.seal.seal(node, b)}
	_, err = f.js.PublishMsg(ctx, msg, jetstream.WithMsgTTL(f.opts.Retention))
	return err
}

// History reads the fleet's delivery records and the edges' snapshots: the
// report and the admin API of any edge show the whole fleet through it.
type History struct{ f *Fleet }

// History returns the fleet's history.
func (f *Fleet) History() History { return History{f: f} }

// snapshots reads every edge's latest snapshot through one watcher (one
// consumer, not a Get per key). Like any read it may lag a write by a
// moment, a replica catching up: the stats are a few seconds stale anyway.
func (h History) snapshots(ctx context.Context) ([]snapshot, error) {
	w, err := h.f.stats.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("fleet stats: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []snapshot
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("fleet stats: %w", ctx.Err())
		}
		if e == nil {
			return out, nil // the initial values are all in
		}
		k := e.Key()
		plain, err := h.f.seal.open(k, e.Value())
		if err != nil {
			return nil, fmt.Errorf("fleet stats of %s: %w", k, err)
		}
		var s snapshot
		if err := json.Unmarshal(plain, &s); err != nil {
			return nil, fmt.Errorf("fleet stats of %s: %w", k, err)
		}
		out = append(out, s)
	}
}

// Stats sums the edges' latest snapshots per DIN.
func (h History) Stats() (map[string]storage.DINStats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	snaps, err := h.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	sum := make(map[string]storage.DINStats)
	for _, s := range snaps {
		for din, st := range s.Stats {
			sum[din] = addStats(sum[din], st)
		}
	}
	if q := h.f.queue.Load(); q != nil {
		// With queue jetstream what is pending or failed is the fleet's
		// queue's, counted there once, not by the edges.
		counts, err := q.counts(ctx)
		if err != nil {
			return nil, err
		}
		for din, st := range sum {
			c := counts[din]
			st.Pending, st.Failed, st.OldestPending = c.pending, c.failed, time.Time{}
			sum[din] = st
			delete(counts, din)
		}
		for din, c := range counts {
			sum[din] = storage.DINStats{Pending: c.pending, Failed: c.failed}
		}
	}
	return sum, nil
}

func addStats(a, b storage.DINStats) storage.DINStats {
	a.Pending += b.Pending
	a.Delivered += b.Delivered
	a.Failed += b.Failed
	a.Spooled += b.Spooled
	a.Held += b.Held
	a.Cancelled += b.Cancelled
	if !b.OldestPending.IsZero() && (a.OldestPending.IsZero() || b.OldestPending.Before(a.OldestPending)) {
		a.OldestPending = b.OldestPending
	}
	if b.LastSuccess.After(a.LastSuccess) {
		a.LastSuccess = b.LastSuccess
	}
	if b.LastError.After(a.LastError) {
		a.LastError, a.LastErrorText = b.LastError, b.LastErrorText
	}
	return a
}

// Hourly sums the edges' hourly buckets from since.
func (h History) Hourly(since time.Time) ([]storage.HourBucket, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	snaps, err := h.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	type slot struct {
		hour time.Time
		din  string
	}
	sums := map[slot]storage.HourBucket{}
	for _, s := range snaps {
		for _, b := range s.Hourly {
			if b.Hour.Before(since.Truncate(time.Hour)) {
				continue
			}
			k := slot{b.Hour.UTC(), b.DIN}
			t := sums[k]
			t.Hour, t.DIN = k.hour, k.din
			t.Attempts += b.Attempts
			t.Successes += b.Successes
			t.Delivered += b.Delivered
			t.Failed += b.Failed
			t.Spooled += b.Spooled
			sums[k] = t
		}
	}
	out := make([]storage.HourBucket, 0, len(sums))
	for _, b := range sums {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Hour.Equal(out[j].Hour) {
			return out[i].Hour.Before(out[j].Hour)
		}
		return out[i].DIN < out[j].DIN
	})
	return out, nil
}

// List returns the fleet's deliveries newest first, as storage.Store.List
// does, with Filter.Node as well. It lists the keys the filter's DIN and
// node select (keys only), then reads the records of one page.
func (h History) List(f storage.Filter) ([]storage.Delivery, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	din, node := "*", "*"
	if f.DIN != "" {
		din = f.DIN
	}
	if f.Node != "" {
		node = f.Node
	}
	if f.Cursor != "" {
		if _, ok := storage.CreatedAt(f.Cursor); !ok {
			return nil, "", storage.ErrBadCursor
		}
	}
	keys, err := h.keys(ctx, din+"."+node+".*")
	if err != nil {
		return nil, "", err
	}
	var items []storage.Delivery
	for i, k := range keys {
		id := k[strings.LastIndexByte(k, '.')+1:]
		created, ok := storage.CreatedAt(id)
		if !ok || (f.Cursor != "" && id >= f.Cursor) || (!f.Since.IsZero() && created.Before(f.Since)) ||
			(!f.Until.IsZero() && !created.Before(f.Until)) {
			continue
		}
		d, err := h.get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired meanwhile
		}
		if err != nil {
			return nil, "", err
		}
		if f.State != "" && d.State != f.State {
			continue
		}
		items = append(items, d)
		if len(items) == limit {
			if i < len(keys)-1 {
				return items, id, nil
			}
			break
		}
	}
	return items, "", nil
}

// keys lists the deliveries bucket's keys matching filter, newest id first.
func (h History) keys(ctx context.Context, filter string) ([]string, error) {
	lister, err := h.f.deliveries.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("fleet deliveries: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][strings.LastIndexByte(keys[i], '.')+1:] > keys[j][strings.LastIndexByte(keys[j], '.')+1:]
	})
	return keys, nil
}

func (h History) get(ctx context.Context, key string) (storage.Delivery, error) {
	e, err := h.f.deliveries.Get(ctx, key)
	if err != nil {
		return storage.Delivery{}, err
	}
	plain, err := h.f.seal.open(key, e.Value())
	if err != nil {
		return storage.Delivery{}, fmt.Errorf("fleet delivery %s: %w", key, err)
	}
	var d storage.Delivery
	if err := json.Unmarshal(plain, &d); err != nil {
		return storage.Delivery{}, fmt.Errorf("fleet delivery %s: %w", key, err)
	}
	return d, nil
}

// Get returns one delivery of any edge.
func (h History) Get(id string) (storage.Delivery, error) {
	if _, ok := storage.CreatedAt(id); !ok {
		return storage.Delivery{}, storage.ErrNotFound
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	keys, err := h.keys(ctx, "*.*."+id)
	if err != nil {
		return storage.Delivery{}, err
	}
	if len(keys) == 0 {
		return storage.Delivery{}, storage.ErrNotFound
	}
	d, err := h.get(ctx, keys[0])
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return storage.Delivery{}, storage.ErrNotFound
	}
	return d, err
}
