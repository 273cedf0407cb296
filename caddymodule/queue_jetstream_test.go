package caddymodule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/natstest"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// queue jetstream in one Caddy edge: a copy is written to the fleet's
// queue before the script runs and delivered from it; with no quorum (two
// of three NATS servers away) the notification is answered 503 with
// Retry-After and the script never sees it; once NATS is back it is
// accepted and delivered.
func TestQueueJetStreamEdge(t *testing.T) {
	copies := func(dest *testDestination, body string) int {
		n := 0
		for _, r := range dest.requests() {
			if r.Body == body {
				n++
			}
		}
		return n
	}
	c := natstest.Start(t, 3)
	dest := newTestDestination(t)
	up := newITNSUpstream(t)
	newTester(t, fmt.Sprintf(`postback {
		storage_dir %s
		encryption_key %s
		cluster {
			nats %s
			node edge-q
			replicas 3
			queue jetstream
		}
		destination 2701 {
			url %s/collect
			ca_cert %s
			timeout 2s
		}
	}`, testDir(t, "store"), clusterTestKey, strings.Join(c.URLs(), " "), dest.srv.URL, dest.caFile), `
http://127.0.0.1:{port0} {
	route /ipn.php {
		secondary_post 2701
		reverse_proxy `+up.addr()+`
	}
}`)
	post := func(body string) itnsResult {
		return itnsPost(t, testURL(0, "/ipn.php"), itnsFormType, strings.NewReader(body))
	}
	if r := post("ctransreceipt=QJ-1"); r.status != 200 {
		t.Fatalf("first notification: %d %q", r.status, r.body)
	}
	testutil.WaitFor(t, "the copy at the destination", 30*time.Second, func() bool { return copies(dest, "ctransreceipt=QJ-1") == 1 })

	c.Stop(1)
	c.Stop(2)
	hits := up.hits.Load()
	r := post("ctransreceipt=QJ-2")
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("no quorum: %d (Retry-After %q), want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	if up.hits.Load() != hits {
		t.Fatalf("with no quorum the notification reached the script")
	}
	c.Restart(1)
	c.Restart(2)
	c.WaitJetStream()
	testutil.WaitFor(t, "the edge to accept again", 60*time.Second, func() bool { return post("ctransreceipt=QJ-2").status == 200 })
	testutil.WaitFor(t, "the second copy at the destination", 60*time.Second, func() bool { return copies(dest, "ctransreceipt=QJ-2") >= 1 })
}
