package caddymodule

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/postbackedge/caddy-postback/handlers"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("postback_filter", parsePostbackFilter)
	// Before basic_auth: refuse wrong senders before anything else looks at
	// the request, and let the directive be used outside a route block.
	httpcaddyfile.RegisterDirectiveOrder("postback_filter", httpcaddyfile.Before, "basic_auth")
}

func parsePostbackFilter(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	f := new(PostbackFilter)
	if err := f.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return f, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	postback_filter [<matcher>] {
//		methods     <method>...
//		allow       <ip|cidr>...
//		max_body    <size>
//		max_fields  <n>
//		deny_status <code>
//		deny_body   <text>
//	}
//
// Options, all optional:
//
//   - methods: request methods let through (default POST); repeatable.
//     HEAD and OPTIONS pass only when listed. Others get 405 with Allow.
//   - allow: sender addresses or CIDR networks, IPv4 or IPv6; repeatable.
//     Placeholders known at load time ({env.NATS_SENDERS}) may expand to
//     several entries separated by spaces or commas; expanding to nothing
//     is an error. Without allow every
//     sender is let through (and a warning is logged). Refused: 403.
//   - max_body: largest body, e.g. 64KiB or 1MB (default 1MiB). Larger: 413.
//   - max_fields: most fields in a form body or GET query (default 1000,
//     PHP's max_input_vars, past which PHP silently drops fields). More: 400.
//   - deny_status, deny_body: the response for a refused request;
//     placeholders such as {postback.deny_reason} allowed; \n in deny_body
//     is a newline. Without them a refusal is a handler error, for
//     handle_errors.
//
// Values are checked here as provision checks them, placeholders known at
// load time resolved, so that a mistake is reported with its Caddyfile line.
func (f *PostbackFilter) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	opts := newOptionSet("methods", "allow")
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := opts.once(d); err != nil {
			return err
		}
		if ok, err := f.DenyResponse.unmarshalDenyOption(d); ok {
			if err != nil {
				return err
			}
			// Checked now so that the error points at this line.
			if err := f.DenyResponse.validate(); err != nil {
				return d.Err(err.Error())
			}
			continue
		}
		switch d.Val() {
		case "methods":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, m := range args {
				if _, err := handlers.ParseMethods([]string{m}); err != nil {
					return d.Errf("methods: %v", err)
				}
			}
			f.Methods = append(f.Methods, args...)

		case "allow":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			// Checked as provision will, {env.*} resolved, so that a
			// mistake or an unset variable names its line.
			for _, a := range args {
				if _, ok := atLoad(d.Token(), a); !ok {
					continue // checked at provision
				}
				entries, err := expandAllowEntries(caddy.NewReplacer(), []string{a})
				if err == nil {
					_, err = handlers.ParseAllowlist(entries)
				}
				if err != nil {
					return d.Err(err.Error())
				}
			}
			f.Allow = append(f.Allow, args...)

		case "max_body":
			n, err := sizeArg(d)
			if err != nil {
				return err
			}
			f.MaxBody = n

		case "max_fields":
			n, err := positiveIntArg(d)
			if err != nil {
				return err
			}
			f.MaxFields = n

		default:
			return d.Errf("unrecognized postback_filter option %q", d.Val())
		}
	}
	return nil
}
