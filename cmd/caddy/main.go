// Command caddy is the binary xcaddy would build with caddy-postback plugged in,
// so that `go build ./cmd/caddy` gives the same result without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/postbackedge/caddy-postback"
)

func main() {
	caddycmd.Main()
}
