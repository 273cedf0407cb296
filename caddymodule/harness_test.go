package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// The caddytest package runs one in-process Caddy per test binary on a fixed
// admin port. POSTBACK_TEST_ADMIN_PORT and POSTBACK_TEST_PORT_BASE let two
// test binaries run side by side without colliding.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func testAdminPort() int { return envInt("POSTBACK_TEST_ADMIN_PORT", 2999) }

// testPort returns the n-th loopback port reserved for this test binary.
func testPort(n int) int { return envInt("POSTBACK_TEST_PORT_BASE", 9300) + n }

// testURL is http://127.0.0.1:<testPort(n)><path>.
func testURL(n int, path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", testPort(n), path)
}

// globalOptions binds everything to loopback and turns off what a test must
// not touch (ACME, the system trust store).
func globalOptions(extra string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	default_bind 127.0.0.1
	http_port %d
	https_port %d
	skip_install_trust
	local_certs
	persist_config off
	storage file_system %s
	%s
}
`, testAdminPort(), testPort(90), testPort(91), testStorageDir(), extra)
}

// testRoot holds every folder the in-process Caddy writes to. It is removed
// after all tests: a folder removed at the end of one test may still be open
// in Caddy until the next test loads its config.
var testRoot string

func TestMain(m *testing.M) {
	var err error
	if testRoot, err = os.MkdirTemp("", "postback-caddytest-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(testRoot)
	os.Exit(code)
}

func testStorageDir() string { return filepath.Join(testRoot, "caddy-storage") }

// testDir makes a fresh folder under testRoot for one test.
func testDir(t *testing.T, name string) string {
	t.Helper()
	d, err := os.MkdirTemp(testRoot, name+"-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// expandPorts replaces {port0}..{port9} in a test Caddyfile.
func expandPorts(s string) string {
	for i := 0; i < 10; i++ {
		s = strings.ReplaceAll(s, fmt.Sprintf("{port%d}", i), strconv.Itoa(testPort(i)))
	}
	return s
}

// newTester loads a Caddyfile (global options added, {portN} expanded) into
// the test Caddy.
func newTester(t *testing.T, globalExtra, sites string) *caddytest.Tester {
	t.Helper()
	tc := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: testAdminPort()})
	tc.InitServer(expandPorts(globalOptions(globalExtra)+sites), "caddyfile")
	// A reload starts the new servers, then shuts the old ones down in the
	// background; until they are gone, an old server sharing a listener may
	// still accept a connection and drop it (the client sees EOF). Let them go.
	time.Sleep(reloadSettle)
	return tc
}

// reloadSettle is how long newTester waits after a config load.
const reloadSettle = 250 * time.Millisecond
