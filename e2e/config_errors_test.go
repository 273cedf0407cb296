package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `caddy validate`, as an operator runs it: every config error from a
// Caddyfile names its file and line; a literal mistake and a bad value from
// the environment in the error itself, a variable missing from the
// environment in the warning logged beside provision's error (the check
// is then provision's, since `caddy reload` adapts in the operator's shell).
func TestValidateNamesTheLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	for name, c := range map[string]struct {
		caddyfile string
		env       []string
		want      []string
	}{
		"literal": {":8080 {\n\tpostback_filter {\n\t\tallow 203.0.113.500\n\t}\n\trespond OK\n}\n", nil,
			[]string{`allow entry \"203.0.113.500\"`, "Caddyfile:3"}},
		"bad value from env": {":8080 {\n\tpostback_filter {\n\t\tallow {env.PB_E2E_SENDERS}\n\t}\n\trespond OK\n}\n",
			[]string{"PB_E2E_SENDERS=1.2.3.x"}, []string{`allow entry \"1.2.3.x\"`, "Caddyfile:3"}},
		"env unset": {":8080 {\n\tpostback_filter {\n\t\tallow {env.PB_E2E_SENDERS}\n\t}\n\trespond OK\n}\n", nil,
			[]string{`"variables":["PB_E2E_SENDERS"],"file":"` + path + `","line":3`, `expands to nothing`}},
		"item code": {"{\n\tpostback {\n\t\tdestination 1001 {\n\t\t\turl https://127.0.0.1:9/\n\t\t\titem_code éab\n\t\t}\n\t}\n}\n", nil,
			[]string{`item_code \"éab\": must be 4 visible ASCII characters`, "Caddyfile:5"}},
		"clickbank_json with a prefix": {":8080 {\n\titns_verify {\n\t\tformat clickbank_json\n\t\tsecret {env.PB_E2E_SECRET}\n\t\tprefix c\n\t}\n\trespond OK\n}\n",
			[]string{"PB_E2E_SECRET=s"}, []string{`format clickbank_json has no field prefix (\"c\")`, "Caddyfile:5"}},
		"digistore24 with max_age": {":8080 {\n\titns_verify {\n\t\tsecret {env.PB_E2E_SECRET}\n\t\tmax_age 15m\n\t\talgorithm digistore24\n\t}\n\trespond OK\n}\n",
			[]string{"PB_E2E_SECRET=s"}, []string{`algorithm digistore24: max_age cannot be checked`, "Caddyfile:5"}},
		// Two parts of the config that do not go together: no line to name.
		"only_accepted with queue jetstream": {"{\n\tpostback {\n\t\tencryption_key 0000000000000000000000000000000000000000000000000000000000000000\n\t\tcluster {\n\t\t\tnats nats://127.0.0.1:4222\n\t\t\tqueue jetstream\n\t\t}\n\t\tdestination 1001 {\n\t\t\turl https://127.0.0.1:9/\n\t\t}\n\t}\n}\n:8080 {\n\tsecondary_post 1001 {\n\t\tonly_accepted\n\t}\n\trespond OK\n}\n",
			nil, []string{"only_accepted is not available with the cluster's queue jetstream"}},
	} {
		if err := os.WriteFile(path, []byte(c.caddyfile), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(caddyBin, "validate", "--config", path, "--adapter", "caddyfile")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		cmd.Env = append(cmd.Env, c.env...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s: caddy validate succeeded:\n%s", name, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: output lacks %s:\n%s", name, w, out)
			}
		}
	}
}
