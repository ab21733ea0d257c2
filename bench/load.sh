#!/usr/bin/env bash
# bench/load.sh — what the passwordless plugin costs on a protected route.
#
# One Caddy process (the ./caddy built with this plugin) serves, on 127.0.0.1 only:
#   A  :BASE_PORT      passwordless { … } + reverse_proxy to the backend   (token checked)
#   B  :BASE_PORT+1    the same reverse_proxy, without the plugin
#      :BASE_PORT+2    the backend: respond "ok" 200
#   C  :BASE_PORT+3    only with PASSTHROUGH=1: the plugin with `protect /nothing/*`,
#                      so it runs on every request but checks no token
# wrk sends GET / with a valid `Authorization: Bearer <jwt>` to each site (the same
# header to all of them), alternating the order of A and B (A B, B A, A B, …) after a
# short warm-up of each, and the script prints median(req/s) per site and the ratio
# median(A) / median(B), once with a JWT signed with EdDSA (the default, key generated
# and kept in SQLite) and once with HS256. The token comes from the `demo_user`, so no
# code is ever sent or read from a log. Caddy's own logs are at ERROR, no access logs.
# It also prints Caddy's CPU time per request for each site (from /proc/<pid>/stat):
# on a shared machine, where other work steals CPU from some runs, the ratio of those
# is a steadier view of the plugin's cost than req/s.
#
# Run from anywhere:   bench/load.sh
#   DURATION=10      seconds per measured wrk run
#   WARMUP=2         seconds of warm-up per site, per algorithm
#   ROUNDS=3         measured runs per site (the median is reported)
#   CONNECTIONS=32   wrk connections
#   THREADS=1        wrk threads (the machine has 2 cores; Caddy needs them)
#   BASE_PORT=18080  first of the 3 (or 4) ports used on 127.0.0.1
#   PASSTHROUGH=0    1 to also measure site C (plugin present, no token check)
#   ALGORITHMS="EdDSA HS256"
# It builds ./caddy with ./xcaddy.sh if missing, and installs wrk with apt-get when run
# as root. It exits 1 if setup or the sanity checks fail, or if any wrk phase got a
# response other than 2xx/3xx; it never fails on the ratio itself (the target is >= 0.97).
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
BASE_PORT=${BASE_PORT:-18080}
PASSTHROUGH=${PASSTHROUGH:-0}
ALGORITHMS=${ALGORITHMS:-"EdDSA HS256"}

for v in DURATION WARMUP ROUNDS CONNECTIONS THREADS BASE_PORT; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
		echo "$v must be a positive whole number, not '${!v}'" >&2
		exit 1
	fi
done
if [ "$THREADS" -gt "$CONNECTIONS" ]; then
	echo "THREADS ($THREADS) must not exceed CONNECTIONS ($CONNECTIONS)" >&2
	exit 1
fi

PORT_A=$BASE_PORT
PORT_B=$((BASE_PORT + 1))
PORT_BACKEND=$((BASE_PORT + 2))
PORT_C=$((BASE_PORT + 3))
DEMO_EMAIL=bench@example.com
DEMO_CODE=246810

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# --- prerequisites -----------------------------------------------------------------
if [ ! -x ./caddy ]; then
	echo "./caddy is missing: building it with ./xcaddy.sh" >&2
	./xcaddy.sh
fi
if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "wrk is missing: installing it with apt-get" >&2
		apt-get update && apt-get install -y wrk
	else
		echo "wrk is missing. Install it, e.g.: sudo apt-get update && sudo apt-get install -y wrk" >&2
		exit 1
	fi
fi
for tool in curl python3; do
	command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done

sites="A B"
[ "$PASSTHROUGH" = 1 ] && sites="A B C"
ports_in_use() {
	local p ports="$PORT_A $PORT_B $PORT_BACKEND"
	if [ "$PASSTHROUGH" = 1 ]; then ports="$ports $PORT_C"; fi
	for p in $ports; do
		if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then
			echo "$p"
		fi
	done
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pwl-bench.XXXXXX")
caddy_pid=
stop_caddy() {
	if [ -n "$caddy_pid" ]; then
		kill "$caddy_pid" 2>/dev/null || true
		wait "$caddy_pid" 2>/dev/null || true
		caddy_pid=
	fi
}
cleanup() {
	stop_caddy
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- config ------------------------------------------------------------------------
# plugin_block ALGORITHM PROTECT_PATHS
plugin_block() {
	local jwt
	if [ "$1" = HS256 ]; then
		# 48 bytes; a fixed secret is fine for a throwaway local benchmark.
		jwt="jwt {
			algorithm HS256
			secret bench-only-secret-0123456789abcdefghijklmnopqrstuv
			ttl 24h
		}"
	else
		jwt="jwt {
			ttl 24h
		}"
	fi
	cat <<EOF
	passwordless {
		storage sqlite $tmp/pwl.db
		demo_user $DEMO_EMAIL $DEMO_CODE
		email {
			log
		}
		$jwt
		rate_limit {
			per_ip 1000000 1h
		}
		protect $2
	}
EOF
}

# write_config ALGORITHM FILE
write_config() {
	{
		cat <<EOF
{
	admin off
	auto_https off
	skip_install_trust
	log {
		level ERROR
	}
}

# A: protected
http://:$PORT_A {
	bind 127.0.0.1
$(plugin_block "$1" '/*')
	reverse_proxy 127.0.0.1:$PORT_BACKEND
}

# B: the same route without the plugin
http://:$PORT_B {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$PORT_BACKEND
}

# backend
http://:$PORT_BACKEND {
	bind 127.0.0.1
	respond "ok" 200
}
EOF
		if [ "$PASSTHROUGH" = 1 ]; then
			cat <<EOF

# C: the plugin on the route, but protecting nothing the benchmark requests
http://:$PORT_C {
	bind 127.0.0.1
$(plugin_block "$1" '/nothing/*')
	reverse_proxy 127.0.0.1:$PORT_BACKEND
}
EOF
		fi
	} >"$2"
}

port_of() {
	case $1 in
	A) echo "$PORT_A" ;;
	B) echo "$PORT_B" ;;
	C) echo "$PORT_C" ;;
	esac
}

# start_caddy CONFIG: runs caddy in the background and waits until every site answers.
start_caddy() {
	local busy
	busy=$(ports_in_use)
	if [ -n "$busy" ]; then
		echo "port(s) already in use on 127.0.0.1: $busy (set BASE_PORT)" >&2
		exit 1
	fi
	# Caddy's data and config dirs go to the temp dir too, not to $HOME.
	XDG_DATA_HOME=$tmp/xdg-data XDG_CONFIG_HOME=$tmp/xdg-config \
		./caddy run --config "$1" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
	caddy_pid=$!
	local i code
	for i in $(seq 1 150); do
		if ! kill -0 "$caddy_pid" 2>/dev/null; then
			echo "caddy exited during startup; its log:" >&2
			cat "$tmp/caddy.log" >&2
			caddy_pid=
			exit 1
		fi
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT_BACKEND/" || true)
		if [ "$code" = 200 ]; then
			local all=1 s
			for s in $sites; do
				code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$(port_of "$s")/" || true)
				[ "$code" = 000 ] && all=0
			done
			[ "$all" = 1 ] && return 0
		fi
		sleep 0.1
	done
	echo "caddy did not answer on all ports within 15s; its log:" >&2
	cat "$tmp/caddy.log" >&2
	exit 1
}

get_token() {
	local body
	body=$(curl -s --max-time 10 -X POST \
		--data-urlencode "email=$DEMO_EMAIL" --data-urlencode "token=$DEMO_CODE" \
		"http://127.0.0.1:$PORT_A/auth/token" || true)
	python3 -c 'import json,sys
try:
    print(json.loads(sys.argv[1])["token"])
except Exception:
    sys.exit(1)' "$body" || {
		echo "could not get a token from /auth/token; answer: $body" >&2
		exit 1
	}
}

# sanity TOKEN: A refuses no token, accepts the token; B (and C) answer "ok".
sanity() {
	local code body s
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT_A/" || true)
	if [ "$code" != 401 ]; then
		echo "sanity: site A without a token answered $code, expected 401" >&2
		exit 1
	fi
	for s in $sites; do
		body=$(curl -s -w '\n%{http_code}' --max-time 5 -H "Authorization: Bearer $1" \
			"http://127.0.0.1:$(port_of "$s")/" || true)
		if [ "$body" != $'ok\n200' ]; then
			echo "sanity: site $s with the token answered $(printf %q "$body"), expected ok / 200" >&2
			exit 1
		fi
	done
}

# caddy_ticks: user+system CPU clock ticks Caddy has used so far.
caddy_ticks() {
	# Fields after "pid (comm)": state is $1, utime $12, stime $13.
	sed 's/^.*) //' "/proc/$caddy_pid/stat" | awk '{print $12 + $13}'
}
CLK_TCK=$(getconf CLK_TCK)

# run_wrk SITE SECONDS TOKEN LABEL: prints "REQ_PER_SEC CADDY_CPU_US_PER_REQUEST";
# exits 1 on non-2xx/3xx answers.
run_wrk() {
	local out rps non2xx errs reqs t0 t1
	t0=$(caddy_ticks)
	out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${2}s" --timeout 5s \
		-H "Authorization: Bearer $3" "http://127.0.0.1:$(port_of "$1")/" 2>&1) || {
		echo "wrk failed ($4, site $1):" >&2
		echo "$out" >&2
		exit 1
	}
	t1=$(caddy_ticks)
	non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")
	if [ -n "$non2xx" ] && [ "$non2xx" != 0 ]; then
		echo "FAIL: $4, site $1: $non2xx non-2xx/3xx responses; wrk said:" >&2
		echo "$out" >&2
		exit 1
	fi
	errs=$(awk '/Socket errors:/ {sub(/^ *Socket errors: */, ""); print}' <<<"$out")
	[ -n "$errs" ] && echo "  warning: $4, site $1: socket errors: $errs" >&2
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	reqs=$(awk '/ requests in / {print $1}' <<<"$out")
	if [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" = 0 ]; then
		echo "could not read Requests/sec from wrk ($4, site $1):" >&2
		echo "$out" >&2
		exit 1
	fi
	echo "$rps $(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}')"
}

median() {
	python3 -c 'import statistics,sys; print("%.0f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"
}
median1() {
	python3 -c 'import statistics,sys; print("%.1f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"
}
div() {
	python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "$1" "$2"
}

echo "passwordless load test: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS, ${DURATION}s x $ROUNDS rounds per site, ${WARMUP}s warm-up; sites: $sites"
echo "caddy: $(./caddy version | cut -d' ' -f1), binary $(date -r ./caddy '+%F %T')"

summary=()
for alg in $ALGORITHMS; do
	case $alg in EdDSA | HS256) ;; *) echo "unsupported algorithm $alg (EdDSA or HS256)" >&2; exit 1 ;; esac
	echo
	# Other work on the machine (builds, tests) skews req/s far more than the plugin does.
	echo "== $alg (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
	rm -f "$tmp"/pwl.db*
	write_config "$alg" "$tmp/Caddyfile"
	start_caddy "$tmp/Caddyfile"
	token=$(get_token)
	sanity "$token"
	echo "  sanity ok (401 without a token, 200 \"ok\" with it)"

	for s in $sites; do
		run_wrk "$s" "$WARMUP" "$token" "$alg warm-up" >/dev/null
	done

	declare -A rps_of=() cpu_of=()
	for s in $sites; do rps_of[$s]=""; cpu_of[$s]=""; done
	for r in $(seq 1 "$ROUNDS"); do
		# A B (C) in odd rounds, reversed in even ones, so drift hits both alike.
		order=$sites
		[ $((r % 2)) -eq 0 ] && order=$(tr ' ' '\n' <<<"$sites" | tac | tr '\n' ' ')
		line="  round $r:"
		for s in $order; do
			res=$(run_wrk "$s" "$DURATION" "$token" "$alg round $r")
			read -r rps cpu <<<"$res"
			rps_of[$s]="${rps_of[$s]} $rps"
			cpu_of[$s]="${cpu_of[$s]} $cpu"
			line="$line  $s $(printf '%.0f' "$rps") req/s (caddy ${cpu} us CPU/req)"
		done
		echo "$line"
	done

	# shellcheck disable=SC2086
	{
		med_a=$(median ${rps_of[A]})
		med_b=$(median ${rps_of[B]})
		cpu_a=$(median1 ${cpu_of[A]})
		cpu_b=$(median1 ${cpu_of[B]})
	}
	line="$alg: protected $med_a req/s, unprotected $med_b req/s, ratio $(div "$med_a" "$med_b")"
	line="$line  [caddy CPU/request: $cpu_a us vs $cpu_b us, CPU ratio $(div "$cpu_b" "$cpu_a")]"
	if [ "$PASSTHROUGH" = 1 ]; then
		# shellcheck disable=SC2086
		{
			med_c=$(median ${rps_of[C]})
			cpu_c=$(median1 ${cpu_of[C]})
		}
		line="$line; plugin pass-through (C): $med_c req/s, ratio $(div "$med_c" "$med_b") [$cpu_c us, CPU ratio $(div "$cpu_b" "$cpu_c")]"
	fi
	summary+=("$line")
	unset rps_of cpu_of
	stop_caddy
done

echo
echo "== summary (median of $ROUNDS x ${DURATION}s, wrk -t$THREADS -c$CONNECTIONS; target ratio >= 0.97)"
printf '%s\n' "${summary[@]}"
echo "(CPU ratio = Caddy CPU per unprotected request / per protected request: what the"
echo " throughput ratio would be if Caddy alone were CPU-bound; less sensitive to other load.)"
