#!/usr/bin/env bash
# bench/logins.sh — the fixed-work measurement of sign-ins.
#
# One Caddy process (the ./caddy built with this plugin) serves, on 127.0.0.1 only:
#   :BASE_PORT     passwordless { email { log } … } + reverse_proxy to the backend
#   :BASE_PORT+1   the backend: respond "ok" 200
# For each number of clients in CLIENTS, bench/loadgen opens a connection per client
# (a warm-up that is not measured), then runs three phases of REQUESTS requests each,
# the clients taking the next request as they free up:
#   1. code requests   POST /auth/email for fresh addresses (the `log` sender writes
#                      the codes to a log file of their own, which loadgen reads)
#   2. exchanges       POST /auth/token with those codes
#   3. protected route GET / with the tokens
# and prints each phase's throughput (requests / wall time), p50/p99 latency, and the CPU
# time Caddy used per request (from /proc/<pid>/stat: steadier than req/s when other work
# shares the machine).
# Limits are raised out of the way (send_interval 0s, per_alias and per_ip 1000000 1h):
# with the GCRA limits, a key's cost does not depend on what its window has seen.
#
# Run from anywhere:   bench/logins.sh
#   STORE=sqlite      or postgres: uses $PWL_BENCH_POSTGRES, or starts a throwaway
#                     PostgreSQL with .ci/postgres.sh (fsync off, like SQLite's
#                     synchronous=NORMAL it syncs at checkpoints only) and stops it after
#   CLIENTS="1 8 64"  concurrent clients, one round each
#   REQUESTS=3000     requests per phase and round
#   BASE_PORT=18090   first of the 2 ports used on 127.0.0.1
#   GODEBUG=          passed to caddy, e.g. gctrace=1 (its output is in caddy's log, shown
#                     only when a request fails)
#   ADMIN=off         or an address such as localhost:2999, to profile Caddy during a run
#                     (go tool pprof http://localhost:2999/debug/pprof/profile?seconds=5)
#   CADDY=./caddy     the binary to measure (another build, to set two side by side)
#   PER_IP="1000000 1h"  the per_ip limit (all requests come from 127.0.0.1): try
#                     "1000000 1s" to see that a long window costs nothing more
# It builds ./caddy with ./xcaddy.sh if missing. It exits 1 if setup fails or any request
# fails; it never fails on the numbers themselves.
set -euo pipefail

STORE=${STORE:-sqlite}
CLIENTS=${CLIENTS:-"1 8 64"}
REQUESTS=${REQUESTS:-3000}
BASE_PORT=${BASE_PORT:-18090}
PER_IP=${PER_IP:-"1000000 1h"}
CADDY=${CADDY:-}
ADMIN=${ADMIN:-off}

for v in REQUESTS BASE_PORT; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
		echo "$v must be a positive whole number, not '${!v}'" >&2
		exit 1
	fi
done
for c in $CLIENTS; do
	if ! [[ $c =~ ^[0-9]+$ ]] || [ "$c" -lt 1 ]; then
		echo "CLIENTS must be positive whole numbers, not '$CLIENTS'" >&2
		exit 1
	fi
done
if ! [[ $PER_IP =~ ^[0-9]+\ [0-9]+(ms|s|m|h)$ ]]; then
	echo "PER_IP must be a count and a window such as '1000000 1h', not '$PER_IP'" >&2
	exit 1
fi
case $STORE in sqlite | postgres) ;; *) echo "STORE must be sqlite or postgres, not '$STORE'" >&2; exit 1 ;; esac

PORT=$BASE_PORT
PORT_BACKEND=$((BASE_PORT + 1))

root=$(cd "$(dirname "$0")/.." && pwd)
case $CADDY in "") CADDY=$root/caddy ;; /*) ;; *) CADDY=$PWD/$CADDY ;; esac
cd "$root"
if [ "$CADDY" = "$root/caddy" ] && [ ! -x ./caddy ]; then
	echo "./caddy is missing: building it with ./xcaddy.sh" >&2
	./xcaddy.sh
fi
[ -x "$CADDY" ] || { echo "$CADDY is not an executable" >&2; exit 1; }

command -v curl >/dev/null 2>&1 || { echo "curl is required" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pwl-logins.XXXXXX")
caddy_pid=
pg_started=0
cleanup() {
	if [ -n "$caddy_pid" ]; then
		kill "$caddy_pid" 2>/dev/null || true
		wait "$caddy_pid" 2>/dev/null || true
	fi
	if [ "$pg_started" = 1 ]; then
		pwl_postgres_stop || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$tmp/loadgen" ./bench/loadgen

storage="storage sqlite $tmp/pwl.db"
if [ "$STORE" = postgres ]; then
	dsn=${PWL_BENCH_POSTGRES:-}
	if [ -z "$dsn" ]; then
		eval "$(.ci/postgres.sh 2>/dev/null)"
		pg_started=1
		dsn=$PWL_TEST_POSTGRES
	fi
	sep='?'
	[[ $dsn == *\?* ]] && sep='&'
	storage="storage postgres \"$dsn${sep}search_path=pwl_bench_$$\""
fi

for p in $PORT $PORT_BACKEND; do
	if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then
		echo "port $p is already in use on 127.0.0.1 (set BASE_PORT)" >&2
		exit 1
	fi
done

cat >"$tmp/Caddyfile" <<CADDY
{
	admin $ADMIN
	auto_https off
	skip_install_trust
	log default {
		level ERROR
	}
	log codes {
		output file $tmp/codes.log
		format json
		level WARN
		include http.handlers.passwordless
	}
}

http://:$PORT {
	bind 127.0.0.1
	passwordless {
		$storage
		email {
			log
		}
		jwt {
			ttl 1h
		}
		rate_limit {
			send_interval 0s
			per_alias 1000000 1h
			per_ip $PER_IP
		}
	}
	reverse_proxy 127.0.0.1:$PORT_BACKEND
}

http://:$PORT_BACKEND {
	bind 127.0.0.1
	respond "ok" 200
}
CADDY

XDG_DATA_HOME=$tmp/xdg-data XDG_CONFIG_HOME=$tmp/xdg-config \
	GODEBUG=${GODEBUG:-} "$CADDY" run --config "$tmp/Caddyfile" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
caddy_pid=$!
for i in $(seq 1 150); do
	if ! kill -0 "$caddy_pid" 2>/dev/null; then
		echo "caddy exited during startup; its log:" >&2
		cat "$tmp/caddy.log" >&2
		caddy_pid=
		exit 1
	fi
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/auth/jwks.json" || true)
	[ "$code" = 200 ] && break
	sleep 0.1
done
if [ "$code" != 200 ]; then
	echo "caddy did not answer within 15s; its log:" >&2
	cat "$tmp/caddy.log" >&2
	exit 1
fi

echo "passwordless sign-in benchmark: store $STORE, $(nproc) cores, $REQUESTS requests per phase, per_ip $PER_IP"
echo "caddy: $("$CADDY" version | cut -d' ' -f1), binary $CADDY of $(date -r "$CADDY" '+%F %T')"
status=0
round=0
for c in $CLIENTS; do
	round=$((round + 1))
	echo
	echo "== $c client(s) (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
	"$tmp/loadgen" -base "http://127.0.0.1:$PORT" -clients "$c" -n "$REQUESTS" \
		-codes "$tmp/codes.log" -tag "r$round-c$c" -pid "$caddy_pid" || status=1
done
if [ "$status" != 0 ]; then
	echo "some requests failed; caddy's log:" >&2
	tail -n 20 "$tmp/caddy.log" >&2
fi
exit "$status"
