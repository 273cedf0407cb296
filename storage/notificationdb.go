package storage

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	badger "github.com/dgraph-io/badger/v4"
)

// The notification log has a Badger database of its own, in the folder
// notifications under Dir. Badger compacts a memtable flush into the
// tables of the next level that its key range spans. In the queue's
// database every flush held the newest delivery records, the counters and
// the newest log records, so its range spanned the log's whole history
// between them, and each flush rewrote it: measured, 2 KB written to disk
// per notification, against 140 bytes without the log. Alone, the log's
// keys only grow, and each flush touches only its newest end
// (docs/performance-history.md, "The notification log's own store").
const notificationsDir = "notifications"

// notificationDBOptions: records are small and always stay in the tables
// (no value log, so no value-log GC); writes are unsynced, as documented
// (the process's crash loses none of them; a power loss the last half
// minute's, the kernel's writeback delay; never a delivery); small memtable
// and caches, since nothing on the request path reads it.
func notificationDBOptions(o Options) badger.Options {
	const memTable = 2 << 20
	bo := badgerOptions(filepath.Join(o.Dir, notificationsDir), o.Logger.With("db", notificationsDir), o.EncryptionKey).
		WithSyncWrites(false).
		WithMemTableSize(memTable).
		WithNumMemtables(1).
		WithBlockCacheSize(1 << 20).
		WithIndexCacheSize(2 << 20).
		WithValueLogFileSize(16 << 20).
		WithValueThreshold(15 * memTable / 100)
	if o.tune != nil {
		bo = o.tune(bo)
	}
	return bo
}

// openNotes opens the log's database and moves into it what the queue's
// database still holds of the log.
func (s *Store) openNotes() error {
	bo := notificationDBOptions(s.opts)
	if err := removeEmptyLogs(bo.Dir, s.log); err != nil {
		return fmt.Errorf("notification log: %w", err)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return fmt.Errorf("notification log: %w", err)
	}
	s.notes = db
	if err := s.moveNotifications(); err != nil {
		db.Close()
		return err
	}
	return nil
}

// moveChunk is how many records one step of moveNotifications copies.
const moveChunk = 4096

// moveNotifications moves the log records that a store made before the
// log had its own database (JSON, in the queue's database) into it, in
// the current format: it copies them all, syncs the copy, then drops them
// from the queue's database at once (deleting them one by one took seven
// times as long: 54 s for 720,000 records). A crash before the drop only
// repeats the copy. A record that cannot be decoded is dropped with a
// warning: it could not be listed.
func (s *Store) moveNotifications() error {
	prefix := []byte{pfxNotification}
	from := prefix
	moved, dropped := 0, 0
	for {
		if err := s.space.write(0); err != nil {
			// The records stay where they are, unlisted, until a start
			// with room moves them.
			s.log.Warn("notification log: not moved into its own database yet, the disk is full", "error", err)
			return nil
		}
		last, n, bad, err := s.copyNotifications(from)
		if err != nil {
			return fmt.Errorf("move notification log: %w", err)
		}
		if n == 0 {
			break
		}
		moved, dropped = moved+n, dropped+bad
		from = append(last, 0) // the next key after last
	}
	if moved == 0 {
		return nil
	}
	if err := s.notes.Sync(); err != nil {
		return fmt.Errorf("move notification log: %w", err)
	}
	if err := s.db.DropPrefix(prefix); err != nil {
		return fmt.Errorf("move notification log: drop the old records: %w", err)
	}
	s.log.Info("notification log moved into its own database", "records", moved-dropped, "dropped", dropped, "dir", filepath.Join(s.opts.Dir, notificationsDir))
	return nil
}

// copyNotifications copies up to moveChunk old records from the key from
// on, unsynced, and returns the last key read, how many it read, and how
// many of those it could not decode.
func (s *Store) copyNotifications(from []byte) (last []byte, n, bad int, err error) {
	wb := s.notes.NewWriteBatch()
	defer wb.Cancel()
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfxNotification}})
		defer it.Close()
		for it.Seek(from); it.Valid() && n < moveChunk; it.Next() {
			item := it.Item()
			last = item.KeyCopy(nil)
			n++
			var rec Notification
			err := item.Value(func(v []byte) error { return json.Unmarshal(v, &rec) })
			if len(last) != 1+idLen || err != nil {
				s.log.Warn("notification log: unreadable record dropped while moving the log", "key", fmt.Sprintf("%x", last), "error", err)
				bad++
				continue
			}
			e := badger.NewEntry(last, encodeNotification(&rec))
			e.ExpiresAt = item.ExpiresAt()
			if err := wb.SetEntry(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	return last, n, bad, err
}
