package caddymodule

import (
	"math"
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// positiveIntArg reads exactly one positive integer argument.
func positiveIntArg(d *caddyfile.Dispenser) (int, error) {
	opt := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, d.Errf("%s %q: want a positive integer", opt, s)
	}
	return n, nil
}

// sizeArg reads exactly one size argument ("64KiB", "1MB", "2048") as Caddy's
// request_body does.
func sizeArg(d *caddyfile.Dispenser) (int64, error) {
	opt := d.Val()
	var s string
	if !d.AllArgs(&s) {
		return 0, d.ArgErr()
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, d.Errf("%s %q: %v", opt, s, err)
	}
	if n == 0 || n > math.MaxInt64 {
		return 0, d.Errf("%s %q: must be between 1 byte and %d bytes", opt, s, int64(math.MaxInt64))
	}
	return int64(n), nil
}
