package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
//		format      form|clickbank_json
//		prefix      <prefix>
//		algorithm   sorted|v1|digistore24
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
// Sets up the signature or decryption check of payment notifications; the
// options are documented on the ITNSVerify fields (secret is required), and
// combinations that make no sense (format clickbank_json with a prefix or an
// algorithm, digistore24 with max_age) are refused on the line that makes
// them.
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

		case "format":
			if !d.AllArgs(&v.Format) {
				return d.ArgErr()
			}

		case "prefix":
			if !d.AllArgs(&v.Prefix) {
				return d.ArgErr()
			}

		case "algorithm":
			if !d.AllArgs(&v.Algorithm) {
				return d.ArgErr()
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
		// The option just read is the one that makes a conflict: its line.
		if err := v.verifierConfig().CheckConflicts(); err != nil {
			return d.Errf("itns_verify: %v", err)
		}
	}
	if len(v.Secrets) == 0 {
		return d.Err("itns_verify: at least one secret is required")
	}
	if v.DedupeWait != 0 && v.Dedupe == 0 {
		return d.Err("itns_verify: dedupe_wait without dedupe")
	}
	if err := v.verifierConfig().CheckOptions(); err != nil {
		return d.Errf("itns_verify: %v", err)
	}
	return nil
}
