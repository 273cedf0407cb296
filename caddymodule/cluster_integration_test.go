package caddymodule

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/natstest"
	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
	"github.com/postbackedge/caddy-postback/storage"
)

const clusterTestKey = "1111111111111111111111111111111111111111111111111111111111111111"

// clusterConfig is an edge of a fleet on nats: its own disk, its node name.
func clusterConfig(t *testing.T, nats []string, node string, upstream string) (global, sites string) {
	global = fmt.Sprintf(`postback {
		storage_dir %s
		encryption_key %s
		cluster {
			nats %s
			node %s
			replicas 3
		}
	}`, testDir(t, "fleet-"+node), clusterTestKey, strings.Join(nats, " "), node)
	sites = strings.ReplaceAll(`
http://127.0.0.1:{port0} {
	route /itns.php {
		itns_verify {
			secret {env.POSTBACK_TEST_ITNS_NEW}
			prefix c
			dedupe 1h
			dedupe_wait 2s
		}
		reverse_proxy UPSTREAM
	}
}
`, "UPSTREAM", upstream)
	return global, sites
}

// The replay guard is the fleet's: a notification first answered by edge A
// is answered from that answer by edge B, which has a disk of its own, and
// never reaches B's script. With NATS away, a notification is refused with
// a 503 and Retry-After (never let through unchecked), counted.
func TestClusterReplayGuardIsFleetWide(t *testing.T) {
	t.Setenv("POSTBACK_TEST_ITNS_NEW", itnsNewSecret)
	c := natstest.Start(t, 3)
	upA, upB := newITNSUpstream(t), newITNSUpstream(t)
	url := testURL(0, "/itns.php")
	body := sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctransreceipt=FLEET001")

	gA, sA := clusterConfig(t, c.URLs()[:1], "edge-a", upA.addr())
	newTester(t, gA, sA)
	first := itnsPost(t, url, itnsFormType, strings.NewReader(body))
	if first.status != 200 || first.body != "SALE OK\nmember 1" {
		t.Fatalf("edge A, first copy: %d %q", first.status, first.body)
	}

	// Edge B: another storage_dir, another script, another NATS server.
	gB, sB := clusterConfig(t, c.URLs()[2:], "edge-b", upB.addr())
	newTester(t, gB, sB)
	replay := itnsPost(t, url, itnsFormType, strings.NewReader(body))
	if replay.status != first.status || replay.body != first.body {
		t.Fatalf("edge B, replay: %d %q, want edge A's answer %q", replay.status, replay.body, first.body)
	}
	if upB.hits.Load() != 0 || upA.hits.Load() != 1 {
		t.Fatalf("scripts reached: A %d, B %d; want 1 and 0", upA.hits.Load(), upB.hits.Load())
	}
	fresh := sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctransreceipt=FLEET002")
	if r := itnsPost(t, url, itnsFormType, strings.NewReader(fresh)); r.status != 200 || upB.hits.Load() != 1 {
		t.Fatalf("edge B, new notification: %d %q, B hits %d", r.status, r.body, upB.hits.Load())
	}

	before := counterValue(t, "caddy_postback_dedupe_unavailable_total")
	c.Shutdown()
	down := sign(t, itnsNewSecret, "c", "ctransaction=SALE", "ctransreceipt=FLEET003")
	r := itnsPost(t, url, itnsFormType, strings.NewReader(down))
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("NATS away: %d (Retry-After %q), want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	if upB.hits.Load() != 1 {
		t.Fatalf("with NATS away a notification reached the script")
	}
	if got := counterValue(t, "caddy_postback_dedupe_unavailable_total") - before; got != 1 {
		t.Errorf("dedupe_unavailable_total went up by %v, want 1", got)
	}
	for i := range c.Servers {
		c.Restart(i)
	}
	c.WaitJetStream()
	testutil.WaitFor(t, "the edge to answer again once NATS is back", 60*time.Second, func() bool {
		return itnsPost(t, url, itnsFormType, strings.NewReader(down)).status == 200
	})
	if upB.hits.Load() != 2 {
		t.Fatalf("B hits %d after NATS came back, want 2", upB.hits.Load())
	}
}

// counterValue reads an unlabelled caddy_postback_* counter from the admin
// /metrics endpoint (0 when absent).
func counterValue(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := itnsClient().Get(fmt.Sprintf("http://localhost:%d/metrics", testAdminPort()))
	if err != nil {
		t.Fatalf("admin /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %q: %v", sc.Text(), err)
			}
			return f
		}
	}
	return 0
}

// An edge's deliveries, and its counts, are read through the admin API of
// another edge with a disk of its own: each carries its node, node= filters.
func TestClusterReportIsFleetWide(t *testing.T) {
	c := natstest.Start(t, 3)
	dest := newTestDestination(t)
	up := newUpstream(t)
	edge := func(node string) {
		global := fmt.Sprintf(`postback {
		storage_dir %s
		encryption_key %s
		cluster {
			nats %s
			node %s
			replicas 3
		}
		destination 3001 {
			url %s/collect
			ca_cert %s
		}
	}`, testDir(t, "fleet-"+node), clusterTestKey, strings.Join(c.URLs(), " "), node, dest.srv.URL, dest.caFile)
		newTester(t, global, fmt.Sprintf(`
http://127.0.0.1:{port0} {
	route /ipn.php {
		secondary_post 3001
		reverse_proxy %s
	}
}`, up.srv.Listener.Addr()))
	}
	post := func(body string) {
		t.Helper()
		r := itnsPost(t, testURL(0, "/ipn.php"), itnsFormType, strings.NewReader(body))
		if r.status != 200 {
			t.Fatalf("POST: %d %q", r.status, r.body)
		}
	}

	edge("edge-a")
	post("sale=1")
	// Recorded, not only received: edge A's last snapshot, published as it
	// stops, must count it (a completion is recorded up to the store's
	// absorb delay after the destination's answer).
	testutil.WaitFor(t, "edge A's copy delivered and recorded", 15*time.Second, func() bool {
		return len(dest.requests()) == 1 && destStats(adminStats(t), "3001").Delivered == 1
	})
	edge("edge-b")
	post("sale=2")
	testutil.WaitFor(t, "edge B's copy delivered", 15*time.Second, func() bool { return len(dest.requests()) == 2 })

	var list report.DeliveryList
	testutil.WaitFor(t, "both edges' deliveries, delivered, in edge B's listing", 30*time.Second, func() bool {
		adminGet(t, "/postback/deliveries?din=3001", &list)
		return len(list.Deliveries) == 2 && list.Deliveries[0].State == storage.StateDelivered && list.Deliveries[1].State == storage.StateDelivered
	})
	if list.Deliveries[0].Node != "edge-b" || list.Deliveries[1].Node != "edge-a" {
		t.Fatalf("nodes %q %q, want edge-b (newest) and edge-a", list.Deliveries[0].Node, list.Deliveries[1].Node)
	}
	adminGet(t, "/postback/deliveries?node=edge-a", &list)
	if len(list.Deliveries) != 1 || list.Deliveries[0].Node != "edge-a" {
		t.Fatalf("node=edge-a: %+v", list.Deliveries)
	}
	var one report.DeliveryDetail
	adminGet(t, "/postback/deliveries/"+list.Deliveries[0].ID, &one)
	if one.Node != "edge-a" || len(one.History) != 1 || one.History[0].Status != 200 {
		t.Fatalf("edge A's delivery read on edge B: %+v", one)
	}
	// Counts: edge A published its last snapshot when it stopped (the
	// reload to edge B), edge B publishes its own every few seconds.
	testutil.WaitFor(t, "fleet stats counting both edges", 30*time.Second, func() bool {
		return destStats(adminStats(t), "3001").Delivered == 2
	})
}
