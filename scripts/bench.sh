#!/usr/bin/env bash
# `make bench`: the edge against plain Caddy and nginx, side by side, on
# loopback, with wrk; then the Go benchmarks. Writes a Markdown report (the
# tables of BENCHMARKS.md) to stdout; progress goes to stderr.
#
#   A  plain Caddy reverse_proxy                     (the floor)
#   B  postback_filter + itns_verify + secondary_post + reverse_proxy
#      (durable, synced; destination: a local HTTPS sink with its own CA)
#   C  nginx allow/deny + mirror to the same sink    (the non-durable peer)
#
# All three proxy to the same upstream stand-in; the runs alternate
# (A B C A B C ...) so that the machine's noise spreads over all of them.
# After each run of B the script waits until B's queue has drained, so that
# B's deliveries never run during the next server's measurement; at the end
# it checks that every notification B accepted reached the sink.
#
# Settings (environment):
#   BENCH_DURATION=10   seconds per wrk run        BENCH_ROUNDS=3
#   BENCH_CONNS=32      wrk connections            BENCH_THREADS=2
#   BENCH_WARMUP=3      seconds of discarded warm-up per server
#   BENCH_RATE=1000     open-loop rate (requests/s) of the latency rounds; 0 = skip
#   BENCH_RATE_DURATION=8  seconds per open-loop run
#   BENCH_ENCRYPT=1     the chain's store encrypted at rest (encryption_key), as
#                       recommended for card data; 0 = clear
#   BENCH_MAIN=1        the side-by-side rounds (0 = skip, e.g. for BENCH_1M alone)
#   BENCH_PARTS=1       where the chain's cost goes: plain Caddy against the chain
#                       without secondary_post and the chain whose copies are held
#                       (destination down, circuit open), same rounds; 0 = skip
#   BENCH_FLEET=1       queue jetstream (R3, three local NATS servers built from
#                       the nats-server module) beside the single-node chain; 0 = skip
#   BENCH_GO=1          also run the Go benchmarks and the storage soak test of
#                       100k enqueue/deliver cycles (about 2 minutes); 0 = skip
#   BENCH_DRAIN_N=50000 deliveries in the dedicated drain test; 0 = skip
#   BENCH_DRAIN_CONC="4 16"  destination concurrency of the drain tests (4 is the default)
#   BENCH_1M=0          1 = also the 1,000,000-pending memory and restart test
#                       (writes about 1.3 GB, takes several minutes)
#   BENCH_PROFILE=0     1 = save a CPU profile of the chain during round 1 (wrk);
#                       rate = during the first open-loop round instead
#   BENCH_SERIES=0      1 = each open-loop round's latencies in time order
#                       (.run/series-<server>-<round>.csv) and the servers'
#                       GC trace in their logs, to place the slow requests
#   BENCH_KEEP=0        1 = keep the temporary folder (logs, configs, raw results)
#   BIN=./caddy         the binary under test (make bench builds it)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-./caddy}
DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNS:-32}
THREADS=${BENCH_THREADS:-2}
WARMUP=${BENCH_WARMUP:-3}
RATE=${BENCH_RATE:-1000}
RATE_DURATION=${BENCH_RATE_DURATION:-8}
ENCRYPT=${BENCH_ENCRYPT:-1}
RUN_GO=${BENCH_GO:-1}
RUN_MAIN=${BENCH_MAIN:-1}
RUN_PARTS=${BENCH_PARTS:-1}
RUN_FLEET=${BENCH_FLEET:-1}
DRAIN_N=${BENCH_DRAIN_N:-50000}
DRAIN_CONC=${BENCH_DRAIN_CONC:-4 16}
RUN_1M=${BENCH_1M:-0}
PROFILE=${BENCH_PROFILE:-0}
SERIES=${BENCH_SERIES:-0}
KEEP=${BENCH_KEEP:-0}
GO=${GO:-go}

log() { echo "bench: $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

# --- prerequisites -----------------------------------------------------------
missing=()
WRK=$(command -v wrk || true)
[ -n "$WRK" ] || missing+=(wrk)
NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || true
[ -n "$NGINX" ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
	echo "make bench needs ${missing[*]}:" >&2
	echo "    sudo apt-get install wrk nginx-light      (Debian/Ubuntu)" >&2
	exit 1
fi
[ -x "$BIN" ] || die "$BIN not found or not executable (run: make build)"
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/postback-bench.XXXXXX")
chmod 755 "$TMP" # nginx's workers may run as another user
PIDS=()
CGDIRS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	for p in "${CGDIRS[@]}"; do
		rmdir "$p" 2>/dev/null || true
	done
	if [ "$KEEP" = 1 ]; then
		log "kept $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building the helper (scripts/benchtool)"
$GO build -o "$TMP/benchtool" ./scripts/benchtool
BT="$TMP/benchtool"
RESULTS="$TMP/results.jsonl"
: >"$RESULTS"

# Caddy keeps its data and config in the temporary folder, never in $HOME.
# Go keeps its caches where they were: under the new HOME it would fetch
# every module again and rebuild everything for the Go benchmarks.
GOMODCACHE=$($GO env GOMODCACHE) GOCACHE=$($GO env GOCACHE) GOPATH=$($GO env GOPATH)
export GOMODCACHE GOCACHE GOPATH
export HOME="$TMP/home" XDG_DATA_HOME="$TMP/home/data" XDG_CONFIG_HOME="$TMP/home/config"
mkdir -p "$HOME"
export BENCH_ITNS_SECRET="bench-secret-$RANDOM$RANDOM"
export BENCH_DB_KEY
BENCH_DB_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

CPU_PROBE_START=$($BT cpuprobe)
$BT fsynclat -dir "$TMP" -d 3s | $BT tag kind=fsync >>"$RESULTS"
$BT jitter -d 3s | $BT tag kind=jitter >>"$RESULTS"

read -r P_UP P_SINK_TLS P_SINK_HTTP P_PLAIN P_CHAIN P_NGINX A_PLAIN A_CHAIN P_DEAD P_CHECKS A_CHECKS P_HELD A_HELD P_NOLOG A_NOLOG <<<"$($BT ports -n 15)"

load1() { cut -d' ' -f1 /proc/loadavg; }

# cpu_ticks PID... : user+system clock ticks of the processes (and their
# threads) so far.
cpu_ticks() {
	local p t=0 v
	for p in "$@"; do
		v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)
		t=$((t + v))
	done
	echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)
# busy_ticks: the whole machine's non-idle clock ticks so far (all CPUs).
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
# child_ticks: CPU of this shell's finished children (wrk, run in $(...)).
child_ticks() { awk '{print $16+$17}' "/proc/$$/stat"; }

wait_http() { # URL [seconds]
	local i
	for ((i = 0; i < ${2:-30} * 20; i++)); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	die "no answer from $1"
}

start_bg() { # LOGFILE CMD... ; sets LAST_PID
	local logf=$1
	shift
	"$@" >"$logf" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

stop_pid() { # PID
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# --- the upstream stand-in and the sink -------------------------------------
start_bg "$TMP/upstream.log" "$BT" upstream -addr "127.0.0.1:$P_UP"
PID_UP=$LAST_PID
start_bg "$TMP/sink.log" "$BT" sink -tls "127.0.0.1:$P_SINK_TLS" -http "127.0.0.1:$P_SINK_HTTP" -certs "$TMP/sink"
PID_SINK=$LAST_PID
UP_COUNT="http://127.0.0.1:$P_UP/__count"
SINK_COUNT="http://127.0.0.1:$P_SINK_HTTP/__count"
wait_http "$UP_COUNT"
wait_http "$SINK_COUNT"
up_requests() { $BT count -url "$UP_COUNT" | sed -E 's/.*"requests":([0-9]+).*/\1/'; }
sink_field() { $BT count -url "$SINK_COUNT" | sed -E "s/.*\"$1\":([0-9]+).*/\1/"; }

$BT wrklua -secret "$BENCH_ITNS_SECRET" -prefix c -out "$TMP/itns"

# smoke NAME URL: the signed notification must be accepted and answered OK.
smoke() {
	local got
	got=$(curl -fsS --data-binary @"$TMP/itns.body" -H 'Content-Type: application/x-www-form-urlencoded' "$2") ||
		die "$1: the signed notification was not accepted (logs in $TMP; BENCH_KEEP=1 keeps them)"
	[ "$got" = "OK" ] || die "$1 answered '$got', want OK"
}

# --- configurations -----------------------------------------------------------
GLOBAL_COMMON="persist_config off
	auto_https off"

cat >"$TMP/plain.Caddyfile" <<EOF
{
	admin 127.0.0.1:$A_PLAIN
	$GLOBAL_COMMON
}
http://127.0.0.1:$P_PLAIN {
	reverse_proxy 127.0.0.1:$P_UP
}
EOF

KEYLINE=""
[ "$ENCRYPT" = 1 ] && KEYLINE="encryption_key {env.BENCH_DB_KEY}"
# cg_make MIB: a memory cgroup limited to MIB under this shell's own (what
# systemd's MemoryMax= makes); prints its folder. Fails where the cgroup file
# system is not ours to write (most containers, non-root), and the 1M test
# then skips that phase.
cg_make() { # MIB
	local rel dir
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then # v2
		rel=$(sed -n 's/^0:://p' /proc/self/cgroup)
		dir="/sys/fs/cgroup${rel%/}/postback-bench-$$"
		mkdir "$dir" 2>/dev/null || return 1
		CGDIRS+=("$dir")
		echo "$(($1 << 20))" >"$dir/memory.max" 2>/dev/null || return 1
	else # v1
		rel=$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
		[ -n "$rel" ] && [ -d "/sys/fs/cgroup/memory$rel" ] || return 1
		dir="/sys/fs/cgroup/memory${rel%/}/postback-bench-$$"
		mkdir "$dir" 2>/dev/null || return 1
		CGDIRS+=("$dir")
		echo "$(($1 << 20))" >"$dir/memory.limit_in_bytes" 2>/dev/null || return 1
	fi
	echo "$dir"
}

CLUSTER="" # a cluster block for the postback app (fleet_rounds)
chain_caddyfile() { # ADMIN PORT STORE DEST_URL SCHEDULE [CONCURRENCY [COPY [APP]]]
	local copy="secondary_post 1001" app=""
	# COPY=0: the same chain without secondary_post (the checks alone).
	[ "${7:-1}" = 1 ] || copy="# no secondary_post: the checks alone"
	# APP=0: and without the postback app, so without the notification log
	# (the handlers record requests only into an app's store).
	if [ "${8:-1}" = 1 ]; then
		app="postback {
		storage_dir $3
		$KEYLINE
		$CLUSTER
		destination 1001 {
			url $4
			method POST
			item_code BNCH
			timeout 10s
			retry_schedule $5
			concurrency ${6:-4}
			ca_cert $TMP/sink/ca.pem
		}
	}"
	fi
	cat <<EOF
{
	admin 127.0.0.1:$1
	$GLOBAL_COMMON
	$app
}
http://127.0.0.1:$2 {
	route /itns.php {
		postback_filter {
			methods POST
			allow 127.0.0.1
		}
		# No dedupe: every request of the fixed signed body is a new delivery.
		itns_verify {
			secret {env.BENCH_ITNS_SECRET}
			prefix c
			max_age 1h
		}
		$copy
		reverse_proxy 127.0.0.1:$P_UP
	}
}
EOF
}
chain_caddyfile "$A_CHAIN" "$P_CHAIN" "$TMP/chain/postback" "https://127.0.0.1:$P_SINK_TLS/collect" "0s 1s 5s 30s" >"$TMP/chain.Caddyfile"

mkdir -p "$TMP/nginx"
NGINX_USER=""
[ "$(id -u)" -eq 0 ] && NGINX_USER="user root;"
cat >"$TMP/nginx/nginx.conf" <<EOF
$NGINX_USER
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	client_body_buffer_size 16k;
	keepalive_requests 100000;
	upstream legacy { server 127.0.0.1:$P_UP; keepalive 64; }
	upstream sink   { server 127.0.0.1:$P_SINK_HTTP; keepalive 64; }
	server {
		listen 127.0.0.1:$P_NGINX;
		location = /itns.php {
			allow 127.0.0.1;
			deny all;
			limit_except POST { deny all; }
			mirror /__mirror;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://legacy;
		}
		location = /__mirror {
			internal;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_pass http://sink/collect;
		}
	}
}
EOF

declare -A URL=(
	[plain]="http://127.0.0.1:$P_PLAIN/itns.php"
	[chain]="http://127.0.0.1:$P_CHAIN/itns.php"
	[nginx]="http://127.0.0.1:$P_NGINX/itns.php"
)

# main_rounds: the three servers side by side, wrk rounds, open-loop rounds.
main_rounds() {
	# --- start the three servers -------------------------------------------------------
	log "starting plain Caddy, the chain and nginx"
	local gctrace=()
	[ "$SERIES" = 0 ] || gctrace=(env GODEBUG=gctrace=1)
	start_bg "$TMP/plain.log" "${gctrace[@]}" "$BIN" run --config "$TMP/plain.Caddyfile" --adapter caddyfile
	PID_PLAIN=$LAST_PID
	start_bg "$TMP/chain.log" "${gctrace[@]}" "$BIN" run --config "$TMP/chain.Caddyfile" --adapter caddyfile
	PID_CHAIN=$LAST_PID
	start_bg "$TMP/nginx.log" "$NGINX" -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" -g 'daemon off;'
	PID_NGINX=$LAST_PID
	wait_http "http://127.0.0.1:$A_PLAIN/config/"
	wait_http "http://127.0.0.1:$A_CHAIN/config/"
	for ((i = 0; i < 100; i++)); do
		[ -n "$(pgrep -P "$PID_NGINX" || true)" ] && break
		sleep 0.05
	done
	nginx_pids() { echo "$PID_NGINX $(pgrep -P "$PID_NGINX" | tr '\n' ' ')"; }

	server_pids() {
		case $1 in
		plain) echo "$PID_PLAIN" ;;
		chain) echo "$PID_CHAIN" ;;
		nginx) nginx_pids ;;
		esac
	}

	# Smoke test: each answers the upstream's OK; a forged signature is refused.
	for s in plain chain nginx; do
		smoke "$s" "${URL[$s]}"
	done
	code=$(curl -s -o /dev/null -w '%{http_code}' --data 'ctransaction=SALE&cverify=00000000' "${URL[chain]}")
	[ "$code" = 403 ] || die "chain: a forged signature got $code, want 403"

	CHAIN_FORWARDED=0 # notifications the chain passed on (upstream count during chain phases)
	run_wrk() { # SERVER SECONDS -> WRKJSON on stdout
		"$WRK" -t"$THREADS" -c"$CONNS" -d"$2s" --latency -s "$TMP/itns.lua" "${URL[$1]}"
	}

	drain_chain() { # KIND ROUND
		$BT drain -admin "127.0.0.1:$A_CHAIN" -sink "$SINK_COUNT" -timeout 180s |
			$BT tag kind="$1" round="$2" >>"$RESULTS"
	}

	log "warm-up: ${WARMUP}s per server"
	for s in plain chain nginx; do
		u0=$(up_requests)
		run_wrk "$s" "$WARMUP" >/dev/null
		u1=$(up_requests)
		if [ "$s" = chain ]; then
			CHAIN_FORWARDED=$((CHAIN_FORWARDED + u1 - u0))
			drain_chain warmup_drain 0
		fi
	done

	# --- the measured rounds ------------------------------------------------------------
	for ((r = 1; r <= ROUNDS; r++)); do
		for s in plain chain nginx; do
			log "round $r/$ROUNDS: $s (${DURATION}s, -t$THREADS -c$CONNS, load $(load1))"
			l0=$(load1)
			pids=$(server_pids "$s")
			# shellcheck disable=SC2086
			c0=$(cpu_ticks $pids)
			cu0=$(cpu_ticks "$PID_UP")
			cs0=$(cpu_ticks "$PID_SINK")
			u0=$(up_requests)
			if [ "$PROFILE" = 1 ] && [ "$s" = chain ] && [ "$r" = 1 ]; then
				curl -s -o "$TMP/chain.cpu.pprof" "http://127.0.0.1:$A_CHAIN/debug/pprof/profile?seconds=$((DURATION - 2))" &
				PIDS+=($!)
			fi
			b0=$(busy_ticks)
			w0=$(child_ticks)
			out=$(run_wrk "$s" "$DURATION")
			w1=$(child_ticks)
			b1=$(busy_ticks)
			# shellcheck disable=SC2086
			c1=$(cpu_ticks $pids)
			cu1=$(cpu_ticks "$PID_UP")
			cs1=$(cpu_ticks "$PID_SINK")
			u1=$(up_requests)
			echo "$out" | $BT tag kind=wrk server="$s" round="$r" load1="$l0" \
				upstream="$((u1 - u0))" cpu_server_s="$(awk "BEGIN{print ($c1-$c0)/$CLK_TCK}")" \
				cpu_upstream_s="$(awk "BEGIN{print ($cu1-$cu0)/$CLK_TCK}")" \
				cpu_sink_s="$(awk "BEGIN{print ($cs1-$cs0)/$CLK_TCK}")" \
				cpu_wrk_s="$(awk "BEGIN{print ($w1-$w0)/$CLK_TCK}")" \
				cpu_busy_s="$(awk "BEGIN{print ($b1-$b0)/$CLK_TCK}")" >>"$RESULTS"
			if [ "$s" = chain ]; then
				CHAIN_FORWARDED=$((CHAIN_FORWARDED + u1 - u0))
				drain_chain drain "$r"
			fi
		done
	done

	# --- open-loop rounds: the same fixed rate for each, latency from the due time -------
	if [ "$RATE" != 0 ]; then
		for ((r = 1; r <= ROUNDS; r++)); do
			for s in plain chain nginx; do
				log "fixed rate $r/$ROUNDS: $s ($RATE/s for ${RATE_DURATION}s over $CONNS connections, load $(load1))"
				l0=$(load1)
				u0=$(up_requests)
				pids=$(server_pids "$s")
				# shellcheck disable=SC2086
				c0=$(cpu_ticks $pids "$PID_UP" "$PID_SINK")
				# shellcheck disable=SC2086
				e0=$(cpu_ticks $pids)
				if [ "$PROFILE" = rate ] && [ "$s" = chain ] && [ "$r" = 1 ]; then
					curl -s -o "$TMP/chain.cpu.pprof" "http://127.0.0.1:$A_CHAIN/debug/pprof/profile?seconds=$((RATE_DURATION - 1))" &
					PIDS+=($!)
				fi
				b0=$(busy_ticks)
				w0=$(child_ticks)
				series=()
				[ "$SERIES" = 0 ] || series=(-series "$TMP/series-$s-$r.csv")
				out=$($BT load -url "${URL[$s]}" -body "$TMP/itns.body" -rate "$RATE" -conns "$CONNS" -d "${RATE_DURATION}s" "${series[@]}")
				w1=$(child_ticks)
				b1=$(busy_ticks)
				# shellcheck disable=SC2086
				c1=$(cpu_ticks $pids "$PID_UP" "$PID_SINK")
				# shellcheck disable=SC2086
				e1=$(cpu_ticks $pids)
				u1=$(up_requests)
				echo "$out" | $BT tag kind=rate server="$s" round="$r" load1="$l0" upstream="$((u1 - u0))" \
					cpu_edge_s="$(awk "BEGIN{print ($e1-$e0)/$CLK_TCK}")" \
					cpu_server_s="$(awk "BEGIN{print ($c1-$c0)/$CLK_TCK}")" cpu_wrk_s="$(awk "BEGIN{print ($w1-$w0)/$CLK_TCK}")" \
					cpu_busy_s="$(awk "BEGIN{print ($b1-$b0)/$CLK_TCK}")" >>"$RESULTS"
				if [ "$s" = chain ]; then
					CHAIN_FORWARDED=$((CHAIN_FORWARDED + u1 - u0))
					drain_chain rate_drain "$r"
				fi
			done
		done
	fi

	# Every notification the chain accepted was passed on only after its copy
	# was synced; all of them must now be at the sink, each exactly once by id.
	$BT rss -pid "$PID_CHAIN" -admin "127.0.0.1:$A_CHAIN" |
		$BT tag kind=final chain_forwarded="$CHAIN_FORWARDED" smoke=1 \
			sink_distinct="$(sink_field tls_distinct)" sink_tls="$(sink_field tls_requests)" \
			sink_http="$(sink_field http_requests)" >>"$RESULTS"
	stop_pid "$PID_PLAIN"
	stop_pid "$PID_NGINX"
	stop_pid "$PID_CHAIN"
}
if [ "$RUN_MAIN" = 1 ]; then
	main_rounds
fi

# parts_rounds: where the chain's cost goes. Plain Caddy against three partial
# chains, in alternation as above: "nolog" is postback_filter + itns_verify +
# reverse_proxy without a postback app, "checks" the same with the app (so
# with the notification log: what the two differ by), "held" the
# whole chain whose destination is down: after 10 refused attempts its circuit
# opens and the copies stay pending, so each request pays for the synced
# enqueue but no copy is sent while it is measured.
parts_rounds() {
	log "where the cost goes: plain Caddy, the checks without and with the notification log, the chain with its copies held"
	chain_caddyfile "$A_NOLOG" "$P_NOLOG" "$TMP/nolog/postback" "https://127.0.0.1:$P_SINK_TLS/collect" "0s 1s 5s 30s" 4 0 0 >"$TMP/nolog.Caddyfile"
	chain_caddyfile "$A_CHECKS" "$P_CHECKS" "$TMP/checks/postback" "https://127.0.0.1:$P_SINK_TLS/collect" "0s 1s 5s 30s" 4 0 >"$TMP/checks.Caddyfile"
	chain_caddyfile "$A_HELD" "$P_HELD" "$TMP/held/postback" "https://127.0.0.1:$P_DEAD/collect" "0s 10s 1m 5m 30m 2h 5h 10h" >"$TMP/held.Caddyfile"
	start_bg "$TMP/plain-parts.log" "$BIN" run --config "$TMP/plain.Caddyfile" --adapter caddyfile
	local pid_plain=$LAST_PID
	start_bg "$TMP/nolog.log" "$BIN" run --config "$TMP/nolog.Caddyfile" --adapter caddyfile
	local pid_nolog=$LAST_PID
	start_bg "$TMP/checks.log" "$BIN" run --config "$TMP/checks.Caddyfile" --adapter caddyfile
	local pid_checks=$LAST_PID
	start_bg "$TMP/held.log" "$BIN" run --config "$TMP/held.Caddyfile" --adapter caddyfile
	local pid_held=$LAST_PID
	wait_http "http://127.0.0.1:$A_PLAIN/config/"
	wait_http "http://127.0.0.1:$A_NOLOG/config/"
	wait_http "http://127.0.0.1:$A_CHECKS/config/"
	wait_http "http://127.0.0.1:$A_HELD/config/"
	local -A purl=(
		[plain]="http://127.0.0.1:$P_PLAIN/itns.php"
		[nolog]="http://127.0.0.1:$P_NOLOG/itns.php"
		[checks]="http://127.0.0.1:$P_CHECKS/itns.php"
		[held]="http://127.0.0.1:$P_HELD/itns.php"
	)
	local -A ppid=([plain]=$pid_plain [nolog]=$pid_nolog [checks]=$pid_checks [held]=$pid_held)
	local s r out c0 c1 u0 u1
	for s in plain nolog checks held; do
		smoke "$s" "${purl[$s]}"
		"$WRK" -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$TMP/itns.lua" "${purl[$s]}" >/dev/null
	done
	for ((r = 1; r <= ROUNDS; r++)); do
		for s in plain nolog checks held; do
			log "parts round $r/$ROUNDS: $s (${DURATION}s, load $(load1))"
			c0=$(cpu_ticks "${ppid[$s]}")
			u0=$(up_requests)
			out=$("$WRK" -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$TMP/itns.lua" "${purl[$s]}")
			u1=$(up_requests)
			c1=$(cpu_ticks "${ppid[$s]}")
			echo "$out" | $BT tag kind=parts_wrk server="$s" round="$r" load1="$(load1)" upstream="$((u1 - u0))" \
				cpu_server_s="$(awk "BEGIN{print ($c1-$c0)/$CLK_TCK}")" >>"$RESULTS"
		done
	done
	if [ "$RATE" != 0 ]; then
		for ((r = 1; r <= ROUNDS; r++)); do
			for s in plain nolog checks held; do
				log "parts fixed rate $r/$ROUNDS: $s ($RATE/s for ${RATE_DURATION}s, load $(load1))"
				out=$($BT load -url "${purl[$s]}" -body "$TMP/itns.body" -rate "$RATE" -conns "$CONNS" -d "${RATE_DURATION}s")
				echo "$out" | $BT tag kind=parts_rate server="$s" round="$r" load1="$(load1)" >>"$RESULTS"
			done
		done
	fi
	# The checks server kept a record of every request: the log was on.
	if out=$($BT notelog -admin "127.0.0.1:$A_CHECKS"); then
		echo "$out" | $BT tag kind=parts_notelog >>"$RESULTS"
	else
		log "no notification log metrics on the checks server (a binary from before the log?)"
	fi
	# The held chain's copies must all still be pending: none was sent.
	$BT rss -pid "$pid_held" -admin "127.0.0.1:$A_HELD" | $BT tag kind=parts_held >>"$RESULTS"
	stop_pid "$pid_plain"
	stop_pid "$pid_nolog"
	stop_pid "$pid_checks"
	stop_pid "$pid_held"
}
if [ "$RUN_PARTS" = 1 ]; then
	parts_rounds
fi

# fleet_rounds: queue jetstream beside the single-node chain. Three NATS
# servers (built from the nats-server module, JetStream, routed to each
# other) on loopback; "one" is the chain on its own disk, "js" the same
# chain whose queue is the fleet's stream, replicated three times. Both copy
# to the sink; each run is followed by its drain, as in the main rounds.
fleet_rounds() {
	log "fleet: building nats-server"
	$GO build -o "$TMP/nats-server" github.com/nats-io/nats-server/v2 || die "cannot build nats-server"
	local ports i routes=""
	read -r -a ports <<<"$($BT ports -n 13)"
	local P_ONE=${ports[9]} A_ONE=${ports[10]} P_JS=${ports[11]} A_JS=${ports[12]}
	for i in 0 1 2; do
		routes+="${routes:+,}nats://127.0.0.1:${ports[$((3 + i))]}"
	done
	local natsurls="" natspids=()
	for i in 0 1 2; do
		start_bg "$TMP/nats$i.log" "$TMP/nats-server" -js -sd "$TMP/nats$i" -a 127.0.0.1 -p "${ports[$i]}" \
			-m "${ports[$((6 + i))]}" -n "bench-n$i" --cluster_name postback-bench \
			--cluster "nats://127.0.0.1:${ports[$((3 + i))]}" --routes "$routes"
		natsurls+=" nats://127.0.0.1:${ports[$i]}"
		natspids+=("$LAST_PID")
	done
	for i in 0 1 2; do
		wait_http "http://127.0.0.1:${ports[$((6 + i))]}/healthz?js-enabled-only=true" 60
	done
	chain_caddyfile "$A_ONE" "$P_ONE" "$TMP/one/postback" "https://127.0.0.1:$P_SINK_TLS/collect" "0s 1s 5s 30s" >"$TMP/one.Caddyfile"
	CLUSTER="encryption_key {env.BENCH_DB_KEY}
		cluster {
			nats$natsurls
			node bench-js
			replicas 3
			queue jetstream
		}"
	[ "$ENCRYPT" = 1 ] && CLUSTER=${CLUSTER#*$'\n'} # the key line is there already
	chain_caddyfile "$A_JS" "$P_JS" "$TMP/js/postback" "https://127.0.0.1:$P_SINK_TLS/collect" "0s 1s 5s 30s" >"$TMP/js.Caddyfile"
	CLUSTER=""
	start_bg "$TMP/plain-fleet.log" "$BIN" run --config "$TMP/plain.Caddyfile" --adapter caddyfile
	local pid_plain=$LAST_PID
	start_bg "$TMP/one.log" "$BIN" run --config "$TMP/one.Caddyfile" --adapter caddyfile
	local pid_one=$LAST_PID
	# The JetStream cluster may still be electing its meta leader: the edge
	# refuses to start until it answers, so try a few times.
	local pid_js="" try
	for try in 1 2 3 4 5; do
		start_bg "$TMP/js.log" "$BIN" run --config "$TMP/js.Caddyfile" --adapter caddyfile
		pid_js=$LAST_PID
		for ((i = 0; i < 200; i++)); do
			curl -fsS -o /dev/null "http://127.0.0.1:$A_JS/config/" 2>/dev/null && break 2
			kill -0 "$pid_js" 2>/dev/null || break
			sleep 0.05
		done
		log "fleet: the queue jetstream edge did not start (try $try); see $TMP/js.log"
		stop_pid "$pid_js"
		sleep 2
	done
	wait_http "http://127.0.0.1:$A_PLAIN/config/"
	wait_http "http://127.0.0.1:$A_ONE/config/"
	wait_http "http://127.0.0.1:$A_JS/config/"
	local -A furl=(
		[plain]="http://127.0.0.1:$P_PLAIN/itns.php"
		[one]="http://127.0.0.1:$P_ONE/itns.php"
		[js]="http://127.0.0.1:$P_JS/itns.php"
	)
	local -A fpid=([plain]=$pid_plain [one]=$pid_one [js]=$pid_js)
	local -A fadmin=([one]=$A_ONE [js]=$A_JS)
	local s r out c0 c1 u0 u1
	for s in plain one js; do
		smoke "$s" "${furl[$s]}"
		"$WRK" -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$TMP/itns.lua" "${furl[$s]}" >/dev/null
		if [ "$s" != plain ]; then
			$BT drain -admin "127.0.0.1:${fadmin[$s]}" -sink "$SINK_COUNT" -timeout 180s >/dev/null
		fi
	done
	for ((r = 1; r <= ROUNDS; r++)); do
		for s in plain one js; do
			log "fleet round $r/$ROUNDS: $s (${DURATION}s, load $(load1))"
			c0=$(cpu_ticks "${fpid[$s]}")
			u0=$(up_requests)
			out=$("$WRK" -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$TMP/itns.lua" "${furl[$s]}")
			u1=$(up_requests)
			c1=$(cpu_ticks "${fpid[$s]}")
			echo "$out" | $BT tag kind=fleet_wrk server="$s" round="$r" load1="$(load1)" upstream="$((u1 - u0))" \
				cpu_server_s="$(awk "BEGIN{print ($c1-$c0)/$CLK_TCK}")" >>"$RESULTS"
			if [ "$s" != plain ]; then
				$BT drain -admin "127.0.0.1:${fadmin[$s]}" -sink "$SINK_COUNT" -timeout 300s |
					$BT tag kind=fleet_drain server="$s" round="$r" >>"$RESULTS"
			fi
		done
	done
	if [ "$RATE" != 0 ]; then
		for ((r = 1; r <= ROUNDS; r++)); do
			for s in plain one js; do
				log "fleet fixed rate $r/$ROUNDS: $s ($RATE/s for ${RATE_DURATION}s, load $(load1))"
				out=$($BT load -url "${furl[$s]}" -body "$TMP/itns.body" -rate "$RATE" -conns "$CONNS" -d "${RATE_DURATION}s")
				echo "$out" | $BT tag kind=fleet_rate server="$s" round="$r" load1="$(load1)" >>"$RESULTS"
				if [ "$s" != plain ]; then
					$BT drain -admin "127.0.0.1:${fadmin[$s]}" -sink "$SINK_COUNT" -timeout 300s >/dev/null
				fi
			done
		done
	fi
	stop_pid "$pid_plain"
	stop_pid "$pid_one"
	stop_pid "$pid_js"
	for i in "${natspids[@]}"; do
		stop_pid "$i"
	done
}
if [ "$RUN_FLEET" = 1 ]; then
	fleet_rounds
fi

# --- the drain rate on its own: a backlog of DRAIN_N, the sink up ---------------
if [ "$DRAIN_N" -gt 0 ]; then
	for conc in $DRAIN_CONC; do
		log "drain test: $DRAIN_N pending deliveries of 1 KiB, then start the chain (concurrency $conc)"
		key=""
		if [ "$ENCRYPT" = 1 ]; then key=$BENCH_DB_KEY; fi
		rm -rf "$TMP/drain"
		$BT fill -dir "$TMP/drain/postback" -n "$DRAIN_N" -size 1024 -key "$key" |
			$BT tag kind=drain_fill concurrency="$conc" >>"$RESULTS"
		chain_caddyfile "$A_CHAIN" "$P_CHAIN" "$TMP/drain/postback" "https://127.0.0.1:$P_SINK_TLS/collect" "0s 1s 5s 30s" "$conc" >"$TMP/drain.Caddyfile"
		d0=$(sink_field tls_distinct)
		start_bg "$TMP/drain-$conc.log" "$BIN" run --config "$TMP/drain.Caddyfile" --adapter caddyfile
		PID_DRAIN=$LAST_PID
		wait_http "http://127.0.0.1:$A_CHAIN/config/"
		$BT drain -admin "127.0.0.1:$A_CHAIN" -sink "$SINK_COUNT" -want "$((d0 + DRAIN_N))" -timeout 300s |
			$BT tag kind=drain_test n="$DRAIN_N" concurrency="$conc" load1="$(load1)" >>"$RESULTS"
		stop_pid "$PID_DRAIN"
	done
fi

# --- 1,000,000 pending: memory and restart (opt-in) ---------------------------------
if [ "$RUN_1M" = 1 ]; then
	N1M=${BENCH_1M_N:-1000000}
	log "1M test: filling $N1M pending deliveries of 1 KiB (a few minutes)"
	key=""
	if [ "$ENCRYPT" = 1 ]; then key=$BENCH_DB_KEY; fi
	$BT fill -dir "$TMP/m1/postback" -n "$N1M" -size 1024 -key "$key" | $BT tag kind=m1_fill >>"$RESULTS"
	# The destination is dead (nothing listens on its port): every delivery
	# stays pending; after 10 failed attempts the circuit breaker holds them
	# and probes one at a time.
	chain_caddyfile "$A_CHAIN" "$P_CHAIN" "$TMP/m1/postback" "https://127.0.0.1:$P_DEAD/collect" "0s 10s 1m 5m 30m 2h 5h 10h" >"$TMP/m1.Caddyfile"
	# A copy for the first start inside a memory cgroup (below), when we may
	# make one.
	CG_MIB=${BENCH_1M_CGROUP_MIB:-128}
	cg_dir=$(cg_make "$CG_MIB") || cg_dir=""
	if [ -n "$cg_dir" ]; then
		cp -a "$TMP/m1/postback" "$TMP/m1/postback-cg"
	else
		log "1M test: no memory cgroup can be made here; the cgroup phase is skipped"
	fi
	# start: the first start after the fill; restart: once more, as after an
	# upgrade; memlimit: once more with GOMEMLIMIT (Caddy sets it from a
	# cgroup memory limit by itself, e.g. systemd's MemoryMax).
	for phase in start restart memlimit; do
		log "1M test: $phase, time to the first request served"
		limit=""
		if [ "$phase" = memlimit ]; then limit=${BENCH_1M_MEMLIMIT:-100MiB}; fi
		out=$(GOMEMLIMIT=$limit $BT firstserve -url "${URL[chain]}" -body "$TMP/itns.body" -log "$TMP/m1-$phase.log" -timeout 120s -- \
			"$BIN" run --config "$TMP/m1.Caddyfile" --adapter caddyfile)
		pid=$(echo "$out" | sed -E 's/.*"pid":([0-9]+).*/\1/')
		PIDS+=("$pid")
		echo "$out" | $BT tag kind=m1_serve phase="$phase" >>"$RESULTS"
		secs=${BENCH_1M_RSS_SECONDS:-60}
		log "1M test: sampling the resident memory for ${secs}s"
		$BT rss -pid "$pid" -for "${secs}s" -admin "127.0.0.1:$A_CHAIN" | $BT tag kind=m1_rss phase="$phase" seconds="$secs" >>"$RESULTS"
		kill -TERM "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	done
	du -sm "$TMP/m1/postback" | awk '{print "{\"mib\":" $1 "}"}' | $BT tag kind=m1_du >>"$RESULTS"
	# The first start after the fill once more, inside a memory cgroup of
	# CG_MIB (a deployment's MemoryMax=): the kernel counts anonymous memory
	# and the page cache the process causes, reclaims clean file pages at the
	# limit and kills above it; Caddy sets GOMEMLIMIT from the limit itself.
	if [ -n "$cg_dir" ]; then
		log "1M test: first start inside a ${CG_MIB} MiB memory cgroup"
		chain_caddyfile "$A_CHAIN" "$P_CHAIN" "$TMP/m1/postback-cg" "https://127.0.0.1:$P_DEAD/collect" "0s 10s 1m 5m 30m 2h 5h 10h" >"$TMP/m1cg.Caddyfile"
		# shellcheck disable=SC2016 # $$ and $0 are the inner shell's
		out=$($BT firstserve -url "${URL[chain]}" -body "$TMP/itns.body" -log "$TMP/m1-cgroup.log" -timeout 120s -- \
			sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg_dir" "$BIN" run --config "$TMP/m1cg.Caddyfile" --adapter caddyfile)
		pid=$(echo "$out" | sed -E 's/.*"pid":([0-9]+).*/\1/')
		PIDS+=("$pid")
		echo "$out" | $BT tag kind=m1_serve phase=cgroup >>"$RESULTS"
		$BT rss -pid "$pid" -for "${BENCH_1M_RSS_SECONDS:-60}s" -admin "127.0.0.1:$A_CHAIN" -cgroup "$cg_dir" |
			$BT tag kind=m1_rss phase=cgroup seconds="${BENCH_1M_RSS_SECONDS:-60}" >>"$RESULTS"
		kill -TERM "$pid" 2>/dev/null || true
		while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
		rm -rf "$TMP/m1/postback-cg"
	fi
fi

# --- Go benchmarks ---------------------------------------------------------------------
GOBENCH="$TMP/gobench.txt"
: >"$GOBENCH"
if [ "$RUN_GO" = 1 ]; then
	log "Go benchmarks (handlers, storage, delivery)"
	{
		$GO test -run '^$' -bench 'BenchmarkVerify|BenchmarkCaptureBody' -benchmem -benchtime 1s ./handlers
		$GO test -run '^$' -bench 'BenchmarkFsync|BenchmarkEnqueue/sync=(journal|badger|none|logmodel)/writers=(1|32|128)$|BenchmarkComplete' -benchtime 2s ./storage
		$GO test -run '^$' -bench 'BenchmarkDrain' -benchtime 20000x ./delivery
		$GO test -run '^$' -bench 'BenchmarkRequestPath' -benchmem ./notelog
		$GO test -run '^$' -bench 'BenchmarkQueueDrain' -benchtime 3000x ./fleet
		# Store size after 100k enqueue/deliver cycles (the storage package's soak test).
		STORAGE_SOAK=1 $GO test -count=1 -run 'TestSoakCycles$' -v ./storage
		# What Badger writes per notification (the history's write amplification).
		STORAGE_SOAK=1 $GO test -count=1 -run 'TestSoakHistoryWrites$' -v ./storage
	} 2>&1 | tee -a "$GOBENCH" | grep -E '^(Benchmark|ok|FAIL|---)' >&2 || true
fi

# The store alone at the open-loop rate (no HTTP): what group commit adds.
if [ "$RATE" != 0 ] && [ "$RUN_MAIN" = 1 ]; then
	log "the store alone: enqueue latency at $RATE/s, 4 goroutines completing"
	key=""
	if [ "$ENCRYPT" = 1 ]; then key=$BENCH_DB_KEY; fi
	$BT storelat -dir "$TMP/storelat" -rate "$RATE" -conns "$CONNS" -workers 4 -d "${RATE_DURATION}s" -key "$key" |
		$BT tag kind=storelat >>"$RESULTS"
	rm -rf "$TMP/storelat"
	log "the disk's floor: requests at $RATE/s, each waiting for the next write+fsync"
	$BT fsynclat -dir "$TMP" -rate "$RATE" -d "${RATE_DURATION}s" | $BT tag kind=fsyncfloor >>"$RESULTS"
fi

CPU_PROBE_END=$($BT cpuprobe)
cat >"$TMP/env.json" <<EOF
{"kind":"env","date":"$(date -u +%Y-%m-%dT%H:%M:%SZ)","kernel":"$(uname -r)","cpus":$(nproc),
 "cpu":"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')",
 "go":"$($GO env GOVERSION)","caddy":"$("$BIN" version | head -1 | cut -d' ' -f1)",
 "nginx":"$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')","wrk":"$("$WRK" -v 2>&1 | head -1 | cut -d' ' -f2)",
 "duration":$DURATION,"rounds":$ROUNDS,"conns":$CONNS,"threads":$THREADS,"encrypt":$ENCRYPT,
 "body_bytes":$(wc -c <"$TMP/itns.body"),"load_end":"$(cut -d' ' -f1-3 /proc/loadavg)",
 "cpu_probe_start":$CPU_PROBE_START,"cpu_probe_end":$CPU_PROBE_END,"rate":$RATE}
EOF
tr -d '\n' <"$TMP/env.json" >>"$RESULTS"
echo >>"$RESULTS"

$BT report -in "$RESULTS" -gobench "$GOBENCH"
if [ "$SERIES" != 0 ]; then
	mkdir -p .run
	cp "$TMP"/series-*.csv "$TMP/plain.log" "$TMP/chain.log" .run/ 2>/dev/null || true
	log "latency series and the servers' logs (GC trace): .run/series-*.csv, .run/plain.log, .run/chain.log"
fi
if [ "$PROFILE" != 0 ] && [ -s "$TMP/chain.cpu.pprof" ]; then
	mkdir -p .run
	cp "$TMP/chain.cpu.pprof" .run/chain.cpu.pprof
	log "CPU profile of the chain: .run/chain.cpu.pprof (go tool pprof -top $BIN .run/chain.cpu.pprof)"
fi
