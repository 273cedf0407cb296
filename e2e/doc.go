// Package e2e holds end-to-end tests that drive the built caddy binary the
// way an operator runs it: real processes, kill -9, restarts, real PHP and
// GnuPG. It has no code of its own beyond the tests.
package e2e
