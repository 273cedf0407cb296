package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Replay (dedupe) records are opaque values with a time to live, written
// through the committer like everything else, so a claim is synced before it
// is answered. The expiry is kept in the value and checked against the
// store's clock; Badger's own TTL (a little later, in wall-clock seconds)
// only lets compaction drop the key.

const maxDedupeKey = 1024

func checkDedupeKey(key []byte) error {
	if len(key) == 0 || len(key) > maxDedupeKey {
		return fmt.Errorf("dedupe key must be 1 to %d bytes", maxDedupeKey)
	}
	return nil
}

// DedupeClaim stores value under key unless a live record is there: it
// returns claimed=true when it stored it, else the existing value.
// ttl <= 0 means no expiry.
func (s *Store) DedupeClaim(key, value []byte, ttl time.Duration) (existing []byte, claimed bool, err error) {
	if err := checkDedupeKey(key); err != nil {
		return nil, false, fmt.Errorf("dedupe claim: %w", err)
	}
	res, err := s.submit(context.Background(), &dedupeOp{key: key, value: value, ttl: ttl, claim: true})
	if err != nil {
		return nil, false, fmt.Errorf("dedupe claim: %w", err)
	}
	r := res.(dedupeResult)
	return r.existing, r.claimed, nil
}

// DedupeSet stores value under key, replacing any record.
func (s *Store) DedupeSet(key, value []byte, ttl time.Duration) error {
	if err := checkDedupeKey(key); err != nil {
		return fmt.Errorf("dedupe set: %w", err)
	}
	if _, err := s.submit(context.Background(), &dedupeOp{key: key, value: value, ttl: ttl}); err != nil {
		return fmt.Errorf("dedupe set: %w", err)
	}
	return nil
}

// DedupeDelete removes the record under key, if any.
func (s *Store) DedupeDelete(key []byte) error {
	if err := checkDedupeKey(key); err != nil {
		return fmt.Errorf("dedupe delete: %w", err)
	}
	if _, err := s.submit(context.Background(), &dedupeOp{key: key, del: true}); err != nil {
		return fmt.Errorf("dedupe delete: %w", err)
	}
	return nil
}

type dedupeOp struct {
	key, value []byte
	ttl        time.Duration
	claim, del bool
}

type dedupeResult struct {
	existing []byte
	claimed  bool
}

func (o *dedupeOp) apply(w *wtx) (any, error) {
	k := dedupeKey(o.key)
	if o.del {
		w.del(k)
		return dedupeResult{}, nil
	}
	now := w.s.now()
	if o.claim {
		v, found, err := w.get(k)
		if err != nil {
			return nil, err
		}
		if found {
			if len(v) < 8 {
				return nil, errors.New("corrupt dedupe record")
			}
			exp := int64(binary.BigEndian.Uint64(v[:8]))
			if exp == 0 || now.UnixNano() < exp {
				return dedupeResult{existing: v[8:]}, nil
			}
		}
	}
	val := make([]byte, 8+len(o.value))
	if o.ttl > 0 {
		binary.BigEndian.PutUint64(val[:8], uint64(now.Add(o.ttl).UnixNano()))
	}
	copy(val[8:], o.value)
	e := badger.NewEntry(k, val)
	if o.ttl > 0 {
		// Badger's TTL uses the wall clock in whole seconds: keep the key at
		// least a second past the logical expiry.
		e = e.WithTTL(o.ttl + 2*time.Second)
	}
	w.put(e)
	return dedupeResult{claimed: true}, nil
}
