package caddymodule

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/storage"
)

// replayStoreProvider is what itns_verify's dedupe needs from the postback
// app. ReplayStore is called during Provision, before the app has started
// and opened its store, so what it returns must reach the store lazily
// (lazyReplay does).
type replayStoreProvider interface {
	ReplayStore() handlers.ReplayStore
	// ReplayOwner is the owner the guard stamps in-flight records with
	// (handlers.ReplayOptions.Owner): "" in a fleet, where another owner's
	// record is in flight on another edge, not left by a dead process.
	ReplayOwner() string
}

// replayStoreFrom gets the replay store from the postback app, loading the
// app (with its defaults) if the config does not set it up.
func replayStoreFrom(ctx caddy.Context) (handlers.ReplayStore, string, error) {
	app, err := ctx.App("postback")
	if err != nil {
		return nil, "", fmt.Errorf("the postback app is needed for its store: %w", err)
	}
	p, ok := app.(replayStoreProvider)
	if !ok {
		return nil, "", fmt.Errorf("the postback app (%T) offers no replay store", app)
	}
	s := p.ReplayStore()
	if s == nil {
		return nil, "", errors.New("the postback app offers no replay store")
	}
	return s, p.ReplayOwner(), nil
}

// processID tells this process's in-flight replay records from those of a
// process that died mid-request (set once, never changed).
var processID = func() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// errReplayStoreClosed: a request ran while the app had no open store.
var errReplayStoreClosed = errors.New("postback store not open")

// lazyReplay adapts a replay store that exists only once the app has
// started (the Badger store, or the fleet's bucket) to handlers.ReplayStore:
// open returns it, or nil before Start, on every operation, so that the
// handler can be provisioned before the store is opened.
type lazyReplay struct{ open func() handlers.ReplayStore }

func (a lazyReplay) Claim(key, value []byte, ttl time.Duration) ([]byte, bool, error) {
	s := a.open()
	if s == nil {
		return nil, false, errReplayStoreClosed
	}
	return s.Claim(key, value, ttl)
}

func (a lazyReplay) Set(key, value []byte, ttl time.Duration) error {
	s := a.open()
	if s == nil {
		return errReplayStoreClosed
	}
	return s.Set(key, value, ttl)
}

func (a lazyReplay) Delete(key []byte) error {
	s := a.open()
	if s == nil {
		return errReplayStoreClosed
	}
	return s.Delete(key)
}

// badgerReplay is the Badger store's dedupe records as a ReplayStore.
type badgerReplay struct{ s *storage.Store }

func (b badgerReplay) Claim(key, value []byte, ttl time.Duration) ([]byte, bool, error) {
	return b.s.DedupeClaim(key, value, ttl)
}

func (b badgerReplay) Set(key, value []byte, ttl time.Duration) error {
	return b.s.DedupeSet(key, value, ttl)
}

func (b badgerReplay) Delete(key []byte) error { return b.s.DedupeDelete(key) }
