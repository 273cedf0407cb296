package storage

import (
	"bytes"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
)

// A queue deletes from the head of its index: every delivered item leaves a
// tombstone at the front of the due index until compaction drops it, and an
// iterator that starts at the front has to step over all of them (Badger
// issues #496, #768; RocksDB's "queue service" note). dueHints remembers, per
// index prefix, a seek key that is at or before every live key, so that scans
// start past the known tombstones. Scans raise the hint; inserts lower it.
//
// Correctness: a scan may only raise the hint to a key that is ≤ every live
// key, including keys whose transaction is committing while the scan reads
// its snapshot. Inserts lower the hint when staged (before their commit);
// a scan remembers the keys in flight when it starts (inflight) and those
// inserted while it runs (recent), and never raises the hint above them.
type dueHints struct {
	scan sync.Mutex // one scan at a time, so one "recent" tracker is enough

	mu       sync.Mutex
	hint     map[string][]byte // prefix → seek key
	inflight map[string][]byte // prefix → lowest key inserted by the transaction committing
	recent   map[string][]byte // prefix → lowest key inserted since the scan began
	tracking bool

	afterSnapshot func() // test hook: runs once a scan's snapshot is open
}

func (h *dueHints) init() {
	h.hint = make(map[string][]byte)
	h.inflight = make(map[string][]byte)
}

func lower(m map[string][]byte, prefix string, key []byte) {
	if cur, ok := m[prefix]; !ok || bytes.Compare(key, cur) < 0 {
		m[prefix] = key
	}
}

// lower is called by the committer for each index key it is about to write.
func (h *dueHints) lower(prefix string, key []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.hint[prefix]; ok && bytes.Compare(key, cur) < 0 {
		h.hint[prefix] = key
	}
	lower(h.inflight, prefix, key)
	if h.tracking {
		lower(h.recent, prefix, key)
	}
}

// settled is called by the committer once a transaction's commit returned.
func (h *dueHints) settled() {
	h.mu.Lock()
	clear(h.inflight)
	h.mu.Unlock()
}

// scanIndex iterates the keys under prefix from the hint, in a snapshot taken
// after the hint was read, calling fn with the snapshot's transaction and each
// key until fn returns false. end is a key after every key of the prefix.
func (s *Store) scanIndex(prefix, end []byte, fn func(txn *badger.Txn, key []byte) (bool, error)) error {
	h := &s.due
	h.scan.Lock()
	defer h.scan.Unlock()

	p := string(prefix)
	h.mu.Lock()
	seek, ok := h.hint[p]
	if !ok {
		seek = prefix
	}
	inflight := h.inflight[p]
	h.recent = make(map[string][]byte)
	h.tracking = true
	h.mu.Unlock()

	var first []byte
	err := s.db.View(func(txn *badger.Txn) error {
		if h.afterSnapshot != nil {
			h.afterSnapshot()
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(seek); it.Valid(); it.Next() {
			k := it.Item().Key()
			if first == nil {
				first = it.Item().KeyCopy(nil)
			}
			more, err := fn(txn, k)
			if err != nil || !more {
				return err
			}
		}
		return nil
	})

	h.mu.Lock()
	defer h.mu.Unlock()
	h.tracking = false
	recent := h.recent[p]
	h.recent = nil
	if err != nil {
		return err
	}
	cand := first
	if cand == nil {
		cand = end
	}
	if inflight != nil && bytes.Compare(inflight, cand) < 0 {
		cand = inflight
	}
	if recent != nil && bytes.Compare(recent, cand) < 0 {
		cand = recent
	}
	if cur, ok := h.hint[p]; !ok || bytes.Compare(cand, cur) > 0 {
		h.hint[p] = cand
	}
	return nil
}
