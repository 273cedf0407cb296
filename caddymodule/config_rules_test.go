package caddymodule

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

func adaptCaddyfile(cfg string) error {
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
	return err
}

// A value from an {env.*} placeholder is checked when the Caddyfile is
// adapted, as a literal is: an empty or bad value names the line, instead
// of failing at provision without it. A variable not set where the
// Caddyfile is adapted is left to provision (`caddy reload` adapts in the
// operator's shell), with a warning that names the line.
func TestCaddyfileChecksEnvAtAdapt(t *testing.T) {
	t.Setenv("PB_TEST_EMPTY", "")
	t.Setenv("PB_TEST_BAD_IP", "203.0.113.500")
	t.Setenv("PB_TEST_HTTP_URL", "http://partner.example/collect")
	for name, c := range map[string]struct{ cfg, want string }{
		"allow expands to nothing": {":8080 {\n\tpostback_filter {\n\t\tallow {env.PB_TEST_EMPTY}\n\t}\n}\n",
			`allow entry "{env.PB_TEST_EMPTY}": expands to nothing`},
		"allow bad address": {":8080 {\n\tpostback_filter {\n\t\tallow 203.0.113.1 {env.PB_TEST_BAD_IP}\n\t}\n}\n",
			`allow entry "{env.PB_TEST_BAD_IP}"`},
		"secret empty": {":8080 {\n\titns_verify {\n\t\tsecret {env.PB_TEST_EMPTY}\n\t}\n}\n",
			"secret: {env.PB_TEST_EMPTY}: placeholder not known at load time or empty"},
		"encryption key empty": {"{\n\tpostback {\n\t\tencryption_key {env.PB_TEST_EMPTY}\n\t}\n}\n",
			"encryption_key: empty"},
		"destination url from env": {"{\n\tpostback {\n\t\tdestination 1001 {\n\t\t\turl {env.PB_TEST_HTTP_URL}\n\t\t}\n\t}\n}\n",
			"destination 1001: url http://partner.example/collect: destinations must use https://"},
	} {
		err := adaptCaddyfile(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "Caddyfile:3") {
			t.Errorf("%s: error %v, want %q at Caddyfile:3", name, err, c.want)
		}
	}
	// Left to provision: {file.*}, read at provision like every file a
	// config names, and variables this process does not have.
	for _, cfg := range []string{
		":8080 {\n\titns_verify {\n\t\tsecret {file./nonexistent/itns.secret}\n\t}\n}\n",
		":8080 {\n\titns_verify {\n\t\tsecret {env.PB_TEST_UNSET}\n\t}\n}\n",
		":8080 {\n\tpostback_filter {\n\t\tallow {env.PB_TEST_UNSET}\n\t}\n}\n",
		"{\n\tpostback {\n\t\tencryption_key {env.PB_TEST_UNSET}\n\t}\n}\n",
	} {
		if err := adaptCaddyfile(cfg); err != nil {
			t.Errorf("%q failed to adapt: %v", cfg, err)
		}
	}
}

// The rules a destination must meet are delivery's, applied to the JSON at
// provision as to the Caddyfile at adapt: the same destination is accepted
// or refused by both, so a running edge never holds a DIN it will not
// deliver (a 4-byte item code used to pass `caddy validate`, then be
// dropped at start while secondary_post kept enqueueing to it).
func TestDestinationRulesAgreeBetweenJSONAndCaddyfile(t *testing.T) {
	for name, c := range map[string]struct {
		caddyfileOpt string
		json         Destination
		want         string // "" means accepted
	}{
		"item code not ASCII": {"item_code éab", Destination{ItemCode: "éab"}, `item_code "éab"`},
		"item code":           {"item_code AB12", Destination{ItemCode: "AB12"}, ""},
		"method lower case":   {"method post", Destination{Method: "post"}, ""},
		"method PUT":          {"method PUT", Destination{Method: "PUT"}, `method "PUT"`},
	} {
		cfg := "{\n\tpostback {\n\t\tdestination 1001 {\n\t\t\turl https://partner.example/collect\n\t\t\t" + c.caddyfileOpt + "\n\t\t}\n\t}\n}\n"
		adaptErr := adaptCaddyfile(cfg)
		c.json.URL = "https://partner.example/collect"
		app := &App{StorageDir: t.TempDir(), Destinations: map[string]*Destination{"1001": &c.json}}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		provErr := app.Provision(ctx)
		cancel()
		if c.want == "" {
			if adaptErr != nil || provErr != nil {
				t.Errorf("%s: adapt %v, provision %v; want both accepted", name, adaptErr, provErr)
			}
			continue
		}
		if adaptErr == nil || !strings.Contains(adaptErr.Error(), c.want) || !strings.Contains(adaptErr.Error(), "Caddyfile:5") {
			t.Errorf("%s: adapt error %v, want %q at Caddyfile:5", name, adaptErr, c.want)
		}
		if provErr == nil || !strings.Contains(provErr.Error(), c.want) {
			t.Errorf("%s: provision error %v, want %q", name, provErr, c.want)
		}
	}
}
