package caddymodule

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
	"go.uber.org/zap"
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
	return parseSize(d, opt, s)
}

// parseSize reads s, the argument of option opt, as a size.
func parseSize(d *caddyfile.Dispenser, opt, s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, d.Errf("%s %q: want a size such as 64KiB, 256MiB or 2048", opt, s)
	}
	if n == 0 || n > math.MaxInt64 {
		return 0, d.Errf("%s %q: must be between 1 byte and %d bytes", opt, s, int64(math.MaxInt64))
	}
	return int64(n), nil
}

// optionSet makes every block refuse a repeated option the same way; the
// options named repeatable may be given more than once.
type optionSet struct {
	seen       map[string]bool
	repeatable []string
}

func newOptionSet(repeatable ...string) *optionSet {
	return &optionSet{seen: map[string]bool{}, repeatable: repeatable}
}

// once checks the option at the dispenser's cursor.
func (o *optionSet) once(d *caddyfile.Dispenser) error {
	opt := d.Val()
	if slices.Contains(o.repeatable, opt) {
		return nil
	}
	if o.seen[opt] {
		return d.Errf("%s already specified", opt)
	}
	o.seen[opt] = true
	return nil
}

// errAt attaches tok's file and line to err, as the dispenser's Errf does
// for the token at its cursor.
func errAt(tok caddyfile.Token, err error) error {
	return fmt.Errorf("%w, at %s:%d", err, tok.File, tok.Line)
}

// atLoad resolves the {env.*} placeholders of v, read at the token tok, as
// provision will, so that a Caddyfile adapter can check the value and name
// its line when it is wrong (as Caddy's own {$VAR} is resolved when the
// Caddyfile is adapted; the JSON keeps the placeholder, so a secret stays
// out of it). ok is false, and the check is provision's, when v holds other
// placeholders ({file.*} is read at provision, like every file a config
// names; per-request ones are never known here) or a variable that is not
// set: `caddy reload` adapts in the operator's shell, which need not have
// the server's environment. An unset variable is logged with its line, so
// that if the server lacks it too, the line is beside provision's error.
func atLoad(tok caddyfile.Token, v string) (resolved string, ok bool) {
	if !strings.Contains(v, "{") {
		return v, true
	}
	var unset []string
	repl := caddy.NewEmptyReplacer()
	repl.Map(func(key string) (any, bool) {
		name, isEnv := strings.CutPrefix(key, "env.")
		if !isEnv {
			return nil, false
		}
		val, set := os.LookupEnv(name)
		if !set {
			unset = append(unset, name)
			return nil, false
		}
		return val, true
	})
	resolved = repl.ReplaceKnown(v, "")
	if len(unset) > 0 {
		caddy.Log().Named("caddyfile").Warn("environment variable not set where the Caddyfile is adapted; Caddy checks it when it loads the config",
			zap.Strings("variables", unset), zap.String("file", tok.File), zap.Int("line", tok.Line))
		return "", false
	}
	return resolved, !strings.ContainsAny(resolved, "{}")
}
