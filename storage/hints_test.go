package storage

import (
	"context"
	"testing"
	"time"
)

// A scan that cannot see an insert committing under it must not move the
// seek hint past that insert. These tests force the two interleavings.

// The insert is staged and committed while the scan reads its snapshot.
func TestHintKeepsInsertCommittedDuringScan(t *testing.T) {
	s := openQueue(t, Options{noJournal: true}) // the due index of Badger's queue
	fired := false
	s.due.afterSnapshot = func() {
		if fired {
			return
		}
		fired = true
		if _, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "H", Payload: []byte("x")}}); err != nil {
			t.Error(err)
		}
	}
	later := time.Now().Add(time.Hour)
	if due, _ := s.Due("H", later, 10); len(due) != 0 {
		t.Fatalf("the scan's snapshot saw the insert (%d): the test proves nothing", len(due))
	}
	s.due.afterSnapshot = nil
	if due, err := s.Due("H", later, 10); err != nil || len(due) != 1 {
		t.Fatalf("insert committed during a scan is lost: %d, %v", len(due), err)
	}
}

// The insert is staged before the scan starts and commits after its
// snapshot was taken.
func TestHintKeepsInsertInFlightAtScanStart(t *testing.T) {
	s := openQueue(t, Options{noJournal: true}) // the due index of Badger's queue
	staged := make(chan struct{})
	scanned := make(chan struct{})
	s.beforeCommit = func() {
		s.beforeCommit = nil // committer goroutine only: no race with the reset below
		close(staged)
		<-scanned
	}
	enq := make(chan error, 1)
	go func() {
		_, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "H", Payload: []byte("x")}})
		enq <- err
	}()
	<-staged
	s.due.afterSnapshot = func() { close(scanned) }
	later := time.Now().Add(time.Hour)
	if due, _ := s.Due("H", later, 10); len(due) != 0 {
		t.Fatalf("the scan's snapshot saw the insert (%d): the test proves nothing", len(due))
	}
	s.due.afterSnapshot = nil
	if err := <-enq; err != nil {
		t.Fatal(err)
	}
	if due, err := s.Due("H", later, 10); err != nil || len(due) != 1 {
		t.Fatalf("insert in flight at scan start is lost: %d, %v", len(due), err)
	}
	if _, ok := s.NextDue("H"); !ok {
		t.Fatal("NextDue lost the insert")
	}
}
