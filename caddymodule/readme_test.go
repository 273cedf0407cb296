package caddymodule

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestREADMECaddyfiles keeps the README's Caddyfile examples copy-pasteable:
// every ```caddyfile fence of ../README.md (also one indented inside a list)
// must be exactly what `caddy fmt` makes of it (caddyfile.Format), and every
// block that is a whole Caddyfile must adapt without error.
//
// A block is a whole Caddyfile when its first line that is neither blank nor
// a comment is "{" (the global options) or starts with a site address: a
// first token that holds "." or ":" or is "localhost" (no directive name
// has either). Every other block is a fragment (a directive's syntax, a lone
// destination or log block) and is only format-checked. Placeholders such as
// {env.X} stay placeholders and files named in a block need not exist:
// adapting reads neither.
//
// Caddyfile.example, the demo's whole Caddyfile, is checked the same way.
func TestREADMECaddyfiles(t *testing.T) {
	blocks := readmeCaddyfiles(t, "../README.md")
	if len(blocks) == 0 {
		t.Fatal("no ```caddyfile block found in ../README.md")
	}
	example, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	blocks = append(blocks, caddyfileBlock{file: "../Caddyfile.example", line: 1, text: string(example)})

	whole := 0
	for _, b := range blocks {
		if line, ok := firstFormatDifference(b.text); !ok {
			got := strings.Split(string(caddyfile.Format([]byte(b.text))), "\n")
			want := ""
			if line-1 < len(got) {
				want = got[line-1]
			}
			t.Errorf("%s:%d: not as `caddy fmt` leaves it; that line would be %q", b.file, b.line+line-1, want)
		}
		if !isWholeCaddyfile(b.text) {
			continue
		}
		whole++
		if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(b.text), nil); err != nil {
			t.Errorf("%s:%d: the block does not adapt: %v", b.file, b.line, err)
		}
	}
	t.Logf("%d Caddyfile blocks, %d of them whole Caddyfiles that adapt", len(blocks), whole)
}

type caddyfileBlock struct {
	file string
	line int // of the block's first line (after the fence)
	text string
}

var fenceOpen = regexp.MustCompile("^([ \t]*)```caddyfile[ \t]*$")

// readmeCaddyfiles returns the ```caddyfile blocks of a Markdown file, with
// the fence's indentation taken off every line.
func readmeCaddyfiles(t *testing.T, path string) []caddyfileBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		blocks []caddyfileBlock
		cur    *caddyfileBlock
		indent string
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if cur == nil {
			if m := fenceOpen.FindStringSubmatch(line); m != nil {
				cur, indent = &caddyfileBlock{file: path, line: n + 1}, m[1]
			}
			continue
		}
		if strings.TrimSpace(line) == "```" {
			blocks = append(blocks, *cur)
			cur = nil
			continue
		}
		cur.text += strings.TrimPrefix(line, indent) + "\n"
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s:%d: ```caddyfile block never closed", path, cur.line-1)
	}
	return blocks
}

// firstFormatDifference compares text with its formatted form and returns
// the first line (from 1) where they differ.
func firstFormatDifference(text string) (int, bool) {
	formatted := strings.TrimSuffix(string(caddyfile.Format([]byte(text))), "\n")
	if formatted == strings.TrimSuffix(text, "\n") {
		return 0, true
	}
	got, want := strings.Split(strings.TrimSuffix(text, "\n"), "\n"), strings.Split(formatted, "\n")
	for i := range got {
		if i >= len(want) || got[i] != want[i] {
			return i + 1, false
		}
	}
	return len(got) + 1, false
}

func isWholeCaddyfile(text string) bool {
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if line == "{" {
			return true
		}
		first := strings.Fields(line)[0]
		return strings.ContainsAny(first, ".:") || first == "localhost"
	}
	return false
}

func TestREADMEWholeCaddyfileRule(t *testing.T) {
	for text, want := range map[string]bool{
		"{\n\tpostback\n}\n":                               true,
		"# a comment\nshop.example.com {\n}\n":             true,
		"http://127.0.0.1:8080 {\n}\n":                     true,
		":8080 {\n}\n":                                     true,
		"localhost {\n}\n":                                 true,
		"postback_filter [<matcher>] {\n}\n":               false,
		"destination 1001 {\n\turl https://a.example\n}\n": false,
		"handle_path /ops/report* {\n}\n":                  false,
	} {
		if got := isWholeCaddyfile(text); got != want {
			t.Errorf("isWholeCaddyfile(%q) = %v, want %v", text, got, want)
		}
	}
}
