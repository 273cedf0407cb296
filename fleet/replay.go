package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ReplayStore keeps itns_verify's dedupe records in the fleet's replay
// bucket (it implements handlers.ReplayStore): Claim is JetStream's atomic
// create-if-absent, so of two edges that see the same notification at once
// exactly one claims it. Every record has its own TTL (the dedupe window).
type ReplayStore struct{ f *Fleet }

// ReplayStore returns the fleet's replay store.
func (f *Fleet) ReplayStore() ReplayStore { return ReplayStore{f: f} }

// minTTL is the shortest per-key TTL JetStream takes.
const minTTL = time.Second

func ttlOf(ttl time.Duration) time.Duration { return max(ttl, minTTL) }

// Claim stores value under key for ttl unless key is present.
func (s ReplayStore) Claim(key, value []byte, ttl time.Duration) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	k := string(key)
	// "Exists" comes from the stream's leader; the read after it may be
	// answered by a replica that has not caught up yet, or the record may
	// have expired between the two calls: try again, briefly, until the
	// operation's deadline (then the caller answers 503, never lets a
	// possible duplicate through).
	wait := 5 * time.Millisecond
	for {
		_, err := s.f.replay.Create(ctx, k, s.f.seal.seal(k, value), jetstream.KeyTTL(ttlOf(ttl)))
		if err == nil {
			return nil, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, false, fmt.Errorf("fleet replay claim: %w", err)
		}
		e, err := s.f.replay.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			select {
			case <-time.After(wait):
				wait = min(2*wait, 200*time.Millisecond)
				continue
			case <-ctx.Done():
				return nil, false, fmt.Errorf("fleet replay claim: the record is not readable yet: %w", ctx.Err())
			}
		}
		if err != nil {
			return nil, false, fmt.Errorf("fleet replay read: %w", err)
		}
		plain, err := s.f.seal.open(k, e.Value())
		if err != nil {
			return nil, false, fmt.Errorf("fleet replay read %s: %w", k, err)
		}
		return plain, false, nil
	}
}

// Set replaces what is under key, for ttl.
func (s ReplayStore) Set(key, value []byte, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	k := string(key)
	// KeyValue.Put takes no TTL: publish to the key's subject with one.
	msg := &nats.Msg{Subject: "$KV." + s.f.opts.Prefix + "_replay." + k, Data: s.f.seal.seal(k, value)}
	if _, err := s.f.js.PublishMsg(ctx, msg, jetstream.WithMsgTTL(ttlOf(ttl))); err != nil {
		return fmt.Errorf("fleet replay set: %w", err)
	}
	return nil
}

// Delete removes key; its purge marker expires on its own.
func (s ReplayStore) Delete(key []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := s.f.replay.Purge(ctx, string(key), jetstream.PurgeTTL(markerTTL)); err != nil {
		return fmt.Errorf("fleet replay delete: %w", err)
	}
	return nil
}
