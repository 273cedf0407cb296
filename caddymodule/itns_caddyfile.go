package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/postbackedge/caddy-postback/handlers"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("itns_verify", parseITNSVerify)
	// RegisterDirectiveOrder only accepts standard directives as anchors
	// (it panics on postback_filter). postback_filter sits Before
	// basic_auth, so After basic_auth puts itns_verify behind it whatever
	// the init order: the sender is checked before the signature.
	httpcaddyfile.RegisterDirectiveOrder("itns_verify", httpcaddyfile.After, "basic_auth")
}

func parseITNSVerify(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	v := new(ITNSVerify)
	if err := v.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return v, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	itns_verify [<matcher>] {
//		secret      <value>...
//		prefix      <prefix>
//		algorithm   sorted|v1
//		max_age     <duration>
//		future_skew <duration>
//		dedupe      <window>
//		dedupe_wait <duration>
//		max_body    <size>
//		max_fields  <n>
//		deny_status <code>
//		deny_body   <text>
//	}
//
// Options (secret is required):
//
//   - secret: required, repeatable; any one matching is valid (rotation).
//     Use {env.ITNS_SECRET} or {file./etc/caddy/itns.secret}: placeholders
//     stay in the JSON config and are resolved at load time ({$ITNS_SECRET}
//     would be expanded into the config, visible through the admin API).
//   - prefix: field-name prefix, "" by default, c for ClickBank.
//   - algorithm: sorted (default, ClickBank 2.x/4.0 and AffiliCon) or v1
//     (ClickBank 1.0 fixed field list).
//   - max_age: refuse a notification whose <prefix>transtime is older, more
//     than future_skew (default 2m) ahead, missing or not a number.
//   - dedupe: answer a replay of an accepted notification within this window
//     from the first response; needs the postback app (global option).
//     dedupe_wait bounds the wait for a first copy still in flight
//     (default 10s), after which the replay gets 503 and Retry-After.
//   - max_body: largest body, e.g. 64KiB (default 1MiB). Larger: 413.
//   - max_fields: most fields (default 1000, PHP's max_input_vars). More: 400.
//   - deny_status, deny_body: the response for a refusal, as in
//     postback_filter; without them a refusal is a handler error (403 for
//     signature and time, 400 for a malformed body) for handle_errors.
func (v *ITNSVerify) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	opts := newOptionSet("secret")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := opts.once(d); err != nil {
			return err
		}
		if ok, err := v.DenyResponse.unmarshalDenyOption(d); ok {
			if err != nil {
				return err
			}
			if err := v.DenyResponse.validate(); err != nil {
				return d.Err(err.Error())
			}
			continue
		}
		opt := d.Val()
		switch opt {
		case "secret":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				if a == "" {
					return d.Err("secret: empty value")
				}
			}
			// An unset variable names this line; the message never shows
			// a secret's value.
			for _, a := range args {
				if _, ok := atLoad(d.Token(), a); !ok {
					continue // checked at provision
				}
				if _, err := resolveSecret(caddy.NewReplacer(), a); err != nil {
					return d.Errf("secret: %v", err)
				}
			}
			v.Secrets = append(v.Secrets, args...)

		case "prefix":
			if !d.AllArgs(&v.Prefix) {
				return d.ArgErr()
			}
			if err := handlers.ValidPrefix(v.Prefix); err != nil {
				return d.Err(err.Error())
			}

		case "algorithm":
			if !d.AllArgs(&v.Algorithm) {
				return d.ArgErr()
			}
			if _, err := handlers.ParseAlgorithm(v.Algorithm); err != nil {
				return d.Err(err.Error())
			}

		case "max_age", "future_skew", "dedupe", "dedupe_wait":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(s)
			if err != nil {
				return d.Errf("%s %q: %v", opt, s, err)
			}
			if dur <= 0 {
				return d.Errf("%s %q: must be positive", opt, s)
			}
			switch opt {
			case "max_age":
				v.MaxAge = caddy.Duration(dur)
			case "future_skew":
				v.FutureSkew = caddy.Duration(dur)
			case "dedupe":
				v.Dedupe = caddy.Duration(dur)
			case "dedupe_wait":
				v.DedupeWait = caddy.Duration(dur)
			}

		case "max_body":
			n, err := sizeArg(d)
			if err != nil {
				return err
			}
			v.MaxBody = n

		case "max_fields":
			n, err := positiveIntArg(d)
			if err != nil {
				return err
			}
			v.MaxFields = n

		default:
			return d.Errf("unrecognized itns_verify option %q", opt)
		}
	}
	if len(v.Secrets) == 0 {
		return d.Err("itns_verify: at least one secret is required")
	}
	if v.DedupeWait != 0 && v.Dedupe == 0 {
		return d.Err("itns_verify: dedupe_wait without dedupe")
	}
	if v.FutureSkew != 0 && v.MaxAge == 0 {
		return d.Err("itns_verify: future_skew without max_age")
	}
	return nil
}
