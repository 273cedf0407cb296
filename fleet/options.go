package fleet

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Options configure a connection to the fleet's NATS servers.
type Options struct {
	// Servers are the NATS URLs (nats:// or tls://); at least one.
	Servers []string
	// Node is this edge's name in the fleet, unique among the edges.
	Node string
	// Replicas of every stream and bucket: at most the number of
	// JetStream servers. Default 1.
	Replicas int
	// Prefix names the buckets, so several fleets can share one NATS.
	// Default "postback".
	Prefix string
	// Retention of the fleet's delivery records and counts. Default 30d.
	Retention time.Duration
	// Key seals every value written to NATS (32 bytes); required.
	Key []byte

	// Credentials: at most one of CredsFile, User (with Password) and
	// NKeySeedFile.
	CredsFile    string
	User         string
	Password     string
	NKeySeedFile string
	// TLS: CACert adds trust; ClientCert and ClientKey go together.
	CACert     string
	ClientCert string
	ClientKey  string

	// ConnectTimeout bounds the first connection at start. Default 5s.
	ConnectTimeout time.Duration
	// Instance tells this process from another edge that uses the same
	// node name (a node record of another instance is a conflict).
	Instance string
	// Disk identifies the edge's own disk (its storage folder): a claim
	// held by the same disk is a previous run of this edge, killed before
	// it could free the name, and is taken over at once.
	Disk   string
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultPrefix         = "postback"
	DefaultConnectTimeout = 5 * time.Second
	DefaultRetention      = 30 * 24 * time.Hour
)

// prefixName is what NATS accepts in a bucket name, kept to what is also a
// single subject token.
var prefixName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// CheckNode is the rule for a node name: storage.CheckNode.
func CheckNode(name string) error { return storage.CheckNode(name) }

// CheckPrefix is the rule for a prefix: 1 to 32 letters, digits, '-' or '_'.
func CheckPrefix(prefix string) error {
	if !prefixName.MatchString(prefix) {
		return fmt.Errorf("prefix %q: want 1 to 32 letters, digits, '-' or '_'", prefix)
	}
	return nil
}

// CheckServer is the rule for a server URL: nats://, tls:// (or ws(s)://)
// with a host; a bare host:port is taken as nats://.
func CheckServer(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("nats server %q: want nats://host:port", s)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
		return nil
	}
	return fmt.Errorf("nats server %q: scheme %q, want nats:// or tls://", s, u.Scheme)
}

// Validate checks o and fills in the defaults.
func (o *Options) Validate() error {
	if len(o.Servers) == 0 {
		return errors.New("cluster: at least one nats server is required")
	}
	for _, s := range o.Servers {
		if err := CheckServer(s); err != nil {
			return err
		}
	}
	if err := CheckNode(o.Node); err != nil {
		return err
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if err := CheckPrefix(o.Prefix); err != nil {
		return err
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return fmt.Errorf("replicas %d: want 1 to 5 (JetStream's limit)", o.Replicas)
	}
	if len(o.Key) != 32 {
		return errors.New("cluster: encryption_key is required (nothing may be in clear on NATS's disks)")
	}
	creds := 0
	for _, set := range []bool{o.CredsFile != "", o.User != "", o.NKeySeedFile != ""} {
		if set {
			creds++
		}
	}
	if creds > 1 {
		return errors.New("cluster: use one of creds_file, user/password and nkey")
	}
	if o.Password != "" && o.User == "" {
		return errors.New("cluster: password without user")
	}
	if (o.ClientCert == "") != (o.ClientKey == "") {
		return errors.New("cluster: tls client_cert and client_key go together")
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
