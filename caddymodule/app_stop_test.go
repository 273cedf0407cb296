package caddymodule

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/postbackedge/caddy-postback/storage"
)

// startTestApp provisions and starts a postback app on dir outside a
// running Caddy, as one config of a reload would.
func startTestApp(t *testing.T, dir string) *App {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	a := &App{StorageDir: dir}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	return a
}

// During a reload Caddy starts the new config, then stops the old config's
// apps in no fixed order, so the old server may still be draining requests
// after the old postback app stopped. Those requests must keep enqueuing into
// the store the new config holds open (found end to end by
// e2e.TestReloadRequestInFlightIsServed); once no config holds the store,
// they get ErrClosed, never a silent success.
func TestAppStopKeepsSharedStoreForDrainingRequests(t *testing.T) {
	dir := t.TempDir()
	oldApp := startTestApp(t, dir)
	newApp := startTestApp(t, dir) // the reload's new config: same storage_dir
	if err := oldApp.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := oldApp.Stop(); err != nil { // idempotent: releases once
		t.Fatal(err)
	}
	// A request the old server is still draining.
	if _, err := oldApp.Enqueue(context.Background(), []string{"1001"}, formContentType, []byte("a=1")); err != nil {
		t.Fatalf("enqueue through the stopped old config while the new one runs: %v", err)
	}
	if oldApp.ReplayStore() == nil || oldApp.Store() == nil {
		t.Fatal("the stopped old config lost its store while the new config holds it open")
	}
	if err := newApp.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := oldApp.Enqueue(context.Background(), []string{"1001"}, formContentType, []byte("a=1")); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("enqueue after the last config stopped: %v, want storage.ErrClosed", err)
	}
}

// Caddy starts its apps in no fixed order: a request the HTTP server takes
// before the postback app has opened its store waits for Start instead of
// being refused.
func TestEnqueueWaitsForStart(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	a := &App{StorageDir: t.TempDir()}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := a.Enqueue(context.Background(), []string{"1001"}, formContentType, []byte("a=1"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Enqueue returned before Start: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Enqueue after Start: %v", err)
		}
	case <-time.After(startWait):
		t.Fatal("Enqueue still waiting after Start")
	}
	// A request that gave up waiting (its context ended) is refused.
	b := &App{StorageDir: t.TempDir()}
	if err := b.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := b.Enqueue(cctx, []string{"1001"}, formContentType, []byte("a=1")); !errors.Is(err, errNotStarted) {
		t.Fatalf("Enqueue with a cancelled context before Start: %v, want errNotStarted", err)
	}
}

// A reload whose new config fails to start: Caddy stops the new config's
// apps and the old config runs on. The shared engine must deliver the old
// config's DINs again, not the failed config's (a DIN the new config
// dropped would otherwise stay pending while the old routes enqueue to it).
func TestFailedReloadRestoresTheRunningDestinations(t *testing.T) {
	dir := t.TempDir()
	running := startAppWith(t, dir, "1001", "1002")
	t.Cleanup(func() { _ = running.Stop() })
	failed := startAppWith(t, dir, "1001") // the reload's config, which drops 1002
	if got := failed.engine.Load().DINs(); len(got) != 1 {
		t.Fatalf("the new config's Start left DINs %v", got)
	}
	failed.running = func() *App { return running } // Caddy still runs the old config
	if err := failed.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := running.engine.Load().DINs(); len(got) != 2 || got[0] != "1001" || got[1] != "1002" {
		t.Errorf("after the failed reload the engine delivers %v, want the running config's [1001 1002]", got)
	}
}

// After a successful reload the old config's Stop leaves the new config's
// destinations alone.
func TestSuccessfulReloadKeepsTheNewDestinations(t *testing.T) {
	dir := t.TempDir()
	old := startAppWith(t, dir, "1001", "1002")
	cur := startAppWith(t, dir, "1001")
	t.Cleanup(func() { _ = cur.Stop() })
	old.running = func() *App { return cur } // Caddy has switched to the new config
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := cur.engine.Load().DINs(); len(got) != 1 || got[0] != "1001" {
		t.Errorf("after the old config stopped the engine delivers %v, want the new config's [1001]", got)
	}
}

// startAppWith starts a postback app on dir with the DINs given (on a
// dead address: nothing is enqueued), as one config of a reload would.
func startAppWith(t *testing.T, dir string, dins ...string) *App {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	a := &App{StorageDir: dir, Destinations: map[string]*Destination{}}
	for _, din := range dins {
		a.Destinations[din] = &Destination{URL: "https://127.0.0.1:9/" + din}
	}
	if err := a.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	return a
}
