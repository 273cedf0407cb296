package caddymodule

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/postbackedge/caddy-postback/fleet"
)

// Cluster joins this edge to a fleet of edges on NATS JetStream: the
// replay guard of itns_verify's dedupe becomes fleet-wide. It needs the
// postback app's encryption_key, which seals everything written to NATS.
type Cluster struct {
	// NATS are the servers' URLs (nats://host:4222, tls://...).
	NATS []string `json:"nats"`
	// Node is this edge's name in the fleet, unique among its edges.
	// Default: the host name.
	Node string `json:"node,omitempty"`
	// Replicas of every stream and bucket, at most the number of
	// JetStream servers. Default 1 (a single NATS server).
	Replicas int `json:"replicas,omitempty"`
	// Queue is where pending deliveries live: "badger", this edge's own
	// store (the default), or "jetstream", a replicated queue every edge
	// drains (docs/fleet-queue.md).
	Queue string `json:"queue,omitempty"`
	// Prefix names the buckets, so several fleets can share one NATS.
	// Default "postback".
	Prefix string `json:"prefix,omitempty"`
	// CredsFile, User/Password and NKey (a seed file) are the ways to
	// authenticate; at most one. Placeholders such as {env.NATS_PASSWORD}.
	CredsFile string `json:"creds_file,omitempty"`
	User      string `json:"user,omitempty"`
	Password  string `json:"password,omitempty"`
	NKey      string `json:"nkey,omitempty"`
	// TLS to the NATS servers.
	TLS *ClusterTLS `json:"tls,omitempty"`
}

// ClusterTLS: CACert adds trust; ClientCert and ClientKey (PEM files) go
// together.
type ClusterTLS struct {
	CACert     string `json:"ca_cert,omitempty"`
	ClientCert string `json:"client_cert,omitempty"`
	ClientKey  string `json:"client_key,omitempty"`
}

// Queue backends.
const (
	queueBadger    = "badger"
	queueJetStream = "jetstream"
)

// checkQueue is the rule for the queue option.
func checkQueue(q string) error {
	switch q {
	case "", queueBadger, queueJetStream:
		return nil
	}
	return fmt.Errorf("queue %q: want badger or jetstream", q)
}

// options resolves placeholders and checks the block with the fleet's
// rules; it connects to nothing.
func (c *Cluster) options(repl *caddy.Replacer, key []byte) (fleet.Options, error) {
	if err := checkQueue(c.Queue); err != nil {
		return fleet.Options{}, err
	}
	if key == nil {
		return fleet.Options{}, fmt.Errorf("cluster needs encryption_key: nothing may be in clear on NATS's disks")
	}
	r := func(s string) string { return repl.ReplaceAll(s, "") }
	o := fleet.Options{
		Node:         r(c.Node),
		Replicas:     c.Replicas,
		Prefix:       r(c.Prefix),
		Key:          key,
		CredsFile:    r(c.CredsFile),
		User:         r(c.User),
		Password:     r(c.Password),
		NKeySeedFile: r(c.NKey),
		Instance:     processID,
	}
	for _, s := range c.NATS {
		o.Servers = append(o.Servers, r(s))
	}
	if o.Node == "" {
		o.Node = defaultNode()
	}
	if c.TLS != nil {
		o.CACert, o.ClientCert, o.ClientKey = r(c.TLS.CACert), r(c.TLS.ClientCert), r(c.TLS.ClientKey)
	}
	if err := o.Validate(); err != nil {
		return fleet.Options{}, err
	}
	return o, nil
}

// defaultNode is the host name, made a valid node name.
func defaultNode() string {
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	host = regexp.MustCompile(`[^A-Za-z0-9_-]`).ReplaceAllString(host, "-")
	if host == "" {
		return "edge"
	}
	return host[:min(len(host), 64)]
}

// fleetPool shares one connection and node claim per fleet across config
// reloads, as enginePool does for the store: the new config starts while
// the old one still holds the node name.
var fleetPool = caddy.NewUsagePool()

type pooledFleet struct{ *fleet.Fleet }

func (p pooledFleet) Destruct() error { return p.Close() }

// poolKey tells fleets apart; a reload that changes any of these joins anew.
func poolKey(o fleet.Options) string {
	return strings.Join([]string{o.Prefix, o.Node, strings.Join(o.Servers, ","), keyFingerprint(o.Key)}, "|")
}

func loadFleet(o fleet.Options) (*fleet.Fleet, error) {
	v, _, err := fleetPool.LoadOrNew(poolKey(o), func() (caddy.Destructor, error) {
		f, err := fleet.Connect(context.Background(), o)
		if err != nil {
			return nil, err
		}
		return pooledFleet{f}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(pooledFleet).Fleet, nil
}
