package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// filesContaining lists the files under dir whose bytes contain marker.
func filesContaining(t *testing.T, dir string, marker []byte) []string {
	t.Helper()
	var hits []string
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // compaction removed it meanwhile
		}
		if err != nil {
			return err
		}
		n++
		if bytes.Contains(b, marker) {
			hits = append(hits, filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no files scanned")
	}
	return hits
}

// fillStore enqueues payloads carrying marker through every path Badger
// has: the write-ahead memtable, tables (short payloads stay in the LSM tree;
// a 1 MiB memtable flushes often) and the value log (long payloads); some
// are delivered.
func fillStore(t *testing.T, s *Store, marker string) {
	t.Helper()
	ctx := context.Background()
	pad := strings.Repeat("p", 2000)
	var wg sync.WaitGroup
	for g := range 15 { // concurrent writers share group commits: faster
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				i := g*100 + j
				p := fmt.Appendf(nil, "ccnum=%s&n=%d&pad=%s", marker, i, pad[:300])
				if i%2 == 1 {
					p = fmt.Appendf(p, "&more=%s", pad)
				}
				ds, err := s.Enqueue(ctx, []NewDelivery{{DIN: "1001", Payload: p}})
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					if _, err := s.Complete(ds[0].ID, Attempt{Status: 200}, Outcome{State: StateDelivered}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestEncryptionLeavesNoPlaintext(t *testing.T) {
	// A card-number-like marker without repeated 4-byte runs: Badger
	// compresses table blocks before encrypting them, and compression would
	// split "4111111111111111" so that the control could not find it.
	marker := "4539148803436467" + rand.Text()[:10]
	// Flushes to tables often; FreshAge moves the pending deliveries from
	// the journal into Badger (tables and value log) at once.
	opts := Options{MemTableSize: 64 << 10, FreshAge: time.Nanosecond}

	// Control: without a key the marker is on disk, so the scan can see it.
	plainDir := filepath.Join(t.TempDir(), "plain")
	opts.Dir = plainDir
	plain := openQueue(t, opts)
	fillStore(t, plain, marker)
	waitFresh(t, plain, 0)
	if hits := filesContaining(t, plainDir, []byte(marker)); len(hits) == 0 {
		t.Fatal("control store: marker not found on disk; the scan proves nothing")
	}
	if err := plain.Close(); err != nil {
		t.Fatal(err)
	}
	hits := filesContaining(t, plainDir, []byte(marker))
	for _, ext := range []string{".sst", ".vlog", ".wal"} {
		if !strings.Contains(strings.Join(hits, " "), ext) {
			t.Fatalf("control store: marker not in a %s file (%v): tables, value log and journal must all be covered", ext, hits)
		}
	}

	encDir := filepath.Join(t.TempDir(), "enc")
	opts.Dir = encDir
	opts.EncryptionKey = bytes.Repeat([]byte{7}, 32)
	s := openQueue(t, opts)
	fillStore(t, s, marker)
	waitFresh(t, s, 0)
	var kinds []string
	_ = filepath.WalkDir(encDir, func(p string, d fs.DirEntry, _ error) error {
		if !d.IsDir() {
			kinds = append(kinds, filepath.Ext(p))
		}
		return nil
	})
	for _, ext := range []string{".sst", ".mem", ".vlog", ".wal"} {
		if !strings.Contains(strings.Join(kinds, " "), ext) {
			t.Fatalf("no %s file written (files: %v): the test would not cover it", ext, kinds)
		}
	}
	if hits := filesContaining(t, encDir, []byte(marker)); len(hits) > 0 {
		t.Fatalf("plaintext marker found while open in %v", hits)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if hits := filesContaining(t, encDir, []byte(marker)); len(hits) > 0 {
		t.Fatalf("plaintext marker found after Close in %v", hits)
	}

	// And the data is all there with the key.
	s2 := openQueue(t, opts)
	st, err := s2.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st["1001"].Pending != 1000 || st["1001"].Delivered != 500 {
		t.Fatalf("Stats after reopen = %+v", st["1001"])
	}
	due, err := s2.Due("1001", s2.now(), 1)
	if err != nil || len(due) != 1 {
		t.Fatalf("Due = %v, %v", due, err)
	}
	if p, err := s2.Payload(due[0].ID); err != nil || !bytes.Contains(p, []byte(marker)) {
		t.Fatalf("payload after reopen: %v", err)
	}
}

func TestWrongEncryptionKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	keyA := bytes.Repeat([]byte{1}, 32)
	keyB := bytes.Repeat([]byte{2}, 32)
	s, err := Open(Options{Dir: dir, EncryptionKey: keyA})
	if err != nil {
		t.Fatal(err)
	}
	enqueueOne(t, s, "1", "secret")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string][]byte{"other key": keyB, "no key": nil} {
		s, err := Open(Options{Dir: dir, EncryptionKey: key})
		if err == nil {
			s.Close()
			t.Fatalf("%s: Open succeeded", name)
		}
		if !strings.Contains(err.Error(), "wrong encryption key") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("%s: error does not say the key is wrong: %v", name, err)
		}
	}
	if _, err := Open(Options{Dir: dir, EncryptionKey: keyA[:16]}); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("16-byte key: %v", err)
	}
	// The right key still opens it.
	s = openQueue(t, Options{Dir: dir, EncryptionKey: keyA})
	if st, _ := s.Stats(); st["1"].Pending != 1 {
		t.Fatalf("Stats = %+v", st)
	}

	// A store created without a key refuses one.
	plain := filepath.Join(t.TempDir(), "plain")
	p, err := Open(Options{Dir: plain})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := Open(Options{Dir: plain, EncryptionKey: keyA}); err == nil || !strings.Contains(err.Error(), "wrong encryption key") {
		t.Fatalf("key on a plain store: %v", err)
	}
}
