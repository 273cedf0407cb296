package postback

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// xcaddyManifest is the shape of xcaddy's Builder that xcaddy.json follows.
type xcaddyManifest struct {
	CaddyVersion string `json:"caddy_version"`
	Plugins      []struct {
		ModulePath string `json:"module_path"`
		Version    string `json:"version"`
	} `json:"plugins"`
	Replacements []struct {
		Old string `json:"old"`
		New string `json:"new"`
	} `json:"replacements"`
}

// goModRequire returns the module path and the version go.mod requires for dep.
func goModRequire(t *testing.T, dep string) (module, version string) {
	t.Helper()
	f, err := os.Open("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == "module" {
			module = fields[1]
		}
		if len(fields) >= 2 && fields[0] == dep {
			version = fields[1]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return module, version
}

// TestXcaddyManifestMatchesGoMod keeps xcaddy.json, which xcaddy itself does
// not read, consistent with the build that go.mod describes.
func TestXcaddyManifestMatchesGoMod(t *testing.T) {
	data, err := os.ReadFile("xcaddy.json")
	if err != nil {
		t.Fatal(err)
	}
	var m xcaddyManifest
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("xcaddy.json: %v", err)
	}
	module, caddyVersion := goModRequire(t, "github.com/caddyserver/caddy/v2")
	if caddyVersion == "" {
		t.Fatal("go.mod does not require github.com/caddyserver/caddy/v2")
	}
	if m.CaddyVersion != caddyVersion {
		t.Errorf("xcaddy.json caddy_version = %q, go.mod requires caddy %s", m.CaddyVersion, caddyVersion)
	}
	if len(m.Plugins) != 1 || m.Plugins[0].ModulePath != module {
		t.Errorf("xcaddy.json plugins = %+v, want exactly this module %s", m.Plugins, module)
	}
	for _, r := range m.Replacements {
		if r.Old != module || r.New != "." {
			t.Errorf("xcaddy.json replacement %+v: only %s => . (this checkout) is expected", r, module)
		}
	}
}

// TestMainImportsPlugin checks cmd/caddy is what xcaddy would generate:
// Caddy's main, the standard modules, and this module.
func TestMainImportsPlugin(t *testing.T) {
	src, err := os.ReadFile("cmd/caddy/main.go")
	if err != nil {
		t.Fatal(err)
	}
	module, _ := goModRequire(t, "")
	for _, imp := range []string{`caddycmd "github.com/caddyserver/caddy/v2/cmd"`,
		`_ "github.com/caddyserver/caddy/v2/modules/standard"`, `_ "` + module + `"`} {
		if !strings.Contains(string(src), imp) {
			t.Errorf("cmd/caddy/main.go lacks import %s", imp)
		}
	}
}
