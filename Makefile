# caddy-postback: `make run` builds the binary and serves Caddyfile.example;
# `make test` runs every test. Both do all their own set-up.

GO      ?= go
BIN     ?= ./caddy
RUN_DIR ?= .run

.PHONY: build run test test-short vet stress bench clean

build:
	$(GO) build -o $(BIN) ./cmd/caddy

# The local demo: php-cgi on 127.0.0.1:9123 behind php_fastcgi, the edge on
# http://127.0.0.1:8080, a local HTTPS destination on 127.0.0.1:8443.
run: build
	RUN_DIR=$(RUN_DIR) BIN=$(BIN) ./scripts/run-demo.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }

# -p 1: the in-process Caddy of caddytest uses a fixed admin port per test
# binary, and the end-to-end tests start the built binary on fixed loopback
# ports; packages must not run side by side.
test: vet
	$(GO) test -p 1 -count=1 -timeout 40m ./...

test-short: vet
	$(GO) test -p 1 -short ./...

# The tests that wait for something, STRESS_COUNT times each while three busy
# loops take the CPUs (scripts/stress.sh). A change to such a test is checked
# with this before it lands; narrow it with STRESS_PKGS and STRESS_RUN:
#   make stress STRESS_PKGS=./delivery STRESS_RUN='TestBreaker'
# $(value ...): a -run regexp may hold a $ that make must not expand.
STRESS_COUNT ?= 30
stress:
	@GO=$(GO) BIN=$(BIN) STRESS_COUNT='$(value STRESS_COUNT)' STRESS_PKGS='$(value STRESS_PKGS)' \
		STRESS_RUN='$(value STRESS_RUN)' STRESS_FLAGS='$(value STRESS_FLAGS)' ./scripts/stress.sh

# The edge against plain Caddy and nginx on loopback (wrk, nginx-light), then
# the Go benchmarks; prints a Markdown report (see BENCHMARKS.md). Options as
# variables: make -s bench BENCH_1M=1 BENCH_ROUNDS=5 ... (scripts/bench.sh).
bench: build
	@BIN=$(BIN) ./scripts/bench.sh

clean:
	rm -rf $(BIN) $(RUN_DIR)
