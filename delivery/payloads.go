package delivery

import "sync"

// Default bounds of the fresh-payload cache (Options.FreshPayloads*).
const (
	DefaultFreshPayloadBytes = 8 << 20
	DefaultFreshPayloadCount = 8192
)

// freshPayloads holds the payloads of deliveries just enqueued, for their
// first attempt: reading a payload back from the store costs a value-log
// read (and decryption) per delivery, the largest share of a drain after the
// synced commit. It is bounded in bytes and entries; the oldest are dropped
// first and read from the store when their turn comes. A payload never
// changes once enqueued, so a cached copy is always the stored one.
type freshPayloads struct {
	maxBytes, maxCount int

	mu    sync.Mutex
	byID  map[string][]byte
	order []string // FIFO of ids offered; may hold ids already taken
	head  int      // order[head:] is live
	bytes int
}

func newFreshPayloads(maxBytes, maxCount int) *freshPayloads {
	return &freshPayloads{maxBytes: maxBytes, maxCount: maxCount, byID: map[string][]byte{}}
}

// put remembers payload for id, dropping the oldest entries to stay within
// bounds. A payload larger than the whole budget is not kept.
func (f *freshPayloads) put(id string, payload []byte) {
	if f == nil || f.maxCount <= 0 || len(payload) > f.maxBytes {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.byID[id]; dup {
		return
	}
	for len(f.byID) >= f.maxCount || f.bytes+len(payload) > f.maxBytes {
		f.evictOldest()
	}
	f.byID[id] = payload
	f.bytes += len(payload)
	f.order = append(f.order, id)
}

// take returns and forgets the payload of id.
func (f *freshPayloads) take(id string) ([]byte, bool) {
	if f == nil {
		return nil, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.byID[id]
	if ok {
		delete(f.byID, id)
		f.bytes -= len(p)
		f.compact()
	}
	return p, ok
}

// evictOldest drops the oldest live entry; f.mu is held and f.byID not empty.
func (f *freshPayloads) evictOldest() {
	for f.head < len(f.order) {
		id := f.order[f.head]
		f.order[f.head] = ""
		f.head++
		if p, ok := f.byID[id]; ok {
			delete(f.byID, id)
			f.bytes -= len(p)
			break
		}
	}
	f.compact()
}

// compact drops the ids already taken or evicted from order once they
// outnumber the live ones (plus some slack), so order stays proportional to
// the cache whatever the order of takes; the rewrite is amortized O(1).
func (f *freshPayloads) compact() {
	if len(f.order) <= 2*len(f.byID)+1024 {
		return
	}
	live := f.order[:0]
	for _, id := range f.order[f.head:] {
		if _, ok := f.byID[id]; ok {
			live = append(live, id)
		}
	}
	clear(f.order[len(live):])
	f.order, f.head = live, 0
}

func (f *freshPayloads) len() (entries, bytes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.byID), f.bytes
}
