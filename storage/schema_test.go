package storage

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// keyFamilies counts the store's keys by prefix byte.
func keyFamilies(t *testing.T, s *Store) map[byte]int {
	t.Helper()
	n := map[byte]int{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n[it.Item().Key()[0]]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The retained history is the records alone: a finished delivery leaves its
// record and nothing keyed by it elsewhere (keys.go says why). Through the
// journal a delivery is not in Badger at all until its first attempt ends:
// the pending one is the journal's.
func TestFinishedDeliveryLeavesOnlyItsRecord(t *testing.T) {
	for _, tc := range []struct {
		name    string
		journal bool
		want    map[byte]int
	}{
		{"journal", true, map[byte]int{pfxDelivery: 2, pfxStats: 2, pfxHour: 2, pfxMeta: 1}},
		{"badger", false, map[byte]int{pfxDelivery: 3, pfxPayload: 1, pfxDue: 1, pfxStats: 2, pfxHour: 2, pfxMeta: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openQueue(t, Options{noJournal: !tc.journal})
			pen := enqueueOne(t, s, "1", "a=1")
			del := enqueueOne(t, s, "1", "a=2")
			spo := enqueueOne(t, s, "2", "a=3")
			mustComplete(t, s, del.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
			mustComplete(t, s, spo.ID, Attempt{Status: 500}, Outcome{State: StateSpooled, SpoolFile: "f"})

			got := keyFamilies(t, s)
			if !maps.Equal(got, tc.want) {
				t.Fatalf("keys per prefix = %v, want %v (d=%d p=%d q=%d s=%d h=%d m=%d)", got, tc.want,
					pfxDelivery, pfxPayload, pfxDue, pfxStats, pfxHour, pfxMeta)
			}
			if p, err := s.Payload(pen.ID); err != nil || string(p) != "a=1" {
				t.Fatalf("pending payload: %q, %v", p, err)
			}
		})
	}
}

// A store written by schema 1 opens with its indexes dropped and everything
// else kept: records, payloads, listing by DIN, purge.
func TestSchema1StoreMigrates(t *testing.T) {
	clk := newTestClock()
	dir := filepath.Join(t.TempDir(), "db")
	opts := Options{Dir: dir, Clock: clk.Now, Retention: time.Hour}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	old := enqueueOne(t, s, "7", "a=1")
	mustComplete(t, s, old.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
	pen := enqueueOne(t, s, "7", "a=2")
	// What schema 1 wrote besides the records: a per-DIN index entry and an
	// expiry entry per record, and its version.
	err = s.db.Update(func(txn *badger.Txn) error {
		for _, d := range []Delivery{old, pen} {
			i, _ := parseID(d.ID)
			if err := txn.Set(append(dinPrefix('i', "7"), i[:]...), []byte{stateCodes[StateDelivered]}); err != nil {
				return err
			}
			if err := txn.Set(append([]byte{'x', 1, 2, 3, 4, 5, 6, 7, 8}, i[:]...), nil); err != nil {
				return err
			}
		}
		return txn.Set(metaKey("schema"), []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openQueue(t, opts)
	fam := keyFamilies(t, s)
	if fam['i'] != 0 || fam['x'] != 0 {
		t.Fatalf("schema 1 indexes left: %d i, %d x", fam['i'], fam['x'])
	}
	var v []byte
	_ = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey("schema"))
		if err == nil {
			v, err = item.ValueCopy(nil)
		}
		return err
	})
	if string(v) != schemaVersion {
		t.Fatalf("schema after open = %q, want %q", v, schemaVersion)
	}
	if l, _, err := s.List(Filter{DIN: "7"}); err != nil || len(l) != 2 {
		t.Fatalf("List(DIN 7) = %d items, %v", len(l), err)
	}
	if p, err := s.Payload(pen.ID); err != nil || string(p) != "a=2" {
		t.Fatalf("Payload = %q, %v", p, err)
	}
	if n, err := s.Purge(clk.Now().Add(2 * time.Hour)); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v; want 1", n, err)
	}
	if _, err := s.Get(old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("purged record: %v", err)
	}
	due, err := s.Due("7", clk.Now().Add(time.Minute), 10)
	if err != nil || len(due) != 1 || due[0].ID != pen.ID {
		t.Fatalf("Due = %+v, %v", due, err)
	}
}

// Purge walks past old records that must stay (pending, failed) in reads of
// purgeScan records each, and still finds every expired one behind them.
func TestPurgeWalksPastKeptRecords(t *testing.T) {
	clk := newTestClock()
	s := openQueue(t, Options{Clock: clk.Now, Retention: time.Hour, purgeScan: 5})
	var items []NewDelivery
	for range 23 {
		items = append(items, NewDelivery{DIN: "3", Payload: []byte("x")})
	}
	kept, err := s.Enqueue(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range kept[:11] {
		mustComplete(t, s, d.ID, Attempt{Status: 500}, Outcome{State: StateFailed})
	}
	clk.Add(time.Minute)
	gone, err := s.Enqueue(context.Background(), items[:9])
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range gone {
		mustComplete(t, s, d.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})
	}
	clk.Add(time.Minute)
	young := enqueueOne(t, s, "3", "y")
	mustComplete(t, s, young.ID, Attempt{Status: 200}, Outcome{State: StateDelivered})

	// The cutoff falls after the 9 deliveries and before the young one.
	n, err := s.Purge(clk.Now().Add(time.Hour - 30*time.Second))
	if err != nil || n != len(gone) {
		t.Fatalf("Purge = %d, %v; want %d", n, err, len(gone))
	}
	for _, d := range gone {
		if _, err := s.Get(d.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired %s kept: %v", d.ID, err)
		}
	}
	for _, d := range append(kept, young) {
		if _, err := s.Get(d.ID); err != nil {
			t.Fatalf("%s purged: %v", d.ID, err)
		}
	}
}
