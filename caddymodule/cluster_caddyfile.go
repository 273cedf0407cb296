package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/postbackedge/caddy-postback/fleet"
)

// unmarshalCluster reads the postback app's cluster block:
//
//	cluster {
//		nats        <url>...
//		node        <name>
//		replicas    <n>
//		queue       badger
//		prefix      <name>
//		creds_file  <path>
//		user        <name>
//		password    <secret>
//		nkey        <seed file>
//		tls {
//			ca_cert     <path>
//			client_cert <path>
//			client_key  <path>
//		}
//	}
//
// nats may be repeated; other options may not.
func unmarshalCluster(d *caddyfile.Dispenser) (*Cluster, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	c := new(Cluster)
	opts := newOptionSet("nats")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := opts.once(d); err != nil {
			return nil, err
		}
		opt := d.Val()
		var err error
		switch opt {
		case "nats":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			for _, s := range args {
				if v, ok := atLoad(d.Token(), s); ok {
					if err := fleet.CheckServer(v); err != nil {
						return nil, d.Err(err.Error())
					}
				}
			}
			c.NATS = append(c.NATS, args...)
		case "node":
			err = oneArg(d, &c.Node, fleet.CheckNode)
		case "prefix":
			err = oneArg(d, &c.Prefix, fleet.CheckPrefix)
		case "queue":
			err = oneArg(d, &c.Queue, checkQueue)
		case "replicas":
			var s string
			if !d.AllArgs(&s) {
				return nil, d.ArgErr()
			}
			n, convErr := strconv.Atoi(s)
			if convErr != nil || n < 1 || n > 5 {
				return nil, d.Errf("replicas %q: want 1 to 5", s)
			}
			c.Replicas = n
		case "creds_file":
			err = oneArg(d, &c.CredsFile, nil)
		case "user":
			err = oneArg(d, &c.User, nil)
		case "password":
			err = oneArg(d, &c.Password, nil)
		case "nkey":
			err = oneArg(d, &c.NKey, nil)
		case "tls":
			c.TLS, err = unmarshalClusterTLS(d)
		default:
			return nil, d.Errf("unrecognized cluster option %q", opt)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(c.NATS) == 0 {
		return nil, d.Err("cluster: at least one nats server is required")
	}
	return c, nil
}

func unmarshalClusterTLS(d *caddyfile.Dispenser) (*ClusterTLS, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	t := new(ClusterTLS)
	opts := newOptionSet()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := opts.once(d); err != nil {
			return nil, err
		}
		var err error
		switch d.Val() {
		case "ca_cert":
			err = oneArg(d, &t.CACert, nil)
		case "client_cert":
			err = oneArg(d, &t.ClientCert, nil)
		case "client_key":
			err = oneArg(d, &t.ClientKey, nil)
		default:
			return nil, d.Errf("unrecognized cluster tls option %q", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	return t, nil
}

// oneArg reads exactly one argument into dst and, when check is set and
// the value is known at load, checks it there so the error names the line.
func oneArg(d *caddyfile.Dispenser, dst *string, check func(string) error) error {
	if !d.AllArgs(dst) {
		return d.ArgErr()
	}
	if check != nil {
		if v, ok := atLoad(d.Token(), *dst); ok {
			if err := check(v); err != nil {
				return d.Err(err.Error())
			}
		}
	}
	return nil
}
