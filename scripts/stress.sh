#!/usr/bin/env bash
# make stress: the tests that wait for something, run many times while busy
# loops take the CPUs. A wait that only passes on an idle machine (a sleep
# instead of a condition, a deadline too tight for a loaded CI) fails here
# rather than later, at random, in someone else's CI run.
#
# Settings, from the environment (or `make stress VAR=...`):
#   STRESS_COUNT  how many times each test runs (go test -count); default 30
#   STRESS_PKGS   the packages, space-separated; default below
#   STRESS_RUN    a go test -run regexp; default: every test of the packages
#   STRESS_FLAGS  more go test flags, e.g. -short or -v
#   STRESS_LOAD   how many busy loops; default 3 (on this project's 2 cores)
#   STRESS_TIMEOUT  go test -timeout; default 4h
# The exit status is go test's.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BIN=${BIN:-./caddy}
STRESS_COUNT=${STRESS_COUNT:-30}
# The packages whose tests wait for a worker, a timer, a process or a port.
# ./e2e is left out of the default: one -count=1 run of it takes minutes
# under load (see CONTRIBUTING.md); name it when an e2e wait changed.
STRESS_PKGS=${STRESS_PKGS:-./delivery ./caddymodule ./storage ./report ./handlers ./fleet}
STRESS_RUN=${STRESS_RUN:-}
STRESS_FLAGS=${STRESS_FLAGS:-}
STRESS_LOAD=${STRESS_LOAD:-3}
STRESS_TIMEOUT=${STRESS_TIMEOUT:-4h}

read -r -a pkgs <<<"$STRESS_PKGS"
read -r -a flags <<<"$STRESS_FLAGS"
if [ "${#pkgs[@]}" -eq 0 ]; then
	echo "stress: STRESS_PKGS names no package" >&2
	exit 2
fi

# e2e runs the built binary: build it now, before the load starts, and hand
# it over as CADDY_BIN (e2e/harness_test.go), so that its TestMain does not
# build one of its own under load.
for p in "${pkgs[@]}"; do
	case $p in
	./e2e | ./e2e/ | e2e | ./e2e/... | */e2e)
		if [ -z "${CADDY_BIN:-}" ]; then
			echo "stress: go build -o $BIN ./cmd/caddy (for ./e2e)" >&2
			"$GO" build -o "$BIN" ./cmd/caddy
			CADDY_BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
			export CADDY_BIN
		fi
		;;
	esac
done

# Compile the test binaries before the load, so that the load meets the
# tests, not the compiler.
"$GO" test -count=1 -run '^$' "${pkgs[@]}" >/dev/null

log=$(mktemp "${TMPDIR:-/tmp}/stress.XXXXXX")
loads=()
# shellcheck disable=SC2317 # run by the trap
stop() {
	local pid
	for pid in ${loads[@]+"${loads[@]}"}; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -f "$log"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Each loop also ends by itself once this script is gone, even after a
# SIGKILL that no trap sees.
for ((i = 0; i < STRESS_LOAD; i++)); do
	sh -c 'while kill -0 "$1" 2>/dev/null; do :; done' stress-load "$$" &
	loads+=("$!")
done

args=(test -p 1 -count="$STRESS_COUNT" -timeout "$STRESS_TIMEOUT")
if [ -n "$STRESS_RUN" ]; then
	args+=(-run "$STRESS_RUN")
fi
args+=(${flags[@]+"${flags[@]}"})

what="$GO ${args[*]} ${pkgs[*]}"
echo "stress: $what, beside $STRESS_LOAD busy loops" >&2
start=$SECONDS
set +e
"$GO" "${args[@]}" "${pkgs[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
took=$((SECONDS - start))

failed=$(grep -c -- '--- FAIL' "$log" || true)
echo
echo "stress: ran $what"
echo "stress: each test $STRESS_COUNT times, beside $STRESS_LOAD busy loops, in $((took / 60))m$((took % 60))s"
grep -E '^(ok|FAIL|---)[[:space:]]' "$log" | grep -v -- '--- PASS' | grep -v -- '--- SKIP' | sed 's/^/stress:   /' || true
if [ "$rc" -eq 0 ]; then
	echo "stress: PASS"
else
	echo "stress: FAIL (go test exit status $rc, $failed failed test runs)"
fi
exit "$rc"
