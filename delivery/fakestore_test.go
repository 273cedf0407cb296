package delivery

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// fakeStore is an in-memory Store with the semantics the Badger store
// promises: Due is earliest first, Complete refuses non-pending deliveries,
// delivered and spooled payloads are deleted, failed ones kept.
type fakeStore struct {
	mu       sync.Mutex
	seq      int
	recs     map[string]*storage.Delivery
	payloads map[string][]byte
	due      map[string][]dueKey // pending by DIN, sorted

	maxLimit     int   // largest limit passed to Due
	dueCalls     int   // number of Due calls
	payloadReads int   // number of Payload calls
	failDue      error // returned by Due when set
	completeCh   chan storage.Delivery
}

type dueKey struct {
	at time.Time
	id string
}

func cmpKey(a, b dueKey) int {
	if c := a.at.Compare(b.at); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		recs:     map[string]*storage.Delivery{},
		payloads: map[string][]byte{},
		due:      map[string][]dueKey{},
	}
}

// add enqueues a pending delivery due at next, with prev earlier attempts.
func (s *fakeStore) add(din, contentType string, payload []byte, next time.Time, prev int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	id := fmt.Sprintf("d%012d", s.seq)
	d := &storage.Delivery{ID: id, DIN: din, State: storage.StatePending, Created: next, Updated: next,
		NextAttempt: next, ContentType: contentType, Size: len(payload), HasPayload: true}
	for range prev {
		d.Attempts = append(d.Attempts, storage.Attempt{At: next, Status: 500, Error: "HTTP 500"})
	}
	s.recs[id] = d
	s.payloads[id] = slices.Clone(payload)
	s.insert(din, dueKey{next, id})
	return id
}

func (s *fakeStore) insert(din string, k dueKey) {
	keys := s.due[din]
	i, _ := slices.BinarySearchFunc(keys, k, cmpKey)
	s.due[din] = slices.Insert(keys, i, k)
}

func (s *fakeStore) remove(din string, k dueKey) {
	keys := s.due[din]
	if i, ok := slices.BinarySearchFunc(keys, k, cmpKey); ok {
		s.due[din] = slices.Delete(keys, i, i+1)
	}
}

func clone(d *storage.Delivery) storage.Delivery {
	c := *d
	c.Attempts = slices.Clone(d.Attempts)
	return c
}

func (s *fakeStore) Due(din string, now time.Time, limit int) ([]storage.Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dueCalls++
	s.maxLimit = max(s.maxLimit, limit)
	if s.failDue != nil {
		return nil, s.failDue
	}
	var out []storage.Delivery
	for _, k := range s.due[din] {
		if k.at.After(now) || len(out) >= limit {
			break
		}
		out = append(out, clone(s.recs[k.id]))
	}
	return out, nil
}

func (s *fakeStore) NextDue(din string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if keys := s.due[din]; len(keys) > 0 {
		return keys[0].at, true
	}
	return time.Time{}, false
}

func (s *fakeStore) PendingDINs() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for din, keys := range s.due {
		if len(keys) > 0 {
			out = append(out, din)
		}
	}
	return out, nil
}

func (s *fakeStore) Payload(id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.payloadReads++
	p, ok := s.payloads[id]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return slices.Clone(p), nil
}

func (s *fakeStore) Complete(id string, a storage.Attempt, out storage.Outcome) (storage.Delivery, error) {
	s.mu.Lock()
	d, ok := s.recs[id]
	if !ok {
		s.mu.Unlock()
		return storage.Delivery{}, storage.ErrNotFound
	}
	if d.State != storage.StatePending {
		s.mu.Unlock()
		return storage.Delivery{}, storage.ErrConflict
	}
	s.remove(d.DIN, dueKey{d.NextAttempt, id})
	d.Updated = time.Now()
	if !a.At.IsZero() { // as the real store: a zero attempt records none
		d.Attempts = append(d.Attempts, a)
		d.Updated = a.At
	}
	d.State = out.State
	d.LastError = out.Error
	d.NextAttempt = time.Time{}
	switch out.State {
	case storage.StatePending:
		d.NextAttempt = out.NextAttempt
		s.insert(d.DIN, dueKey{d.NextAttempt, id})
	case storage.StateDelivered, storage.StateSpooled:
		d.SpoolFile = out.SpoolFile
		d.HasPayload = false
		delete(s.payloads, id)
	}
	c := clone(d)
	ch := s.completeCh
	s.mu.Unlock()
	if ch != nil {
		ch <- c
	}
	return c, nil
}

// get returns a copy of a delivery record.
func (s *fakeStore) get(id string) storage.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return clone(s.recs[id])
}

// count returns how many deliveries are in state st.
func (s *fakeStore) count(st storage.State) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, d := range s.recs {
		if d.State == st {
			n++
		}
	}
	return n
}

func (s *fakeStore) hasPayload(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.payloads[id]
	return ok
}

var _ Queue = (*fakeStore)(nil)
