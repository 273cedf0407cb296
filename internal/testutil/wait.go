package testutil

import (
	"testing"
	"time"
)

// The poll interval of WaitFor starts short, so that a test sees a
// condition soon after it holds, and grows to pollMax, so that a long wait
// (a condition that asks the admin API or scrapes metrics) does not load a
// busy machine.
const (
	pollMin = 5 * time.Millisecond
	pollMax = 50 * time.Millisecond
)

// WaitFor polls cond until it holds, and fails t (naming what it waited for
// and how long) when it still does not after timeout. cond runs on the
// test's goroutine, so it may call t.Fatal itself.
//
// A timeout must be generous: the tests run on loaded machines, and a
// timeout that is only just long enough is a flaky test.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	interval := pollMin
	for !cond() {
		elapsed := time.Since(start)
		if elapsed >= timeout {
			t.Fatalf("timed out waiting for %s: not so after %s (timeout %s)", what, elapsed.Round(time.Millisecond), timeout)
			return
		}
		time.Sleep(min(interval, timeout-elapsed))
		interval = min(2*interval, pollMax)
	}
}
