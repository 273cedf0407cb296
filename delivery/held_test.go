package delivery

import (
	"context"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

// only_accepted: a held copy is sent once the script answered 2xx, and
// cancelled (never sent, counted) otherwise.
func TestHoldResolve(t *testing.T) {
	a := newSink(t, nil)
	obs := newRecorder()
	e := startEngine(t, obs, &Destination{DIN: "A", URL: a.url(t, "/a")})
	ctx := context.Background()

	accepted, err := e.Hold(ctx, []string{"A"}, "", []byte("sale=1"))
	if err != nil {
		t.Fatal(err)
	}
	refused, err := e.Hold(ctx, []string{"A"}, "", []byte("sale=2"))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := e.Get(accepted.Deliveries()[0].ID); d.State != storage.StateHeld {
		t.Fatalf("before the script's answer: %s, want held", d.State)
	}
	if err := refused.Resolve(500); err != nil {
		t.Fatal(err)
	}
	if err := accepted.Resolve(201); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the accepted copy delivered", 10*time.Second, func() bool {
		d, err := e.Get(accepted.Deliveries()[0].ID)
		return err == nil && d.State == storage.StateDelivered
	})
	d, err := e.Get(refused.Deliveries()[0].ID)
	if err != nil || d.State != storage.StateCancelled || d.LastError != "the script answered 500 Internal Server Error" {
		t.Fatalf("refused copy: %+v, %v", d, err)
	}
	// The sink got exactly the accepted one: the cancelled copy was never sent.
	if got := a.requests(); len(got) != 1 || string(got[0].Body) != "sale=1" {
		t.Fatalf("sink received %d requests, want the accepted one only", len(got))
	}
	if n := obs.fin(storage.StateCancelled); n != 1 {
		t.Errorf("observer heard %d cancellations, want 1", n)
	}
}

// A delivery still held when the process stopped (no answer from the
// script was learnt) is released and sent by the next start.
func TestStartReleasesLeftHeld(t *testing.T) {
	a := newSink(t, nil)
	dir := t.TempDir()
	store, err := storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := store.Enqueue(context.Background(), []storage.NewDelivery{{DIN: "A", Payload: []byte("sale=3"), Held: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	store, err = storage.Open(storage.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(store, Options{})
	if err := e.SetDestinations(plainHTTP([]*Destination{{DIN: "A", URL: a.url(t, "/a")}})); err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Stop(ctx)
	})
	testutil.WaitFor(t, "the left-held copy delivered", 10*time.Second, func() bool {
		d, err := e.Get(recs[0].ID)
		return err == nil && d.State == storage.StateDelivered
	})
	if got := a.requests(); len(got) != 1 || string(got[0].Body) != "sale=3" {
		t.Fatalf("sink received %d requests, want one", len(got))
	}
}
