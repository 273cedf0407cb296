package fleet

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postbackedge/caddy-postback/storage"
)

// Records publishes this edge's delivery records (never a payload) to the
// fleet's deliveries bucket, one key per delivery (<din>.<node>.<id>),
// each living for the retention. Record hands a record over without
// waiting; one goroutine publishes them in order. While NATS is away,
// records wait in a bounded buffer; when it is full they are dropped and
// counted (the edge's own store keeps them all: the fleet's history then
// lacks them, the delivery does not).
type Records struct {
	f       *Fleet
	ch      chan storage.Delivery
	dropped atomic.Uint64
}

// recordBuffer bounds the records waiting to be published.
const recordBuffer = 16384

// Record queues d for publishing, stamped with this edge's node unless it
// has one: with queue jetstream a delivery keeps the node of the edge that
// took the notification, whichever edge attempts it.
func (r *Records) Record(d storage.Delivery) {
	if d.Node == "" {
		d.Node = r.f.opts.Node
	}
	d.Attempts = append([]storage.Attempt(nil), d.Attempts...)
	select {
	case r.ch <- d:
	default:
		r.dropped.Add(1)
	}
}

// Dropped counts records not published because the buffer was full.
func (r *Records) Dropped() uint64 { return r.dropped.Load() }

func recordKey(d storage.Delivery) string { return d.DIN + "." + d.Node + "." + d.ID }

// run publishes until ctx is done. A batch keeps only the newest record of
// each delivery, so a retried batch cannot put an older record last.
func (r *Records) run(ctx context.Context) {
	log := r.f.opts.Logger
	for {
		var batch []storage.Delivery
		select {
		case <-ctx.Done():
			return
		case d := <-r.ch:
			batch = append(batch, d)
		}
	gather:
		for len(batch) < 256 {
			select {
			case d := <-r.ch:
				batch = append(batch, d)
			default:
				break gather
			}
		}
		batch = newestOfEach(batch)
		for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
			err := r.publish(ctx, batch)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			log.Warn("cluster: delivery records not published yet", "records", len(batch), "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}
}

// flush publishes what is still buffered, once, at Close.
func (r *Records) flush(ctx context.Context) {
	var batch []storage.Delivery
	for {
		select {
		case d := <-r.ch:
			batch = append(batch, d)
			continue
		default:
		}
		break
	}
	if len(batch) == 0 {
		return
	}
	if err := r.publish(ctx, newestOfEach(batch)); err != nil {
		r.f.opts.Logger.Warn("cluster: delivery records not published at stop", "records", len(batch), "error", err)
	}
}

func newestOfEach(batch []storage.Delivery) []storage.Delivery {
	last := make(map[string]int, len(batch))
	for i, d := range batch {
		last[d.ID] = i
	}
	out := batch[:0]
	for i, d := range batch {
		if last[d.ID] == i {
			out = append(out, d)
		}
	}
	return out
}

func (r *Records) publish(ctx context.Context, batch []storage.Delivery) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	for _, d := range batch {
		b, err := json.Marshal(d)
		if err != nil {
			continue // cannot happen for these types; never retry it
		}
		key := recordKey(d)
		msg := &nats.Msg{Subject: "$KV." + r.f.opts.Prefix + "_deliveries." + key, Data: r.f.seal.seal(key, b)}
		fut, err := r.f.js.PublishMsgAsync(msg, jetstream.WithMsgTTL(r.f.opts.Retention))
		if err != nil {
			return err
		}
		futures = append(futures, fut)
	}
	for _, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
