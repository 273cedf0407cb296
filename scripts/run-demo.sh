#!/usr/bin/env bash
# Runs the local demo of Caddyfile.example: php-cgi (FastCGI) for the legacy
# scripts, and the built Caddy in the foreground. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
BIN=${BIN:-./caddy}

# php-cgi runs the legacy PHP scripts. On a fresh Debian/Ubuntu machine
# install it when we may (root, or sudo without a password); otherwise say
# the one command to run, rather than prompt for a password mid-way.
if ! command -v php-cgi >/dev/null 2>&1; then
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		sudo=(sudo -n)
	fi
	if command -v apt-get >/dev/null 2>&1 &&
		{ [ "${#sudo[@]}" -eq 0 ] || sudo -n true 2>/dev/null; }; then
		echo "make run: php-cgi is missing; installing it with apt-get" >&2
		${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq php-cgi ||
			echo "make run: apt-get could not install php-cgi" >&2
	fi
	if ! command -v php-cgi >/dev/null 2>&1; then
		echo "make run needs php-cgi for the legacy PHP scripts; install it, then run make run again:" >&2
		echo "    sudo apt-get update && sudo apt-get install -y php-cgi      (Debian/Ubuntu)" >&2
		exit 1
	fi
fi

# Caddyfile.example finds its demo files through {$DEMO_DIR:.run}.
export DEMO_DIR="$RUN_DIR"
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"
go run ./examples/gencert -out "$RUN_DIR/certs"

# Demo secrets; a real deployment sets these in its service environment.
export ITNS_SECRET=${ITNS_SECRET:-demo-secret}
if [ -z "${POSTBACK_DB_KEY:-}" ]; then
	if [ ! -f "$RUN_DIR/db.key" ]; then
		head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN_DIR/db.key"
		chmod 600 "$RUN_DIR/db.key"
	fi
	POSTBACK_DB_KEY=$(cat "$RUN_DIR/db.key")
	export POSTBACK_DB_KEY
fi
legacy_shown=${LEGACY_DATA_DIR:-$RUN_DIR/legacy-data}
export LEGACY_DATA_DIR=${LEGACY_DATA_DIR:-$(cd "$RUN_DIR" && pwd)/legacy-data}

# php-cgi puts itself in a process group of its own, so Ctrl-C does not
# reach it: the trap stops it with Caddy.
PHP_FCGI_CHILDREN=4 PHP_FCGI_MAX_REQUESTS=0 php-cgi -b 127.0.0.1:9123 &
php_pid=$!
caddy_pid=""
cleanup() {
	trap - INT TERM EXIT
	if [ -n "$caddy_pid" ]; then kill "$caddy_pid" 2>/dev/null || true; fi
	kill "$php_pid" 2>/dev/null || true
	wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

# The same commands as README's Quick start (TestMakeRunDemo compares them).
cat <<MSG

caddy-postback demo on http://127.0.0.1:8080 (Ctrl-C to stop). Try, in another shell:

  # a signed AffiliCon ITNS notification: "OK" from itns.php, and a copy to DIN 1001
  curl -i -d "\$($BIN postback sign --secret demo-secret transaction=SALE tranreceipt=DEMO0001 \\
        prodid=1707 custemail=anna@example.com custfullname='Anna Muster' transtime=\$(date +%s))" \\
        http://127.0.0.1:8080/itns.php

  # unsigned: 403
  curl -i -d 'transaction=SALE&prodid=1707' http://127.0.0.1:8080/itns.php

  # GET where only POST is allowed: 405 with "Allow: POST"
  curl -i http://127.0.0.1:8080/itns.php

  # a NATS gateway post from a sender that is not on the allowlist: SALE DECLINED / NOT ALLOWED IP
  curl -i -d 'xs_nats=ref&username=u&password=p&email=u@example.com&cc=4111111111111111&cvv=123' \\
        http://127.0.0.1:8080/signup/process_gateway.php

  # a NATS extended sale by GET, allowed from loopback: OK / SALE
  curl -i 'http://127.0.0.1:8080/signup/process_extended.php?extended_id=demo&action=SALE&transid=T1'

  # what the scripts and the destination received, and the delivery statistics
  tail $legacy_shown/*.log
  $BIN postback stats

The report page is at http://127.0.0.1:8080/postback-report/ (user ops, password demo).

MSG

"$BIN" run --config Caddyfile.example --adapter caddyfile &
caddy_pid=$!
wait "$caddy_pid"
