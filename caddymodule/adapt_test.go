package caddymodule

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// adaptDir holds golden Caddyfile adaptations, in the format of Caddy's own
// caddytest/integration/caddyfile_adapt: the Caddyfile, a line of ten
// dashes, then either the expected JSON or, when that part does not start
// with "{", a substring of the expected adapt error.
const adaptDir = "testdata/caddyfile_adapt"

func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(adaptDir, "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no *.caddyfiletest files in %s", adaptDir)
	}
	// {env.*} is resolved when a Caddyfile is adapted, to check the value
	// (TestCaddyfileChecksEnvAtAdapt); the golden files' variables are set.
	t.Setenv("ITNS_SECRET", "golden-secret")
	t.Setenv("ITNS_SENDERS", "203.0.113.10 198.51.100.0/24")
	crlf := regexp.MustCompile(`\r?\n`)
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(strings.TrimSuffix(name, ".caddyfiletest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(crlf.ReplaceAllString(string(data), "\n"), "----------")
			if len(parts) != 2 {
				t.Fatalf("%s: want one ---------- separator, found %d", name, len(parts)-1)
			}
			// The adapter warns about an unformatted Caddyfile; the trailing
			// newline is part of the formatted form.
			caddyfile, expected := strings.TrimSpace(parts[0])+"\n", strings.TrimSpace(parts[1])

			if strings.HasPrefix(expected, "{") {
				if !caddytest.CompareAdapt(t, name, caddyfile, "caddyfile", expected) {
					t.Errorf("%s: adapted JSON differs from the expected (diff on stdout)", name)
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err == nil {
				t.Fatalf("%s: adapted without error, want one containing %q", name, expected)
			}
			if !strings.Contains(err.Error(), expected) {
				t.Errorf("%s: error\n%s\ndoes not contain\n%s", name, err, expected)
			}
		})
	}
}
