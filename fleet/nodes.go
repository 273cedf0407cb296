package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A node's claim on its name lives nodeTTL after its last heartbeat, so the
// name of an edge that died is free again soon; a live edge renews it every
// heartbeatEvery.
const (
	nodeTTL        = 15 * time.Second
	heartbeatEvery = 5 * time.Second
)

// registry is the nodes bucket: one key per node name, held by one
// process (its Instance) at a time.
type registry struct {
	f        *Fleet
	kv       jetstream.KeyValue
	revision uint64
}

type nodeRecord struct {
	Instance string    `json:"instance"`
	Disk     string    `json:"disk,omitempty"`
	Host     string    `json:"host"`
	Since    time.Time `json:"since"`
}

// ErrNodeInUse: another edge holds this edge's node name.
var ErrNodeInUse = errors.New("node name in use by another edge")

// claim takes the node name for this instance, or fails with ErrNodeInUse.
// At start (takeover) a claim of this edge's disk by another instance is a
// previous run, killed, and is taken over; later it is a second live edge
// on a copy of the disk, and refused, so the two do not take it in turns.
func (r *registry) claim(ctx context.Context, takeover bool) error {
	node := r.f.opts.Node
	rec := r.record()
	for range 3 {
		rev, err := r.kv.Create(ctx, node, r.f.seal.seal(node, rec), jetstream.KeyTTL(nodeTTL))
		if err == nil {
			r.revision = rev
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("cluster: claim node %s: %w", node, err)
		}
		e, err := r.kv.Get(ctx, node)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired meanwhile
		}
		if err != nil {
			return fmt.Errorf("cluster: claim node %s: %w", node, err)
		}
		var held nodeRecord
		if plain, err := r.f.seal.open(node, e.Value()); err == nil {
			_ = json.Unmarshal(plain, &held)
		}
		if held.Instance == r.f.opts.Instance && held.Instance != "" {
			r.revision = e.Revision()
			return r.renew(ctx) // this process's own claim (a reload)
		}
		if takeover && held.Disk == r.f.opts.Disk && held.Disk != "" {
			// This edge's previous run, killed before it freed the name:
			// one disk cannot serve two live edges (its store is locked).
			r.revision = e.Revision()
			if err := r.renew(ctx); err != nil {
				return fmt.Errorf("cluster: take over node %s from this edge's previous run: %w", node, err)
			}
			r.f.opts.Logger.Warn("cluster: node name taken over from this edge's previous run", "node", node, "held_since", held.Since)
			return nil
		}
		return fmt.Errorf("cluster: %w: node %q is held by host %q since %s; give each edge its own node name (a dead edge's claim expires %s after its last heartbeat)",
			ErrNodeInUse, node, held.Host, held.Since.Format(time.RFC3339), nodeTTL)
	}
	return fmt.Errorf("cluster: claim node %s: the key keeps changing", node)
}

func (r *registry) record() []byte {
	host, _ := os.Hostname()
	rec, _ := json.Marshal(nodeRecord{Instance: r.f.opts.Instance, Disk: r.f.opts.Disk, Host: host, Since: time.Now().UTC()})
	return rec
}

// renew republishes the claim with a fresh TTL, only if it is still ours.
func (r *registry) renew(ctx context.Context) error {
	node := r.f.opts.Node
	rec := r.record()
	msg := &nats.Msg{Subject: "$KV." + r.f.opts.Prefix + "_nodes." + node, Data: r.f.seal.seal(node, rec)}
	ack, err := r.f.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(r.revision), jetstream.WithMsgTTL(nodeTTL))
	if err != nil {
		return err
	}
	r.revision = ack.Sequence
	return nil
}

// heartbeat renews the claim until ctx is done. A claim lost (NATS away
// for longer than nodeTTL) is taken again when it is free.
func (r *registry) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	log := r.f.opts.Logger
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		err := r.renew(octx)
		if err != nil && !IsUnavailable(err) {
			// Expired while NATS was away, or taken: claim it again.
			err = r.claim(octx, false)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			log.Error("cluster: node claim not renewed", "node", r.f.opts.Node, "error", err)
		}
	}
}

// release frees the name at a clean stop, so the next start need not wait.
func (r *registry) release(ctx context.Context) {
	_ = r.kv.Purge(ctx, r.f.opts.Node, jetstream.LastRevision(r.revision), jetstream.PurgeTTL(markerTTL))
}
