package caddymodule

import "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

// Directive order outside a route block. Caddy only allows anchors from its
// standard distribution, so the anchors are chosen to give this order
// whatever the init order of the files:
//
//	postback_filter  (before basic_auth: refuse unknown senders first)
//	basic_auth
//	itns_verify      (after basic_auth)
//	secondary_post   (before forward_auth: copies only what was verified)
//	forward_auth ... respond
//	postback_report  (before respond: after every auth directive)
//
// postback_filter and itns_verify register theirs beside their parsers.
func init() {
	httpcaddyfile.RegisterDirectiveOrder("secondary_post", httpcaddyfile.Before, "forward_auth")
	httpcaddyfile.RegisterDirectiveOrder("postback_report", httpcaddyfile.Before, "respond")
}
