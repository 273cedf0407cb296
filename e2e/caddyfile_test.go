package e2e

import (
	"fmt"
	"strings"
)

// caddyfile is the Caddyfile of an edge under test. Every edge has the
// same global options (the admin API on {admin}, which startCaddy fills in;
// loopback only; no persisted config) and a postback app with a store; a
// test states the rest.
type caddyfile struct {
	global   string        // more global options, e.g. servers { timeouts { … } }
	store    string        // the postback app's storage_dir
	postback string        // more postback options: encryption_key, redact …
	dests    []destination // the postback app's destinations
	sites    []site
}

// destination is one `destination <din> { … }` of the postback app: url,
// ca_cert (none when ca is "") and opts, more options one a line.
type destination struct {
	din, url, ca, opts string
}

// site is http://127.0.0.1:<port>: `root * <root>` when root is set (the
// legacy scripts), then body, its routes and handlers.
type site struct {
	port       int
	root, body string
}

// String renders c as caddy fmt would format it. Options and bodies are
// written without indentation of their own (but for their nested blocks);
// String indents them.
func (c caddyfile) String() string {
	var b strings.Builder
	b.WriteString("{\n\tadmin {admin}\n\tdefault_bind 127.0.0.1\n\tpersist_config off\n")
	b.WriteString(indented(1, c.global))
	b.WriteString("\tpostback {\n")
	b.WriteString(indented(2, "storage_dir "+c.store))
	b.WriteString(indented(2, c.postback))
	for _, d := range c.dests {
		fmt.Fprintf(&b, "\t\tdestination %s {\n", d.din)
		b.WriteString(indented(3, "url "+d.url))
		if d.ca != "" {
			b.WriteString(indented(3, "ca_cert "+d.ca))
		}
		b.WriteString(indented(3, d.opts))
		b.WriteString("\t\t}\n")
	}
	b.WriteString("\t}\n}\n")
	for _, s := range c.sites {
		fmt.Fprintf(&b, "\nhttp://127.0.0.1:%d {\n", s.port)
		if s.root != "" {
			b.WriteString(indented(1, "root * "+s.root))
		}
		b.WriteString(indented(1, s.body))
		b.WriteString("}\n")
	}
	return b.String()
}

// itnsRoute is /itns.php behind the whole edge: postback_filter with
// filter, itns_verify with the secret E2E_ITNS_SECRET, a max_age of 15m
// and verify (more options), secondary_post to dins, then the script at
// the FastCGI address php.
func itnsRoute(filter, verify, dins, php string) string {
	return fmt.Sprintf("route /itns.php {\n\tpostback_filter {\n%s\t}\n\titns_verify {\n\t\tsecret {env.E2E_ITNS_SECRET}\n\t\tmax_age 15m\n%s\t}\n\tsecondary_post %s\n\tphp_fastcgi %s\n}",
		indented(2, filter), indented(2, verify), dins, php)
}

// indented is text (its blank lines at either end dropped) with depth tabs
// before every line, each line ended by a newline; a line that continues a
// quoted string keeps its text as it is.
func indented(depth int, text string) string {
	text = strings.Trim(text, "\n")
	if text == "" {
		return ""
	}
	var b strings.Builder
	quoted := false
	for _, line := range strings.Split(text, "\n") {
		if !quoted && line != "" {
			b.WriteString(strings.Repeat("\t", depth))
		}
		b.WriteString(line)
		b.WriteByte('\n')
		for i := 0; i < len(line); i++ {
			if line[i] == '\\' {
				i++
			} else if line[i] == '"' {
				quoted = !quoted
			}
		}
	}
	return b.String()
}
