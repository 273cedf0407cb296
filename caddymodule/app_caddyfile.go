package caddymodule

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/postbackedge/caddy-postback/delivery"
	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/notelog"
	"github.com/postbackedge/caddy-postback/storage"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("postback", parseGlobalPostback)
}

func parseGlobalPostback(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("postback already specified")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "postback", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the postback app from the global option:
//
//	postback {
//		storage_dir    <path>
//		encryption_key <64 hex chars | base64>
//		retention      <duration>
//		min_free_space <size>|off
//		redact         <field>...
//		label          <field>...
//		log_refused_per_hour <n>
//		cluster { ... }
//		alert { ... }
//		destination <din> {
//			url            <https://...>
//			method         POST|GET
//			item_code      <4 chars>
//			timeout        <duration>
//			retry_schedule <duration>...
//			concurrency    <n>
//			pgp_key        <path>
//			spool_dir      <path>
//			spool_mode     0600|0640
//			ca_cert        <path>
//			header         <name> <value>
//			breaker        <failures in a row> [<max probe interval>] | off
//			rate           <n>/s|<n>/m
//			sign_secret    <secret>
//			insecure_http
//		}
//	}
//
// redact, label, destination and header are repeatable; other options are not.
// The cluster block is unmarshalCluster's, the alert block unmarshalAlert's.
// Values are checked with the rules provision uses, placeholders known at
// load time resolved, so that an error names its line.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume option name
	if d.NextArg() {
		return d.ArgErr()
	}
	opts := newOptionSet("redact", "label", "destination")
	var clusterTok, labelTok caddyfile.Token
	for d.NextBlock(0) {
		if err := opts.once(d); err != nil {
			return err
		}
		switch d.Val() {
		case "storage_dir":
			if !d.AllArgs(&a.StorageDir) {
				return d.ArgErr()
			}
		case "encryption_key":
			if !d.AllArgs(&a.EncryptionKey) {
				return d.ArgErr()
			}
			if key, ok := atLoad(d.Token(), a.EncryptionKey); ok {
				if _, err := parseKey(key); err != nil {
					return d.Errf("encryption_key: %v", err)
				}
			}
		case "retention":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			a.Retention = dur
		case "min_free_space":
			var arg string
			if !d.AllArgs(&arg) {
				return d.ArgErr()
			}
			if arg == "off" {
				a.MinFreeSpace = -1
				break
			}
			n, err := parseSize(d, "min_free_space", arg)
			if err != nil {
				return err
			}
			a.MinFreeSpace = n
		case "redact":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			a.Redact = append(a.Redact, args...)
		case "label":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			labelTok = d.Token()
			a.Labels = append(a.Labels, args...)
		case "log_refused_per_hour":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < -1 || n == 0 {
				return d.Errf("log_refused_per_hour %q: want a positive number of records, or -1 for none", s)
			}
			a.LogRefusedPerHour = n
		case "destination":
			if !d.NextArg() {
				return d.ArgErr()
			}
			tok, din := d.Token(), d.Val()
			if err := storage.CheckDIN(din); err != nil {
				return d.Errf("destination: %v", err)
			}
			if _, dup := a.Destinations[din]; dup {
				return d.Errf("destination %s already specified", din)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			dest, err := unmarshalDestination(d)
			if err != nil {
				return err
			}
			// The whole block, with the rules provision applies; sign_secret
			// was checked at its own line where it is known at load.
			if _, ok := atLoad(tok, dest.URL); ok {
				check := *dest
				check.SignSecret = ""
				if _, err := check.toDelivery(din, caddy.NewReplacer()); err != nil {
					return errAt(tok, err)
				}
			}
			if a.Destinations == nil {
				a.Destinations = make(map[string]*Destination)
			}
			a.Destinations[din] = dest
		case "cluster":
			tok := d.Token()
			c, err := unmarshalCluster(d)
			if err != nil {
				return err
			}
			a.Cluster, clusterTok = c, tok
		case "alert":
			al, err := unmarshalAlert(d)
			if err != nil {
				return err
			}
			a.Alert = al
		default:
			return d.Errf("unrecognized postback option %q", d.Val())
		}
	}
	// After the loop: redact, which adds sensitive names, may come later.
	if err := notelog.CheckLabels(a.Labels, handlers.NewSensitive(a.Redact...).Match); err != nil {
		return errAt(labelTok, err)
	}
	if a.Cluster != nil && a.EncryptionKey == "" {
		return errAt(clusterTok, errors.New("cluster needs encryption_key: nothing may be in clear on NATS's disks"))
	}
	return nil
}

func unmarshalDestination(d *caddyfile.Dispenser) (*Destination, error) {
	dest := new(Destination)
	opts := newOptionSet("header")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := opts.once(d); err != nil {
			return nil, err
		}
		opt := d.Val()
		switch opt {
		case "url":
			if !d.AllArgs(&dest.URL) {
				return nil, d.ArgErr()
			}
		case "method":
			var m string
			if !d.AllArgs(&m) {
				return nil, d.ArgErr()
			}
			method, err := delivery.ParseMethod(m)
			if err != nil {
				return nil, d.Err(err.Error())
			}
			dest.Method = method
		case "item_code":
			if !d.AllArgs(&dest.ItemCode) {
				return nil, d.ArgErr()
			}
			if err := delivery.CheckItemCode(dest.ItemCode); err != nil {
				return nil, d.Err(err.Error())
			}
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			dest.Timeout = dur
		case "retry_schedule":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			var schedule []time.Duration
			for _, arg := range args {
				dur, err := caddy.ParseDuration(arg)
				if err != nil {
					return nil, d.Errf("retry_schedule: bad delay %q", arg)
				}
				schedule = append(schedule, dur)
				dest.RetrySchedule = append(dest.RetrySchedule, caddy.Duration(dur))
			}
			if err := delivery.CheckSchedule(schedule); err != nil {
				return nil, d.Err(err.Error())
			}
		case "concurrency":
			n, err := positiveIntArg(d)
			if err != nil {
				return nil, err
			}
			dest.Concurrency = n
		case "pgp_key":
			if !d.AllArgs(&dest.PGPKey) {
				return nil, d.ArgErr()
			}
		case "spool_dir":
			if !d.AllArgs(&dest.SpoolDir) {
				return nil, d.ArgErr()
			}
		case "spool_mode":
			var s string
			if !d.AllArgs(&s) {
				return nil, d.ArgErr()
			}
			if _, err := storage.ParseSpoolMode(s); err != nil {
				return nil, d.Err(err.Error())
			}
			dest.SpoolMode = s
		case "ca_cert":
			if !d.AllArgs(&dest.CACert) {
				return nil, d.ArgErr()
			}
		case "header":
			var name, value string
			if !d.AllArgs(&name, &value) {
				return nil, d.ArgErr()
			}
			if dest.Headers == nil {
				dest.Headers = make(http.Header)
			}
			dest.Headers.Add(name, value)
		case "insecure_http":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			dest.InsecureHTTP = true
		case "rate":
			if !d.AllArgs(&dest.Rate) {
				return nil, d.ArgErr()
			}
			if _, err := delivery.ParseRate(dest.Rate); err != nil {
				return nil, d.Err(err.Error())
			}
		case "sign_secret":
			if !d.AllArgs(&dest.SignSecret) {
				return nil, d.ArgErr()
			}
			if v, ok := atLoad(d.Token(), dest.SignSecret); ok {
				if _, err := delivery.SignKey(v); err != nil {
					return nil, d.Err(err.Error())
				}
			}
		case "breaker":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 || (args[0] == "off" && len(args) != 1) {
				return nil, d.ArgErr()
			}
			if args[0] == "off" {
				dest.BreakerThreshold = -1
				break
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return nil, d.Errf("breaker %q: want a number of failed attempts in a row (1 or more) or off", args[0])
			}
			dest.BreakerThreshold = n
			if len(args) == 2 {
				dur, err := caddy.ParseDuration(args[1])
				if err != nil || dur <= 0 {
					return nil, d.Errf("breaker: bad maximum probe interval %q", args[1])
				}
				dest.BreakerMaxProbe = caddy.Duration(dur)
			}
		default:
			return nil, d.Errf("unrecognized destination option %q", opt)
		}
	}
	if dest.URL == "" {
		return nil, d.Err("destination needs a url")
	}
	return dest, nil
}

// durationArg reads exactly one duration argument (Caddy syntax, so "30d"
// works).
func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("bad duration %q: %v", s, err)
	}
	if dur < 0 {
		return 0, d.Errf("duration %q must not be negative", s)
	}
	return caddy.Duration(dur), nil
}

var _ caddyfile.Unmarshaler = (*App)(nil)
