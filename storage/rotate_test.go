package storage

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRotateKey(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	s, err := Open(Options{Dir: dir, EncryptionKey: oldKey})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "1001", Payload: []byte("cc=4111111111111111")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendNotifications([]Notification{{At: time.Now(), Path: "/ipn.php", Outcome: OutcomeAccepted}}); err != nil {
		t.Fatal(err)
	}
	// A live store must not be rotated under Caddy's feet.
	if err := RotateKey(dir, oldKey, newKey); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("rotate of an open store: %v, want an in-use error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := RotateKey(dir, newKey, oldKey); err == nil || !strings.Contains(err.Error(), "not the key") {
		t.Fatalf("rotate with a wrong old key: %v", err)
	}
	// A rotation cut short after the notification log's registry: the
	// next one finds that part done.
	if err := rotateNotesRegistry(filepath.Join(dir, notificationsDir), oldKey, newKey); err != nil {
		t.Fatal(err)
	}
	if err := RotateKey(dir, oldKey, newKey); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir, EncryptionKey: oldKey}); err == nil {
		t.Fatal("the old key still opens the store after rotation")
	}
	s, err = Open(Options{Dir: dir, EncryptionKey: newKey})
	if err != nil {
		t.Fatalf("open with the new key: %v", err)
	}
	defer s.Close()
	p, err := s.Payload(recs[0].ID)
	if err != nil || string(p) != "cc=4111111111111111" {
		t.Fatalf("payload after rotation = %q, %v", p, err)
	}
	if ns, _, err := s.Notifications(NotificationFilter{}); err != nil || len(ns) != 1 {
		t.Fatalf("notification log after rotation: %d records, %v", len(ns), err)
	}
	if err := RotateKey(t.TempDir(), oldKey, newKey); err == nil || errors.Is(err, nil) {
		t.Fatal("rotating a folder that is no store must fail")
	}
}
