package caddymodule

import (
	"context"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/fleet"
	"github.com/postbackedge/caddy-postback/storage"
)

// queuePoll is how often a DIN's worker looks at the fleet's queue without
// being woken: other edges' deliveries and their retries come due there
// without a word to this edge.
const queuePoll = time.Second

// queueConfigs is what the fleet's queue needs of each destination.
func queueConfigs(dests []*delivery.Destination) map[string]fleet.DINConfig {
	out := make(map[string]fleet.DINConfig, len(dests))
	for _, d := range dests {
		timeout := d.Timeout
		if timeout <= 0 {
			timeout = delivery.DefaultTimeout
		}
		concurrency := d.Concurrency
		if concurrency <= 0 {
			concurrency = delivery.DefaultConcurrency
		}
		out[d.DIN] = fleet.DINConfig{Concurrency: concurrency, Timeout: timeout}
	}
	return out
}

// openQueueStore is the engine's store with queue jetstream: the fleet's
// queue over this edge's own store, which keeps the counts, the
// notification log and the replay records. It holds a reference on the
// fleet's pool entry (fleetKey) until the engine's Destruct. An edge whose
// own queue still has pending deliveries does not switch: they would wait
// for ever.
func openQueueStore(f *fleet.Fleet, fleetKey string, local *storage.Store) (fleet.QueueStore, error) {
	stats, err := local.Stats()
	if err != nil {
		return fleet.QueueStore{}, err
	}
	pending := 0
	for _, s := range stats {
		pending += s.Pending + s.Held
	}
	if pending > 0 {
		return fleet.QueueStore{}, fmt.Errorf("cluster: queue jetstream: this edge's own queue (storage_dir) still has %d pending deliveries; run it with queue badger until its stats show none pending, then switch", pending)
	}
	// The app that opens the engine holds the entry: this only counts one
	// more user of it.
	if _, _, err := fleetPool.LoadOrNew(fleetKey, func() (caddy.Destructor, error) {
		return nil, fmt.Errorf("cluster: the fleet connection is gone")
	}); err != nil {
		return fleet.QueueStore{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := f.Queue(ctx)
	if err != nil {
		_, _ = fleetPool.Delete(fleetKey)
		return fleet.QueueStore{}, err
	}
	return fleet.QueueStore{Queue: q, Local: local}, nil
}
