package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The notification log: one record per request a postback handler saw, in
// a database of its own (notificationdb.go), keyed n id (id as for
// deliveries: its creation time first), so that byte order is time order
// and the retention purge walks from the oldest. Records are written in
// unsynced batches by a writer off the request path: a crash loses the
// records not yet written (up to a second's) and, a power loss, those the
// kernel had not written back; never a delivery. They hold no payload, only
// the values of the fields named as labels (notificationcodec.go).

// Outcomes of a notification.
const (
	OutcomeAccepted       = "accepted"
	OutcomeRefused        = "refused"
	OutcomeReplayAnswered = "replay_answered"
	OutcomeReplayInFlight = "replay_in_flight"
)

// Outcomes lists every outcome.
var Outcomes = []string{OutcomeAccepted, OutcomeRefused, OutcomeReplayAnswered, OutcomeReplayInFlight}

// Notification is one request's record.
type Notification struct {
	ID     string    `json:"id"`
	At     time.Time `json:"at"`
	Host   string    `json:"host"`
	Path   string    `json:"path"`
	Method string    `json:"method"`
	IP     string    `json:"ip,omitempty"`
	// Outcome is one of the Outcome* constants; Reason says why a refused
	// one was refused (the deny reason, or queue_unavailable).
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	// Status is what the client was answered: the script's status for an
	// accepted one.
	Status     int               `json:"status"`
	Deliveries []string          `json:"deliveries,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// NotificationFilter selects notifications, newest first. Label matches
// a record with a label of that value (any field), or field=value.
type NotificationFilter struct {
	Outcome  string
	Path     string
	Label    string
	Delivery string // a delivery id in the record's deliveries
	Since    time.Time
	Until    time.Time
	Limit    int
	Cursor   string
}

// ErrBadNotification is a record refused by AppendNotifications.
var ErrBadNotification = errors.New("bad notification record")

func notificationKey(i id) []byte { return append([]byte{pfxNotification}, i[:]...) }

// AppendNotifications writes records unsynced, giving each its ID (made
// from its At). It does not go through the committer: nothing waits for
// these on the request path, and they must not lengthen its synced commits.
func (s *Store) AppendNotifications(ns []Notification) error {
	if len(ns) == 0 {
		return nil
	}
	// Written beside the committer, so the disk's floor is checked here too.
	if err := s.space.write(0); err != nil {
		return fmt.Errorf("append notifications: %w", err)
	}
	return s.read(func() error {
		wb := s.notes.NewWriteBatch()
		defer wb.Cancel()
		for i := range ns {
			n := &ns[i]
			if !slices.Contains(Outcomes, n.Outcome) {
				return fmt.Errorf("append notifications: %w: outcome %q", ErrBadNotification, n.Outcome)
			}
			n.At = norm(n.At)
			k := newID(n.At.UnixNano())
			n.ID = k.String()
			e := badger.NewEntry(notificationKey(k), encodeNotification(n))
			if s.opts.Retention > 0 {
				// Badger's TTL lets compaction drop what the purge missed.
				e = e.WithTTL(s.opts.Retention + time.Hour)
			}
			if err := wb.SetEntry(e); err != nil {
				return fmt.Errorf("append notifications: %w", err)
			}
		}
		if err := wb.Flush(); err != nil {
			return fmt.Errorf("append notifications: %w", err)
		}
		return nil
	})
}

// Notifications lists records newest first, as List does deliveries: a
// non-empty cursor means there may be more, and the scan is bounded.
func (s *Store) Notifications(f NotificationFilter) (items []Notification, nextCursor string, err error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListLimit)
	if f.Outcome != "" && !slices.Contains(Outcomes, f.Outcome) {
		return nil, "", fmt.Errorf("notifications: unknown outcome %q", f.Outcome)
	}
	prefix := []byte{pfxNotification}
	seek := []byte{pfxNotification, 0xff}
	var after *id
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("notifications: %w", err)
		}
		after = &c
		seek = notificationKey(c)
	} else if !f.Until.IsZero() {
		seek = binary.BigEndian.AppendUint64([]byte{pfxNotification}, uint64(max(f.Until.UnixNano(), 0)))
	}
	err = s.read(func() error {
		return s.notes.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
			defer it.Close()
			budget := listScanBudget
			var last id
			for it.Seek(seek); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()
				if len(k) != 1+idLen {
					return fmt.Errorf("bad notification key %x", k)
				}
				var i id
				copy(i[:], k[1:])
				if after != nil && i == *after {
					continue
				}
				at := i.time()
				if !f.Until.IsZero() && !at.Before(f.Until) {
					continue
				}
				if !f.Since.IsZero() && at.Before(f.Since) {
					return nil
				}
				if budget == 0 {
					nextCursor = encodeCursor(last)
					return nil
				}
				budget--
				last = i
				var n Notification
				err := item.Value(func(v []byte) (err error) {
					n, err = decodeNotification(i, v)
					return err
				})
				if err != nil {
					return err
				}
				if !f.matches(&n) {
					continue
				}
				items = append(items, n)
				if len(items) == limit {
					nextCursor = encodeCursor(i)
					return nil
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, "", fmt.Errorf("notifications: %w", err)
	}
	return items, nextCursor, nil
}

func (f *NotificationFilter) matches(n *Notification) bool {
	if f.Outcome != "" && n.Outcome != f.Outcome {
		return false
	}
	if f.Path != "" && n.Path != f.Path {
		return false
	}
	if f.Delivery != "" && !slices.Contains(n.Deliveries, f.Delivery) {
		return false
	}
	if f.Label != "" {
		field, value, named := strings.Cut(f.Label, "=")
		if named {
			return n.Labels[field] == value
		}
		for _, v := range n.Labels {
			if v == f.Label {
				return true
			}
		}
		return false
	}
	return true
}

// purgeNotifications deletes records made before cutoff, oldest first, in
// chunks.
func (s *Store) purgeNotifications(cutoff time.Time) error {
	end := binary.BigEndian.AppendUint64([]byte{pfxNotification}, uint64(max(cutoff.UnixNano(), 0)))
	for {
		var keys [][]byte
		err := s.read(func() error {
			return s.notes.View(func(txn *badger.Txn) error {
				it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxNotification}})
				defer it.Close()
				for it.Rewind(); it.Valid() && len(keys) < purgeChunk; it.Next() {
					k := it.Item().KeyCopy(nil)
					if string(k) >= string(end) {
						break
					}
					keys = append(keys, k)
				}
				return nil
			})
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		if err := s.space.write(0); err != nil {
			return fmt.Errorf("purge notifications: %w", err)
		}
		err = s.read(func() error {
			wb := s.notes.NewWriteBatch()
			defer wb.Cancel()
			for _, k := range keys {
				if err := wb.Delete(k); err != nil {
					return err
				}
			}
			return wb.Flush()
		})
		if err != nil {
			return fmt.Errorf("purge notifications: %w", err)
		}
		if len(keys) < purgeChunk {
			return nil
		}
	}
}
