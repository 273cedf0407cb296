package storage

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

func TestNotificationCodecRoundTrip(t *testing.T) {
	i := newID(time.Date(2026, 12, 7, 23, 59, 1, 123456789, time.UTC).UnixNano())
	for _, n := range []Notification{
		{Host: "shop.example", Path: "/ipn.php", Method: "POST", IP: "203.0.113.7", Outcome: OutcomeAccepted, Status: 200,
			Deliveries: []string{"0187a", "0187b"}, Labels: map[string]string{"ctransreceipt": "R1", "ctransaction": "SALE", "é": ""}},
		{Outcome: OutcomeRefused, Reason: "bad_signature", Status: 403},
		{Outcome: OutcomeReplayInFlight},
	} {
		n.ID, n.At = i.String(), i.time()
		b := encodeNotification(&n)
		got, err := decodeNotification(i, b)
		if err != nil || !reflect.DeepEqual(got, n) {
			t.Fatalf("round trip: %+v, %v; want %+v", got, err, n)
		}
		// A torn or padded record is an error, never a panic or a wrong record.
		for cut := range len(b) {
			if _, err := decodeNotification(i, b[:cut]); err == nil {
				t.Errorf("%d of %d bytes decoded", cut, len(b))
			}
		}
		if _, err := decodeNotification(i, append(b, 0)); err == nil {
			t.Error("trailing byte accepted")
		}
	}
	if _, err := decodeNotification(i, []byte{'{', '}'}); err == nil {
		t.Error("unknown version accepted")
	}
}

// TestNotificationLogHasItsOwnDB: records go to the log's database, never
// the queue's, and a store written by an earlier version (JSON records in
// the queue's database) has them moved at Open, expiry kept, nothing
// doubled, an unreadable one dropped.
func TestNotificationLogHasItsOwnDB(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	s := openQueue(t, Options{Dir: dir, Clock: clock.Now})
	if err := s.AppendNotifications([]Notification{{At: clock.Now(), Path: "/new.php", Outcome: OutcomeAccepted, Status: 200}}); err != nil {
		t.Fatal(err)
	}
	if n := countPrefix(t, s.db, pfxNotification); n != 0 {
		t.Fatalf("the queue's database holds %d log records", n)
	}

	// What an earlier version wrote: JSON in the queue's database. One of
	// them is also in the log's database already, as a move cut short by a
	// crash leaves it.
	expires := uint64(time.Now().Add(48 * time.Hour).Unix()) // Badger reads the real clock
	var old []Notification
	err := s.db.Update(func(txn *badger.Txn) error {
		for k := range 3 {
			i := newID(clock.Now().Add(-time.Duration(3-k) * time.Minute).UnixNano())
			n := Notification{ID: i.String(), At: i.time(), Host: "shop", Path: "/old.php", Method: "POST", IP: "127.0.0.1",
				Outcome: OutcomeRefused, Reason: "ip_not_allowed", Status: 403, Labels: map[string]string{"ctransreceipt": "R"}}
			v, _ := json.Marshal(n)
			e := badger.NewEntry(notificationKey(i), v)
			e.ExpiresAt = expires
			if err := txn.SetEntry(e); err != nil {
				return err
			}
			if k == 0 {
				if err := s.notes.Update(func(ntx *badger.Txn) error {
					return ntx.Set(notificationKey(i), encodeNotification(&n))
				}); err != nil {
					return err
				}
			}
			old = append(old, n)
		}
		return txn.Set(notificationKey(newID(clock.Now().UnixNano())), []byte("not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openQueue(t, Options{Dir: dir, Clock: clock.Now})
	if n := countPrefix(t, s.db, pfxNotification); n != 0 {
		t.Errorf("after Open the queue's database still holds %d log records", n)
	}
	got, _, err := s.Notifications(NotificationFilter{Path: "/old.php", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d moved records listed, want 3: %+v", len(got), got)
	}
	for k, n := range got {
		if want := old[2-k]; !reflect.DeepEqual(n, want) {
			t.Errorf("moved record %+v, want %+v", n, want)
		}
	}
	err = s.notes.View(func(txn *badger.Txn) error {
		i, _ := parseID(old[1].ID)
		item, err := txn.Get(notificationKey(i))
		if err == nil && item.ExpiresAt() != expires {
			t.Errorf("moved record expires at %d, want %d", item.ExpiresAt(), expires)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if all, _, _ := s.Notifications(NotificationFilter{Limit: 100}); len(all) != 4 {
		t.Errorf("%d records in all, want the 3 moved and the new one", len(all))
	}
}

func countPrefix(t *testing.T, db *badger.DB, pfx byte) int {
	t.Helper()
	n := 0
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pfx}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// On a full disk Open leaves an earlier store's log where it is, unlisted,
// rather than write; the next start with room moves it.
func TestNotificationLogMoveWaitsForRoom(t *testing.T) {
	dir := t.TempDir()
	s := openQueue(t, Options{Dir: dir})
	i := newID(time.Now().UnixNano())
	v, _ := json.Marshal(Notification{ID: i.String(), At: i.time(), Path: "/old.php", Outcome: OutcomeAccepted, Status: 200})
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(notificationKey(i), v) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	full := func(string) (int64, error) { return 0, nil }
	s = openQueue(t, Options{Dir: dir, diskFree: full})
	if n := countPrefix(t, s.db, pfxNotification); n != 1 {
		t.Errorf("on a full disk the queue's database holds %d log records, want the 1 left in place", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openQueue(t, Options{Dir: dir})
	if n := countPrefix(t, s.db, pfxNotification); n != 0 {
		t.Errorf("with room the queue's database still holds %d log records", n)
	}
	if got, _, err := s.Notifications(NotificationFilter{}); err != nil || len(got) != 1 || got[0].Path != "/old.php" {
		t.Errorf("moved: %+v, %v", got, err)
	}
}
