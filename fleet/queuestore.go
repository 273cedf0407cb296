package fleet

import (
	"context"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// QueueStore is the delivery.Store of an edge with queue jetstream: the
// fleet's Queue holds what is pending and failed; the edge's own store
// holds what the edge did (Mirror: its counts, last success and error,
// the records of what it finished), and runs the maintenance.
type QueueStore struct {
	*Queue
	Local *storage.Store
}

// Complete completes the delivery in the queue, then mirrors the attempt
// into the edge's own store. A mirror that fails costs a count, never the
// delivery: it is logged.
func (s QueueStore) Complete(id string, a storage.Attempt, out storage.Outcome) (storage.Delivery, error) {
	d, err := s.Queue.Complete(id, a, out)
	if err != nil {
		return d, err
	}
	if a != (storage.Attempt{}) {
		a, _ = d.LastAttempt() // as recorded: its time set, its error clipped
	}
	if err := s.Local.Mirror(d, a, out.Error); err != nil {
		s.f.opts.Logger.Warn("cluster queue: attempt not counted in this edge's store", "id", id, "error", err)
	}
	return d, nil
}

// Held deliveries (only_accepted) are refused by Enqueue with queue
// jetstream: nothing is ever held.

// Release changes nothing: no delivery is held.
func (QueueStore) Release([]string, time.Time) ([]storage.Delivery, error) { return nil, nil }

// Cancel changes nothing: no delivery is held.
func (QueueStore) Cancel([]string, string) ([]storage.Delivery, error) { return nil, nil }

// HeldIDs is empty: no delivery is held.
func (QueueStore) HeldIDs(int) ([]string, error) { return nil, nil }

// Stats are the edge's own counts (what it finished); the fleet's History
// adds the queue's pending and failed.
func (s QueueStore) Stats() (map[string]storage.DINStats, error) { return s.Local.Stats() }

// Hourly is the edge's own attempts per hour.
func (s QueueStore) Hourly(since time.Time) ([]storage.HourBucket, error) {
	return s.Local.Hourly(since)
}

// List lists, for failed or any state, the fleet's failed deliveries: the
// only ones a retry can put back with queue jetstream (a spooled one has
// no payload left), so a bulk retry on any edge retries the whole fleet's.
// Other states list what this edge finished; the fleet's History lists
// every edge's.
func (s QueueStore) List(f storage.Filter) ([]storage.Delivery, string, error) {
	if f.State == "" || f.State == storage.StateFailed {
		return s.Queue.ListFailed(f)
	}
	return s.Local.List(f)
}

// Get reads one delivery this edge finished.
func (s QueueStore) Get(id string) (storage.Delivery, error) { return s.Local.Get(id) }

// RunMaintenance runs the edge's own store's.
func (s QueueStore) RunMaintenance(ctx context.Context, every time.Duration) {
	s.Local.RunMaintenance(ctx, every)
}

// Close gives back what the edge holds of the queue, then closes its own
// store.
func (s QueueStore) Close() error {
	_ = s.Queue.Close()
	return s.Local.Close()
}
