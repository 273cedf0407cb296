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
// (storeReplay does).
type replayStoreProvider interface {
	ReplayStore() handlers.ReplayStore
}

// replayStoreFrom gets the replay store from the postback app, loading the
// app (with its defaults) if the config does not set it up.
func replayStoreFrom(ctx caddy.Context) (handlers.ReplayStore, error) {
	app, err := ctx.App("postback")
	if err != nil {
		return nil, fmt.Errorf("the postback app is needed for its store: %w", err)
	}
	p, ok := app.(replayStoreProvider)
	if !ok {
		return nil, fmt.Errorf("the postback app (%T) offers no replay store", app)
	}
	s := p.ReplayStore()
	if s == nil {
		return nil, errors.New("the postback app offers no replay store")
	}
	return s, nil
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

// storeReplay adapts the app's Badger store to handlers.ReplayStore. open
// returns the store, or nil before Start; it is called on every operation
// so that the handler can be provisioned before the store is opened. For
// the app: func (a *App) ReplayStore() handlers.ReplayStore { return storeReplay(a.Store) }
func storeReplay(open func() *storage.Store) handlers.ReplayStore {
	return replayStoreAdapter{open: open}
}

type replayStoreAdapter struct{ open func() *storage.Store }

func (a replayStoreAdapter) Claim(key, value []byte, ttl time.Duration) ([]byte, bool, error) {
	s := a.open()
	if s == nil {
		return nil, false, errReplayStoreClosed
	}
	return s.DedupeClaim(key, value, ttl)
}

func (a replayStoreAdapter) Set(key, value []byte, ttl time.Duration) error {
	s := a.open()
	if s == nil {
		return errReplayStoreClosed
	}
	return s.DedupeSet(key, value, ttl)
}

func (a replayStoreAdapter) Delete(key []byte) error {
	s := a.open()
	if s == nil {
		return errReplayStoreClosed
	}
	return s.DedupeDelete(key)
}
