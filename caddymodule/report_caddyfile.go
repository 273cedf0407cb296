package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/postbackedge/caddy-postback/report"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("postback_report", parseReport)
}

func parseReport(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	r := new(Report)
	err := r.UnmarshalCaddyfile(h.Dispenser)
	return r, err
}

// UnmarshalCaddyfile sets up the report page from Caddyfile tokens. Syntax:
//
//	postback_report [<matcher>] {
//		prefix    <path>
//		title     <text>
//		page_size <n>
//	}
//
// A first argument that starts with / is a path matcher, as for every
// handler directive, so the page's path goes in a matcher or a handle_path
// block; `prefix` is only needed to let other requests under the matcher
// through to the next handler. The directive is ordered after the
// authentication directives and before respond; put basic_auth in front:
//
//	route /postback-report* {
//		basic_auth {
//			ops $2a$14$...
//		}
//		postback_report {
//			title "Shop postbacks"
//		}
//	}
func (r *Report) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.Errf("postback_report: unexpected argument %q (a path goes in a matcher, e.g. `postback_report /report*`, or in the prefix option)", d.Val())
	}
	opts := newOptionSet()
	for d.NextBlock(0) {
		if err := opts.once(d); err != nil {
			return err
		}
		switch d.Val() {
		case "prefix":
			if !d.AllArgs(&r.Prefix) {
				return d.ArgErr()
			}
			if !strings.HasPrefix(r.Prefix, "/") {
				return d.Errf("prefix %q must start with /", r.Prefix)
			}
		case "title":
			if !d.AllArgs(&r.Title) {
				return d.ArgErr()
			}
		case "page_size":
			var s string
			if !d.AllArgs(&s) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > report.MaxLimit {
				return d.Errf("page_size %q: want an integer from 1 to %d", s, report.MaxLimit)
			}
			r.PageSize = n
		default:
			return d.Errf("unrecognized postback_report option %q", d.Val())
		}
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Report)(nil)
