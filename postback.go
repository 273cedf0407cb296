// Package postback plugs the caddy-postback modules into Caddy:
//
//	xcaddy build --with github.com/postbackedge/caddy-postback
package postback

import (
	// The modules register themselves in their init functions.
	_ "github.com/postbackedge/caddy-postback/caddymodule"
)
