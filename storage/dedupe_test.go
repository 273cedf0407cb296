package storage

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestDedupe(t *testing.T) {
	clk := newTestClock()
	s := openQueue(t, Options{Clock: clk.Now})
	k := []byte("itns:ABC123")
	if v, ok, err := s.DedupeClaim(k, []byte("first"), time.Minute); err != nil || !ok || v != nil {
		t.Fatalf("first claim = %q %v %v", v, ok, err)
	}
	if v, ok, err := s.DedupeClaim(k, []byte("second"), time.Minute); err != nil || ok || string(v) != "first" {
		t.Fatalf("second claim = %q %v %v", v, ok, err)
	}
	clk.Add(59 * time.Second)
	if _, ok, _ := s.DedupeClaim(k, []byte("x"), time.Minute); ok {
		t.Fatal("claimed before the TTL ran out")
	}
	clk.Add(2 * time.Second)
	if v, ok, err := s.DedupeClaim(k, []byte("third"), time.Minute); err != nil || !ok {
		t.Fatalf("claim after TTL = %q %v %v", v, ok, err)
	}
	if err := s.DedupeSet(k, []byte("set"), 0); err != nil {
		t.Fatal(err)
	}
	clk.Add(365 * 24 * time.Hour)
	if v, ok, _ := s.DedupeClaim(k, []byte("y"), time.Minute); ok || string(v) != "set" {
		t.Fatalf("no-TTL record: %q %v", v, ok)
	}
	if err := s.DedupeDelete(k); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.DedupeClaim(k, []byte("z"), time.Minute); !ok {
		t.Fatal("claim after delete failed")
	}
	if _, _, err := s.DedupeClaim(nil, nil, 0); err == nil {
		t.Fatal("empty key accepted")
	}

	// Concurrent claims of one key: exactly one wins, even inside one batch.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ok, err := s.DedupeClaim([]byte("race"), fmt.Appendf(nil, "%d", i), time.Hour)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent claims won, want 1", wins)
	}
}
