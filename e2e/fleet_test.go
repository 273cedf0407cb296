package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/internal/natstest"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// fleetScript is the legacy script behind every edge: it counts the
// notifications it receives by receipt, slowly enough (100 ms) that copies
// arriving at two edges at once overlap.
type fleetScript struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func newFleetScript(t *testing.T) *fleetScript {
	s := &fleetScript{hits: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		receipt := r.PostForm.Get("tranreceipt")
		s.mu.Lock()
		s.hits[receipt]++
		n := s.hits[receipt]
		s.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
		fmt.Fprintf(w, "SALE OK\n%s\nmember %d", receipt, n)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *fleetScript) hitsOf(receipt string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[receipt]
}

// fleetEdge is one edge's folder, port and config.
type fleetEdge struct {
	name, dir string
	port      int
	cfg       string
	proc      *caddyProc
}

func (e *fleetEdge) url() string { return fmt.Sprintf("http://127.0.0.1:%d/itns.php", e.port) }

func (e *fleetEdge) start(t *testing.T) {
	e.proc = startCaddy(t, e.dir, e.cfg, "E2E_ITNS_SECRET="+itnsSecret, "E2E_DB_KEY="+e2eDBKey)
}

func newFleetEdge(t *testing.T, name string, nats []string, dest, caFile, script string) *fleetEdge {
	return newFleetEdgeQueue(t, name, nats, dest, caFile, script, "badger", "retry_schedule 0s 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms 200ms")
}

// newFleetEdgeQueue is newFleetEdge with the cluster's queue and the
// destination's options.
func newFleetEdgeQueue(t *testing.T, name string, nats []string, dest, caFile, script, queue, destOpts string) *fleetEdge {
	e := &fleetEdge{name: name, dir: t.TempDir(), port: testutil.FreePort(t)}
	e.cfg = caddyfile{
		store: e.dir + "/store",
		postback: fmt.Sprintf(`encryption_key {env.E2E_DB_KEY}
cluster {
	nats %s
	node %s
	replicas 3
	queue %s
}`, strings.Join(nats, " "), name, queue),
		dests: []destination{{din: "1001", url: dest, ca: caFile, opts: destOpts}},
		sites: []site{{port: e.port, body: fmt.Sprintf(`route /itns.php {
	itns_verify {
		secret {env.E2E_ITNS_SECRET}
		dedupe 1h
		dedupe_wait 5s
	}
	secondary_post 1001
	reverse_proxy %s
}`, script)}},
	}.String()
	e.start(t)
	return e
}

// postUntilAnswered is a sender: it retries a 503 or a broken connection,
// on the next edge, as a load balancer would, until an answer other than
// 503 or the deadline.
func postUntilAnswered(client *http.Client, edges []*fleetEdge, first int, body string, deadline time.Time) (answer, error) {
	var last error
	for i := first; time.Now().Before(deadline); i++ {
		a, err := tryDo(client, http.MethodPost, edges[i%len(edges)].url(), formContent, body)
		if err == nil && a.Status != http.StatusServiceUnavailable {
			return a, nil
		}
		if err == nil {
			err = fmt.Errorf("HTTP %d (Retry-After %q)", a.Status, a.Header.Get("Retry-After"))
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return answer{}, fmt.Errorf("no answer before the deadline: %w", last)
}

// Two edges (built binaries, each with a disk of its own) on a three-server
// JetStream cluster, both copying to one destination:
//   - the same notification sent to both edges at once reaches one script
//     once, and both senders get its answer; a replay on the other edge is
//     answered from it;
//   - each edge's admin API lists the other's deliveries, with their node;
//   - under load, one NATS server stopped and an edge killed with SIGKILL:
//     every notification a sender saw answered 200 reaches the destination;
//   - the NATS servers' folders hold no payload in clear.
func TestFleetOfTwoEdges(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end fleet test")
	}
	nats := natstest.Start(t, 3)
	dir := t.TempDir()
	destPort := testutil.FreePort(t)
	dest := newSink(t, dir, destPort)
	destURL := fmt.Sprintf("https://127.0.0.1:%d/collect", destPort)
	script := newFleetScript(t)
	addr := script.srv.Listener.Addr().String()
	a := newFleetEdge(t, "edge-a", nats.URLs(), destURL, dest.caFile, addr)
	b := newFleetEdge(t, "edge-b", nats.URLs(), destURL, dest.caFile, addr)
	edges := []*fleetEdge{a, b}
	client := &http.Client{Timeout: 20 * time.Second}
	signer, err := handlers.NewITNS(handlers.ITNSConfig{Secrets: [][]byte{[]byte(itnsSecret)}})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(receipt string) string {
		body, err := signer.SignForm(itnsFields("", receipt, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		return body
	}

	// Concurrent copies of one notification, one to each edge.
	const pairs = 8
	bodies := map[string]string{}
	for i := range pairs {
		receipt := fmt.Sprintf("PAIR%03d", i)
		body := sign(receipt)
		bodies[receipt] = body
		var answers [2]answer
		var errs [2]error
		var wg sync.WaitGroup
		for j := range edges {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Each sender sticks to its edge: a 503 (the other edge's
				// copy still in flight past dedupe_wait) is retried there.
				answers[j], errs[j] = postUntilAnswered(client, edges[j:j+1], 0, body, time.Now().Add(30*time.Second))
			}()
		}
		wg.Wait()
		for j := range edges {
			if errs[j] != nil || answers[j].Status != http.StatusOK {
				t.Fatalf("%s, edge %s: %v %v", receipt, edges[j].name, answers[j], errs[j])
			}
		}
		if answers[0].Body != answers[1].Body {
			t.Fatalf("%s: the edges answered %q and %q", receipt, answers[0].Body, answers[1].Body)
		}
		if n := script.hitsOf(receipt); n != 1 {
			t.Fatalf("%s sent to both edges at once reached the script %d times", receipt, n)
		}
	}
	// Replays, each on the edge that did not take it first: answered, not passed on.
	for receipt, body := range bodies {
		for j := range edges {
			if a, err := tryDo(client, http.MethodPost, edges[j].url(), formContent, body); err != nil || a.Status != http.StatusOK {
				t.Fatalf("replay of %s on %s: %v %v", receipt, edges[j].name, a, err)
			}
		}
		if n := script.hitsOf(receipt); n != 1 {
			t.Fatalf("replays of %s reached the script: %d hits", receipt, n)
		}
	}
	testutil.WaitFor(t, "one copy of each pair at the destination", 30*time.Second, func() bool {
		got, _ := dest.received()
		for _, body := range bodies {
			if got[body] == 0 {
				return false
			}
		}
		return true
	})

	// Fleet-wide reporting: each edge lists every delivery, with its node.
	for _, e := range edges {
		var list struct {
			Deliveries []struct {
				Node  string `json:"node"`
				State string `json:"state"`
			} `json:"deliveries"`
		}
		testutil.WaitFor(t, e.name+" to list all "+fmt.Sprint(pairs)+" deliveries of the fleet", 30*time.Second, func() bool {
			if err := getJSON(client, e.proc.adminURL("/postback/deliveries?limit=1000"), &list); err != nil {
				return false
			}
			return len(list.Deliveries) == pairs
		})
		nodes := map[string]int{}
		for _, d := range list.Deliveries {
			nodes[d.Node]++
		}
		if nodes["edge-a"]+nodes["edge-b"] != pairs {
			t.Fatalf("%s lists deliveries of nodes %v", e.name, nodes)
		}
		for node, n := range nodes {
			var only struct {
				Count int `json:"count"`
			}
			if err := getJSON(client, e.proc.adminURL("/postback/deliveries?limit=1000&node="+node), &only); err != nil || only.Count != n {
				t.Fatalf("%s, node=%s: %d deliveries (%v), want %d", e.name, node, only.Count, err, n)
			}
		}
	}

	// Load, with one NATS server stopped and then edge A killed.
	accepted, gaveUp := loadWithFaults(t, nats, edges, a, func(i int64) string { return sign(fmt.Sprintf("LOAD%06d", i)) })
	t.Logf("under load: %d notifications answered 200, %d given up by their sender", len(accepted), gaveUp)
	testutil.WaitFor(t, "every accepted notification at the destination", 60*time.Second, func() bool {
		got, _ := dest.received()
		for body := range accepted {
			if got[body] == 0 {
				return false
			}
		}
		return true
	})

	// Nothing in clear on NATS's disks: no card number, no receipt.
	noneInClear(t, nats.StoreDirs(), "4111111111111111", "PAIR000", "LOAD000001", url.QueryEscape("anna.o+shop@example.com"))
}

// queue jetstream, built edges on a three-server cluster: edge A accepts
// notifications while the destination refuses them (503), then dies with
// SIGKILL and its disk is lost; edge B delivers every one A answered 200,
// once the destination is back, and its stats count them. Then under load
// on B and a new edge C, one NATS server stopped and C killed: every
// notification answered 200 is delivered.
func TestFleetQueueJetStreamSurvivesALostEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end fleet test")
	}
	nats := natstest.Start(t, 3)
	dir := t.TempDir()
	destPort := testutil.FreePort(t)
	var up atomic.Bool
	dest := newSinkFunc(t, dir, destPort, func(*http.Request) int {
		if up.Load() {
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	})
	destURL := fmt.Sprintf("https://127.0.0.1:%d/collect", destPort)
	script := newFleetScript(t)
	addr := script.srv.Listener.Addr().String()
	opts := "retry_schedule 0s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s\ntimeout 2s\nbreaker off"
	a := newFleetEdgeQueue(t, "edge-a", nats.URLs(), destURL, dest.caFile, addr, "jetstream", opts)
	b := newFleetEdgeQueue(t, "edge-b", nats.URLs(), destURL, dest.caFile, addr, "jetstream", opts)
	client := &http.Client{Timeout: 20 * time.Second}
	signer, err := handlers.NewITNS(handlers.ITNSConfig{Secrets: [][]byte{[]byte(itnsSecret)}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	var bodies []string
	for i := range n {
		body, err := signer.SignForm(itnsFields("", fmt.Sprintf("JSQ%04d", i), time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if ans, err := tryDo(client, http.MethodPost, a.url(), formContent, body); err != nil || ans.Status != http.StatusOK {
			t.Fatalf("notification %d on edge A: %v %v", i, ans, err)
		}
		bodies = append(bodies, body)
	}
	time.Sleep(time.Second) // attempts under way, on both edges
	a.proc.kill9()
	if err := os.RemoveAll(a.dir); err != nil {
		t.Fatal(err)
	}
	up.Store(true)
	testutil.WaitFor(t, "every notification edge A accepted at the destination", 90*time.Second, func() bool {
		got, _ := dest.received()
		for _, body := range bodies {
			if got[body] == 0 {
				return false
			}
		}
		return true
	})
	got, _ := dest.received()
	dups := 0
	for _, body := range bodies {
		dups += got[body] - 1
	}
	t.Logf("E2E-FIGURES: queue jetstream, edge lost: %d notifications accepted by it, all delivered by the other edge, %d duplicates", n, dups)

	var stats struct {
		Totals struct {
			Pending   int `json:"pending"`
			Delivered int `json:"delivered"`
		} `json:"totals"`
	}
	testutil.WaitFor(t, "edge B's stats: nothing pending, all delivered", 60*time.Second, func() bool {
		return getJSON(client, b.proc.adminURL("/postback/stats"), &stats) == nil && stats.Totals.Pending == 0 && stats.Totals.Delivered >= n
	})

	// Then under load, on B and a new edge C: one NATS server stopped, C
	// killed with SIGKILL and restarted: every notification answered 200
	// reaches the destination.
	c := newFleetEdgeQueue(t, "edge-c", nats.URLs(), destURL, dest.caFile, addr, "jetstream", opts)
	accepted, gaveUp := loadWithFaults(t, nats, []*fleetEdge{b, c}, c, func(i int64) string {
		body, err := signer.SignForm(itnsFields("", fmt.Sprintf("JSL%06d", i), time.Now()))
		if err != nil {
			t.Error(err)
		}
		return body
	})
	testutil.WaitFor(t, "every notification accepted under load at the destination", 90*time.Second, func() bool {
		got, _ := dest.received()
		for body := range accepted {
			if got[body] == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("E2E-FIGURES: queue jetstream under load, a NATS server stopped, an edge killed: %d notifications answered 200, all delivered; %d given up by their sender", len(accepted), gaveUp)
	noneInClear(t, nats.StoreDirs(), "4111111111111111", "JSQ0001", "JSL000001", url.QueryEscape("anna.o+shop@example.com"))
}

// loadWithFaults sends notifications (sign(i), i counting up) from 4
// senders to edges for 9 s, a sender moving to the next edge on a 503 or
// a broken connection: after 2 s NATS server 0 stops, after 4 s victim is
// killed with SIGKILL, a second later it starts again on its disk, and
// after 7 s NATS server 0 comes back. It returns the bodies answered 200
// (at least 20, or t fails) and how many senders gave up.
func loadWithFaults(t *testing.T, nats *natstest.Cluster, edges []*fleetEdge, victim *fleetEdge, sign func(i int64) string) (map[string]bool, int) {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second}
	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		gaveUp   int
		seq      atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for s := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := seq.Add(1)
				body := sign(i)
				a, err := postUntilAnswered(client, edges, s+int(i), body, time.Now().Add(20*time.Second))
				mu.Lock()
				if err == nil && a.Status == http.StatusOK {
					accepted[body] = true
				} else {
					gaveUp++
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(2 * time.Second)
	nats.Stop(0)
	time.Sleep(2 * time.Second)
	victim.proc.kill9()
	time.Sleep(time.Second)
	victim.start(t)
	time.Sleep(2 * time.Second)
	nats.Restart(0)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	if len(accepted) < 20 {
		t.Fatalf("only %d notifications answered under load (%d given up)", len(accepted), gaveUp)
	}
	return accepted, gaveUp
}

// noneInClear fails t for every file under dirs that holds one of secrets.
func noneInClear(t *testing.T, dirs []string, secrets ...string) {
	t.Helper()
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(path string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			for _, secret := range secrets {
				if bytes.Contains(data, []byte(secret)) {
					t.Errorf("%s holds %q in clear", path, secret)
				}
			}
			return nil
		})
	}
}
