// Package testutil holds the helpers the tests of every package share:
// waiting for a condition, a loopback address that refuses connections, a
// log buffer, HTTPS servers with a CA file to trust them by, a throw-away
// GnuPG, and finding the tools a test needs.
//
// It is imported by tests only. It must not import Caddy (only caddymodule
// may), so that any package's tests can use it.
package testutil
