package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/postbackedge/caddy-postback/storage"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("secondary_post", parseSecondaryPost)
}

func parseSecondaryPost(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(SecondaryPost)
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return s, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	secondary_post [<din>...] {
//		din     <din>...
//		din_field <field name>
//		max_body  <size>
//		only_accepted
//	}
//
// DINs must be configured as destinations in the postback global option.
func (s *SecondaryPost) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	for d.NextArg() {
		if err := storage.CheckDIN(d.Val()); err != nil {
			return d.Err(err.Error())
		}
		s.DINs = append(s.DINs, d.Val())
	}
	opts := newOptionSet("din")
	for d.NextBlock(0) {
		if err := opts.once(d); err != nil {
			return err
		}
		switch d.Val() {
		case "din":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, din := range args {
				if err := storage.CheckDIN(din); err != nil {
					return d.Err(err.Error())
				}
			}
			s.DINs = append(s.DINs, args...)
		case "din_field":
			if !d.AllArgs(&s.DINField) {
				return d.ArgErr()
			}
		case "only_accepted":
			if d.NextArg() {
				return d.Errf("only_accepted takes no argument, got %q", d.Val())
			}
			s.OnlyAccepted = true
		case "max_body":
			n, err := sizeArg(d)
			if err != nil {
				return err
			}
			s.MaxBody = n
		default:
			return d.Errf("unrecognized secondary_post option %q", d.Val())
		}
	}
	if len(s.DINs) == 0 && s.DINField == "" {
		return d.Err("secondary_post needs at least one DIN or a din_field")
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*SecondaryPost)(nil)
