package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// SkipOrFail ends a test that cannot run here because something it needs
// is missing: outside CI it skips the test; with CI=true it fails it, so
// that CI can never pass by skipping what it is meant to prove (.ci/run
// installs every tool the tests use).
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s, and CI=true: CI must run this test", msg)
		return
	}
	t.Skip(msg)
}

// NeedTool returns the path of a program the test needs: the first of
// candidates (paths or names; "" is passed over, e.g. an unset
// environment variable) that is an executable, else name on PATH. When
// none is found, SkipOrFail ends the test.
func NeedTool(t testing.TB, name string, candidates ...string) string {
	t.Helper()
	var tried []string
	for _, c := range append(candidates, name) {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
		tried = append(tried, c)
	}
	SkipOrFail(t, "%s not found (looked for %s); install it to run this test", name, strings.Join(tried, ", "))
	return ""
}
