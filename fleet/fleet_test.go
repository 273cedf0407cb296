package fleet_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postbackedge/caddy-postback/fleet"
	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/internal/natstest"
	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/storage"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func join(t testing.TB, urls []string, node string, replicas int, mod ...func(*fleet.Options)) *fleet.Fleet {
	t.Helper()
	f, err := connect(urls, node, replicas, mod...)
	if err != nil {
		t.Fatalf("Connect %s: %v", node, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func connect(urls []string, node string, replicas int, mod ...func(*fleet.Options)) (*fleet.Fleet, error) {
	o := fleet.Options{Servers: urls, Node: node, Replicas: replicas, Key: testKey, Instance: "instance-" + node, ConnectTimeout: 5 * time.Second}
	for _, m := range mod {
		m(&o)
	}
	return fleet.Connect(context.Background(), o)
}

// Two edges on a three-server cluster: of many concurrent claims of one
// notification, from both edges, exactly one wins and the others read its
// value.
func TestReplayClaimedOnceAcrossEdges(t *testing.T) {
	c := natstest.Start(t, 3)
	a := join(t, c.URLs()[:1], "edge-a", 3).ReplayStore()
	b := join(t, c.URLs()[1:], "edge-b", 3).ReplayStore()

	var won atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			existing, claimed, err := s.Claim([]byte("itns-replay/k1"), []byte("first"), time.Minute)
			switch {
			case err != nil:
				errs <- err
			case claimed:
				won.Add(1)
			case string(existing) != "first":
				errs <- errors.New("existing = " + string(existing))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := won.Load(); n != 1 {
		t.Fatalf("%d claims won, want exactly 1", n)
	}
}

// A record lives for its own TTL; then the key can be claimed again.
func TestReplayRecordExpires(t *testing.T) {
	c := natstest.Start(t, 1)
	s := join(t, c.URLs(), "edge-a", 1).ReplayStore()
	if _, ok, err := s.Claim([]byte("k"), []byte("v1"), time.Second); err != nil || !ok {
		t.Fatalf("first claim: %v %v", ok, err)
	}
	if _, ok, err := s.Claim([]byte("k"), []byte("v2"), time.Second); err != nil || ok {
		t.Fatalf("claim within the TTL: claimed=%v err=%v", ok, err)
	}
	testutil.WaitFor(t, "the record to expire", 30*time.Second, func() bool {
		_, ok, err := s.Claim([]byte("k"), []byte("v3"), time.Minute)
		return err == nil && ok
	})
	if err := s.Set([]byte("k"), []byte("done"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := s.Claim([]byte("k"), nil, time.Minute); ok || string(v) != "done" {
		t.Fatalf("after Set: claimed=%v value=%q", ok, v)
	}
	if err := s.Delete([]byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Claim([]byte("k"), []byte("again"), time.Minute); err != nil || !ok {
		t.Fatalf("claim after Delete: %v %v", ok, err)
	}
}

// The guard itns_verify runs, on two edges: the copy that reaches edge B
// while edge A's copy is in flight waits and gets A's answer; a later
// replay on B is answered from the record.
func TestReplayGuardAcrossEdges(t *testing.T) {
	c := natstest.Start(t, 3)
	opts := handlers.ReplayOptions{Window: time.Hour, Wait: 30 * time.Second, PollInterval: 20 * time.Millisecond}
	ga, err := handlers.NewReplayGuard(join(t, c.URLs(), "edge-a", 3).ReplayStore(), opts)
	if err != nil {
		t.Fatal(err)
	}
	gb, err := handlers.NewReplayGuard(join(t, c.URLs(), "edge-b", 3).ReplayStore(), opts)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("itns-replay/sale-1")
	first, err := ga.Begin(context.Background(), key)
	if err != nil || first.Ticket == nil {
		t.Fatalf("edge A, first copy: %+v %v", first, err)
	}
	got := make(chan handlers.ReplayResult, 1)
	go func() {
		res, err := gb.Begin(context.Background(), key)
		if err != nil {
			t.Error(err)
		}
		got <- res
	}()
	if err := first.Ticket.Finish(200, "text/plain", []byte("OK 1"), true); err != nil {
		t.Fatal(err)
	}
	res := <-got
	if res.Answer == nil || string(res.Answer.Body) != "OK 1" || res.Ticket != nil {
		t.Fatalf("edge B, concurrent copy: %+v, want A's answer", res)
	}
	res, err = gb.Begin(context.Background(), key)
	if err != nil || res.Answer == nil || res.Answer.Status != 200 {
		t.Fatalf("edge B, later replay: %+v %v", res, err)
	}
}

func TestNodeNameIsClaimedOnce(t *testing.T) {
	c := natstest.Start(t, 1)
	join(t, c.URLs(), "edge-a", 1)
	_, err := connect(c.URLs(), "edge-a", 1, func(o *fleet.Options) { o.Instance = "another-process" })
	if !errors.Is(err, fleet.ErrNodeInUse) || !strings.Contains(err.Error(), `"edge-a"`) {
		t.Fatalf("second edge with the same node: %v, want ErrNodeInUse naming it", err)
	}
	// The same process (a config reload) keeps its name.
	again, err := connect(c.URLs(), "edge-a", 1)
	if err != nil {
		t.Fatalf("same instance: %v", err)
	}
	again.Close()
}

// An edge killed before it freed its name (here: its fleet never closed)
// restarts on the same disk and takes the name back at once; another disk
// is still refused.
func TestNodeNameTakenOverBySameDisk(t *testing.T) {
	c := natstest.Start(t, 1)
	join(t, c.URLs(), "edge-a", 1, func(o *fleet.Options) { o.Instance, o.Disk = "run-1", "disk-a" })
	if _, err := connect(c.URLs(), "edge-a", 1, func(o *fleet.Options) { o.Instance, o.Disk = "other", "disk-b" }); !errors.Is(err, fleet.ErrNodeInUse) {
		t.Fatalf("another disk: %v, want ErrNodeInUse", err)
	}
	join(t, c.URLs(), "edge-a", 1, func(o *fleet.Options) { o.Instance, o.Disk = "run-2", "disk-a" })
}

func TestNodeNameFreedAtClose(t *testing.T) {
	c := natstest.Start(t, 1)
	f, err := connect(c.URLs(), "edge-a", 1)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	join(t, c.URLs(), "edge-a", 1, func(o *fleet.Options) { o.Instance = "next-process" })
}

func TestConnectRefusals(t *testing.T) {
	single := natstest.Start(t, 1)
	if _, err := connect(single.URLs(), "edge-a", 3); err == nil || !strings.Contains(err.Error(), "replicas 3") {
		t.Errorf("replicas 3 on one server: %v", err)
	}
	if _, err := connect([]string{"nats://" + testutil.DeadAddr(t)}, "edge-a", 1); err == nil || !strings.Contains(err.Error(), "connect to nats") {
		t.Errorf("NATS down: %v", err)
	}
	if _, err := connect(single.URLs(), "edge a", 1); err == nil || !strings.Contains(err.Error(), "node") {
		t.Errorf("bad node name: %v", err)
	}
	if _, err := connect(single.URLs(), "edge-a", 1, func(o *fleet.Options) { o.Key = nil }); err == nil || !strings.Contains(err.Error(), "encryption_key") {
		t.Errorf("no key: %v", err)
	}
}

func TestWrongCredentials(t *testing.T) {
	o := &server.Options{Host: "127.0.0.1", Port: testutil.FreePort(t), JetStream: true, StoreDir: t.TempDir(),
		Username: "edge", Password: "right", NoLog: true, NoSigs: true}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats not ready")
	}
	url := s.ClientURL()
	_, err = connect([]string{url}, "edge-a", 1, func(o *fleet.Options) { o.User, o.Password = "edge", "wrong" })
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: %v, want an authorization error", err)
	}
	join(t, []string{url}, "edge-a", 1, func(o *fleet.Options) { o.User, o.Password = "edge", "right" })
}

func TestBucketOfAnotherVersionIsRefused(t *testing.T) {
	c := natstest.Start(t, 1)
	nc, err := nats.Connect(c.URLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "postback_replay"}); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(c.URLs(), "edge-a", 1); err == nil || !strings.Contains(err.Error(), "not made by this version") {
		t.Fatalf("foreign bucket: %v", err)
	}
	// Another prefix is another fleet: it starts.
	join(t, c.URLs(), "edge-a", 1, func(o *fleet.Options) { o.Prefix = "shop2" })
}

// Nothing an edge writes is in clear on the NATS servers' disks.
func TestNoClearTextOnNATSDisks(t *testing.T) {
	c := natstest.Start(t, 3)
	f := join(t, c.URLs(), "edge-a", 3)
	s := f.ReplayStore()
	secret := "ctransreceipt=CLEARTEXT-MARKER-4242"
	if _, _, err := s.Claim([]byte("itns-replay/x"), []byte(secret), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("itns-replay/x"), []byte("OK "+secret), time.Minute); err != nil {
		t.Fatal(err)
	}
	f.Records().Record(storage.Delivery{ID: "0123456789abcdef0123456789abcdef", DIN: "1001", LastError: secret})
	// A JetStream write is on every replica's disk once acknowledged by
	// a quorum; wait until all three hold it, then look.
	found := 0
	testutil.WaitFor(t, "the record on every replica's disk", 30*time.Second, func() bool {
		found = 0
		for _, dir := range c.StoreDirs() {
			if containsFile(t, dir, []byte("itns-replay")) && containsFile(t, dir, []byte("0123456789abcdef0123456789abcdef")) {
				found++
			}
		}
		return found == 3
	})
	for _, dir := range c.StoreDirs() {
		if containsFile(t, dir, []byte("CLEARTEXT-MARKER")) {
			t.Errorf("clear text under %s", dir)
		}
	}
}

func containsFile(t *testing.T, root string, needle []byte) bool {
	t.Helper()
	hit := false
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || hit {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, needle) {
			hit = true
		}
		return nil
	})
	return hit
}

// NATS gone: every operation fails within its timeout (the request is
// answered 503), and works again once NATS is back.
func TestReplayStoreWhileNATSIsAway(t *testing.T) {
	c := natstest.Start(t, 1)
	s := join(t, c.URLs(), "edge-a", 1).ReplayStore()
	c.Stop(0)
	_, _, err := s.Claim([]byte("k"), []byte("v"), time.Minute)
	if err == nil || !fleet.IsUnavailable(err) {
		t.Fatalf("claim with NATS away: %v, want an unavailable error", err)
	}
	// Not buffered for later: a claim the request was refused for must not
	// turn up once NATS is back.
	c.Restart(0)
	testutil.WaitFor(t, "claims to work again", 60*time.Second, func() bool {
		_, ok, err := s.Claim([]byte("k2"), []byte("v"), time.Minute)
		return err == nil && ok
	})
	if _, ok, err := s.Claim([]byte("k"), []byte("v"), time.Minute); err != nil || !ok {
		t.Fatalf("the claim made while NATS was away was kept: claimed=%v err=%v", ok, err)
	}
}
