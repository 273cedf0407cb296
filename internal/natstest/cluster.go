// Package natstest runs real NATS servers with JetStream on loopback for
// tests: one server, or a cluster of several on distinct ports. It is its
// own package so that only the tests that need NATS link the server.
package natstest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// Cluster is a set of JetStream servers routed to each other on 127.0.0.1.
type Cluster struct {
	t       testing.TB
	opts    []*server.Options
	Servers []*server.Server // nil while stopped
}

// readyTimeout is how long a server may take to accept clients, and the
// cluster to elect its JetStream meta leader, on a loaded machine (30 s
// was once not enough for a third server beside busy loops and another
// cluster's end-to-end test). A bound, not a wait.
const readyTimeout = 90 * time.Second

// Start runs n servers (1 for a single server) and waits until JetStream
// answers; they are shut down when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Servers: make([]*server.Server, n)}
	clusterPorts := make([]int, n)
	for i := range clusterPorts {
		clusterPorts[i] = testutil.FreePort(t)
	}
	for i := 0; i < n; i++ {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       testutil.FreePort(t),
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
		}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: "postback-test", Host: "127.0.0.1", Port: clusterPorts[i]}
			var routes []string
			for j, p := range clusterPorts {
				if j != i {
					routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
				}
			}
			o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}
		c.opts = append(c.opts, o)
	}
	for i := range c.opts {
		c.start(i)
	}
	t.Cleanup(c.Shutdown)
	c.WaitJetStream()
	return c
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	s, err := server.NewServer(c.opts[i])
	if err != nil {
		c.t.Fatalf("nats server %s: %v", c.opts[i].ServerName, err)
	}
	go s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		c.t.Fatalf("nats server %s not ready after %s", c.opts[i].ServerName, readyTimeout)
	}
	c.Servers[i] = s
}

// URLs are the client URLs of all servers, running or not, as a client
// would be configured.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.opts))
	for i, o := range c.opts {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	}
	return urls
}

// StoreDirs are the servers' JetStream folders (to look for clear text).
func (c *Cluster) StoreDirs() []string {
	dirs := make([]string, len(c.opts))
	for i, o := range c.opts {
		dirs[i] = o.StoreDir
	}
	return dirs
}

// Stop shuts server i down (its data stays for Restart).
func (c *Cluster) Stop(i int) {
	if s := c.Servers[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.Servers[i] = nil
	}
}

// Restart starts a stopped server i again on its ports and folder.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Servers[i] == nil {
		c.start(i)
	}
}

// Shutdown stops every server.
func (c *Cluster) Shutdown() {
	for i := range c.Servers {
		c.Stop(i)
	}
}

// WaitJetStream waits until every running server sees a JetStream meta
// leader and the leader counts every running server as an online peer:
// before that, creating a replicated stream may fail with "no suitable
// peers for placement, peer offline".
func (c *Cluster) WaitJetStream() {
	c.t.Helper()
	testutil.WaitFor(c.t, "JetStream meta leader with every server online", readyTimeout, func() bool {
		running, online := 0, 0
		for _, s := range c.Servers {
			if s == nil {
				continue
			}
			running++
			if !s.JetStreamEnabled() || (len(c.Servers) > 1 && !s.JetStreamIsCurrent()) {
				return false
			}
			if len(c.Servers) > 1 && s.JetStreamIsLeader() {
				online = len(s.JetStreamClusterPeers())
			}
		}
		return len(c.Servers) == 1 || online >= running // a just-stopped one may still count
	})
}
