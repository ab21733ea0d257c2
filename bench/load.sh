#!/usr/bin/env bash
# bench/load.sh — what the passwordless plugin costs on a protected route.
#
# One Caddy process (the ./caddy built with this plugin) serves, on 127.0.0.1 only:
#   A  :BASE_PORT      passwordless { … } + reverse_proxy to the backend   (token checked)
#   B  :BASE_PORT+1    the same reverse_proxy, without the plugin
#      :BASE_PORT+2    the backend: respond "ok" 200, in a second Caddy process, as an
#                      app runs apart from its proxy (what it spends reading the identity
#                      headers is the app's, not Caddy's)
#   C  :BASE_PORT+3    only with PASSTHROUGH=1: the plugin with `protect /nothing/*`,
#                      so it runs on every request but checks no token
#   D  :BASE_PORT+4    the stock `forward_auth` to E, then the same reverse_proxy
#   E  :BASE_PORT+5    passwordless alone: {prefix}/check for D (127.0.0.1 is a trusted proxy)
#   F  :BASE_PORT+6    the same forward_auth to G, which allows everything: the hop's own cost
#   G  :BASE_PORT+7    respond 200
# wrk sends GET / to each site with the same credentials, in two ways: a valid
# `Authorization: Bearer <jwt>` (to A and B), and a browser's `Cookie` header of about
# 2.7 KB that carries another app's cookies around the session cookie (to A, B and D),
# alternating the order of the runs (A B …, … B A, …) after a short warm-up of each,
# and the script prints median(req/s) per run and the ratios to the plain proxy B with
# the same header (D's Caddy CPU against A's plus the forward_auth hop, F - B), once with a JWT signed with EdDSA (the default, key generated and
# kept in SQLite) and once with HS256. The token comes from the `demo_user`, so no
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
#   CADDY=./caddy    the binary to measure (another build, to set two side by side)
#   INSTRUCTIONS=0   N > 0: instead of wrk runs, count the instructions Caddy executes per
#                    request (valgrind's callgrind; installed with apt-get as root): Caddy
#                    runs under callgrind, and each site gets N requests from
#                    bench/fixedload (CONNECTIONS of them at once, at most 8), after N/5
#                    unmeasured ones. Instruction counts do not move with other work on
#                    the machine, so the ratios need no quiet machine and no rounds.
#   CALLGRIND_DIR=   with INSTRUCTIONS, keep each site's callgrind dump there, to read
#                    with callgrind_annotate
#   CALLGRIND_ARGS=  more valgrind options, e.g. --dump-instr=yes
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
INSTRUCTIONS=${INSTRUCTIONS:-0}
CALLGRIND_DIR=${CALLGRIND_DIR:-}
CALLGRIND_ARGS=${CALLGRIND_ARGS:-}
CADDY=${CADDY:-}

for v in DURATION WARMUP ROUNDS CONNECTIONS THREADS BASE_PORT INSTRUCTIONS; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || { [ "${!v}" -lt 1 ] && [ "$v" != INSTRUCTIONS ]; }; then
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
PORT_D=$((BASE_PORT + 4))
PORT_E=$((BASE_PORT + 5))
PORT_F=$((BASE_PORT + 6))
PORT_G=$((BASE_PORT + 7))
DEMO_EMAIL=bench@example.com
DEMO_CODE=246810

root=$(cd "$(dirname "$0")/.." && pwd)
case $CADDY in "") CADDY=$root/caddy ;; /*) ;; *) CADDY=$PWD/$CADDY ;; esac
cd "$root"

# --- prerequisites -----------------------------------------------------------------
if [ "$CADDY" = "$root/caddy" ] && [ ! -x ./caddy ]; then
	echo "./caddy is missing: building it with ./xcaddy.sh" >&2
	./xcaddy.sh
fi
[ -x "$CADDY" ] || { echo "$CADDY is not an executable" >&2; exit 1; }
if ! command -v wrk >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "wrk is missing: installing it with apt-get" >&2
		apt-get update && apt-get install -y wrk
	else
		echo "wrk is missing. Install it, e.g.: sudo apt-get update && sudo apt-get install -y wrk" >&2
		exit 1
	fi
fi
if [ "$INSTRUCTIONS" -gt 0 ] && ! command -v callgrind_control >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "valgrind is missing: installing it with apt-get" >&2
		apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y valgrind >&2
	else
		echo "valgrind is missing. Install it, e.g.: sudo apt-get install -y valgrind" >&2
		exit 1
	fi
fi
for tool in curl python3; do
	command -v "$tool" >/dev/null 2>&1 || { echo "$tool is required" >&2; exit 1; }
done

sites="A B D F"
[ "$PASSTHROUGH" = 1 ] && sites="A B C D F"
# The measured runs, SITE:CREDENTIALS.
runs="A:bearer B:bearer A:cookie B:cookie D:cookie F:cookie"
[ "$PASSTHROUGH" = 1 ] && runs="$runs C:bearer"
ports_in_use() {
	local p ports="$PORT_A $PORT_B $PORT_BACKEND $PORT_D $PORT_E $PORT_F $PORT_G"
	if [ "$PASSTHROUGH" = 1 ]; then ports="$ports $PORT_C"; fi
	for p in $ports; do
		if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then
			echo "$p"
		fi
	done
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pwl-bench.XXXXXX")
caddy_pid=
backend_pid=
stop_caddy() {
	local pid
	for pid in "$caddy_pid" "$backend_pid"; do
		if [ -n "$pid" ]; then
			kill "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done
	caddy_pid= backend_pid=
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

# write_backend_config FILE: the app behind the proxies, in a Caddy process of its
# own as an app is: what it spends reading the identity headers is not the proxy's.
write_backend_config() {
	cat >"$1" <<EOF
{
	admin off
	auto_https off
	skip_install_trust
	log {
		level ERROR
	}
}

http://:$PORT_BACKEND {
	bind 127.0.0.1
	respond "ok" 200
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
	servers {
		trusted_proxies static 127.0.0.1/32
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

# D: another proxy in front, asking E
http://:$PORT_D {
	bind 127.0.0.1
	forward_auth 127.0.0.1:$PORT_E {
		uri /auth/check
		copy_headers X-Auth-User-Id X-Auth-User-Email X-Auth-User-Mobile X-Auth-User-Roles
	}
	reverse_proxy 127.0.0.1:$PORT_BACKEND
}

# E: the check D asks (no host: it answers whatever Host D sends)
http://:$PORT_E {
	bind 127.0.0.1
$(plugin_block "$1" '/*')
}

# F: the same hop to a check that allows everything
http://:$PORT_F {
	bind 127.0.0.1
	forward_auth 127.0.0.1:$PORT_G {
		uri /auth/check
		copy_headers X-Auth-User-Id X-Auth-User-Email X-Auth-User-Mobile X-Auth-User-Roles
	}
	reverse_proxy 127.0.0.1:$PORT_BACKEND
}

http://:$PORT_G {
	bind 127.0.0.1
	respond 200
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
	D) echo "$PORT_D" ;;
	F) echo "$PORT_F" ;;
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
	local under=() tries=150
	if [ "$INSTRUCTIONS" -gt 0 ]; then
		# Under callgrind, Caddy starts in tens of seconds. Go's preemption
		# signals, sent while a signal is being handled, crash callgrind:
		# asyncpreemptoff (the same for every site measured). Valgrind does not
		# know RDTSCP, which Go uses where the CPU has it: cpu.rdtscp=off.
		under=(env GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out" $CALLGRIND_ARGS)
		tries=1800
	fi
	write_backend_config "$tmp/Caddyfile.backend"
	XDG_DATA_HOME=$tmp/xdg-data XDG_CONFIG_HOME=$tmp/xdg-config \
		"$CADDY" run --config "$tmp/Caddyfile.backend" --adapter caddyfile >"$tmp/backend.log" 2>&1 &
	backend_pid=$!
	XDG_DATA_HOME=$tmp/xdg-data XDG_CONFIG_HOME=$tmp/xdg-config \
		"${under[@]}" "$CADDY" run --config "$1" --adapter caddyfile >"$tmp/caddy.log" 2>&1 &
	caddy_pid=$!
	local i code
	for i in $(seq 1 "$tries"); do
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
	echo "caddy did not answer on all ports within $((tries / 10))s; its log:" >&2
	cat "$tmp/caddy.log" >&2
	exit 1
}

get_token() {
	local body
	body=$(curl -s --max-time 60 -X POST \
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

# get_cookie: the session cookie of a browser sign-in on A, as NAME=VALUE.
get_cookie() {
	local c
	c=$(curl -s -o /dev/null -D - --max-time 60 -H "Origin: http://127.0.0.1:$PORT_A" \
		--data-urlencode "alias=$DEMO_EMAIL" --data-urlencode "code=$DEMO_CODE" \
		"http://127.0.0.1:$PORT_A/auth/login" | sed -n 's/^[Ss]et-[Cc]ookie: \(pwl_session=[^;]*\).*/\1/p' | tr -d '\r')
	if [ -z "$c" ]; then
		echo "could not sign in at /auth/login for a cookie" >&2
		exit 1
	fi
	echo "$c"
}

# browser_cookies SESSION: a Cookie header as a browser sends it to an app of a
# domain: analytics, a consent record and another app's 2 KB session around ours.
browser_cookies() {
	python3 -c 'import base64,sys
other = base64.urlsafe_b64encode(bytes(range(256)) * 6).decode()[:2000]
print("_ga=GA1.1.1234567890.1700000000; _ga_ABCDEF1234=GS1.1.1700000000.12.1.1700000100.0.0.0; "
      "consent=%7B%22necessary%22%3Atrue%2C%22analytics%22%3Atrue%2C%22marketing%22%3Afalse%7D; "
      "other_app_session=" + other + "; " + sys.argv[1] + "; theme=dark; lang=en-GB; "
      "_gid=GA1.2.987654321.1700000000; csrftoken=" + "x" * 64)' "$1"
}

# header_of CREDENTIALS: the request header wrk sends.
header_of() {
	case $1 in
	bearer) echo "Authorization: Bearer $token" ;;
	cookie) echo "Cookie: $cookies" ;;
	esac
}

# sanity: A and D refuse no credentials and accept both kinds; B (and C) answer "ok".
sanity() {
	local code body s creds
	for s in A D; do
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "http://127.0.0.1:$(port_of "$s")/" || true)
		if [ "$code" != 401 ]; then
			echo "sanity: site $s without credentials answered $code, expected 401" >&2
			exit 1
		fi
	done
	for run in $runs A:cookie D:bearer; do
		s=${run%%:*} creds=${run#*:}
		body=$(curl -s -w '\n%{http_code}' --max-time 60 -H "$(header_of "$creds")" \
			"http://127.0.0.1:$(port_of "$s")/" || true)
		if [ "$body" != $'ok\n200' ]; then
			echo "sanity: site $s with the $creds answered $(printf %q "$body"), expected ok / 200" >&2
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

# run_wrk SITE SECONDS HEADER LABEL: prints "REQ_PER_SEC CADDY_CPU_US_PER_REQUEST";
# exits 1 on non-2xx/3xx answers.
run_wrk() {
	local out rps non2xx errs reqs t0 t1
	t0=$(caddy_ticks)
	out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${2}s" --timeout 5s \
		-H "$3" "http://127.0.0.1:$(port_of "$1")/" 2>&1) || {
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

# run_instr SITE HEADER LABEL: prints the instructions Caddy executed per request
# (callgrind's count, between a --zero and a --dump around INSTRUCTIONS requests).
run_instr() {
	local url c dumps before after
	url="http://127.0.0.1:$(port_of "$1")/"
	c=$((CONNECTIONS < 8 ? CONNECTIONS : 8))
	"$fixedload" -url "$url" -n $((INSTRUCTIONS / 5 + 1)) -c "$c" -H "$2" || { echo "FAIL: $3, site $1 (warm-up)" >&2; exit 1; }
	callgrind_control --zero "$caddy_pid" >/dev/null 2>&1
	"$fixedload" -url "$url" -n "$INSTRUCTIONS" -c "$c" -H "$2" || { echo "FAIL: $3, site $1" >&2; exit 1; }
	before=$(ls "$tmp"/callgrind.out* 2>/dev/null | wc -l)
	callgrind_control --dump="$3 $1" "$caddy_pid" >/dev/null 2>&1
	after=$(ls -t "$tmp"/callgrind.out* | head -n 1)
	if [ "$(ls "$tmp"/callgrind.out* | wc -l)" -le "$before" ]; then
		echo "callgrind wrote no dump for $3, site $1" >&2
		exit 1
	fi
	if [ -n "$CALLGRIND_DIR" ]; then
		mkdir -p "$CALLGRIND_DIR"
		cp "$after" "$CALLGRIND_DIR/callgrind.${3// /-}-$1"
	fi
	awk -v n="$INSTRUCTIONS" '/^(summary|totals):/ {print int($2 / n); exit}' "$after"
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

fixedload=
if [ "$INSTRUCTIONS" -gt 0 ]; then
	fixedload=$tmp/fixedload
	go build -o "$fixedload" ./bench/fixedload
fi

echo "passwordless load test: $(nproc) cores, wrk -t$THREADS -c$CONNECTIONS, ${DURATION}s x $ROUNDS rounds per site, ${WARMUP}s warm-up; sites: $sites"
echo "caddy: $("$CADDY" version | cut -d' ' -f1), binary $CADDY of $(date -r "$CADDY" '+%F %T')"

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
	cookies=$(browser_cookies "$(get_cookie)")
	sanity
	echo "  sanity ok (401 without credentials, 200 \"ok\" with a token or a $(printf %s "$cookies" | wc -c)-byte Cookie header)"

	if [ "$INSTRUCTIONS" -gt 0 ]; then
		declare -A ins=()
		line="  instructions per request:"
		for run in $runs; do
			ins[$run]=$(run_instr "${run%%:*}" "$(header_of "${run#*:}")" "$alg ${run#*:}")
			line="$line  $run ${ins[$run]}"
		done
		echo "$line"
		for creds in bearer cookie; do
			summary+=("$alg $creds: instructions per request protected ${ins[A:$creds]}, unprotected ${ins[B:$creds]}, ratio $(div "${ins[B:$creds]}" "${ins[A:$creds]}") (the plugin's own: $((ins[A:$creds] - ins[B:$creds])))")
		done
		hop=$((ins[A:cookie] + ins[F:cookie] - ins[B:cookie]))
		summary+=("$alg cookie, forward_auth to /check: ${ins[D:cookie]} instructions per request vs protected in Caddy + the forward_auth hop $hop, ratio $(div "$hop" "${ins[D:cookie]}")")
		summary+=("$alg: cookie over bearer in Caddy: $((ins[A:cookie] - ins[A:bearer])) instructions per request, the plain proxy's $((ins[B:cookie] - ins[B:bearer]))")
		unset ins
		stop_caddy
		continue
	fi
	for run in $runs; do
		run_wrk "${run%%:*}" "$WARMUP" "$(header_of "${run#*:}")" "$alg warm-up" >/dev/null
	done

	declare -A rps_of=() cpu_of=()
	for run in $runs; do rps_of[$run]=""; cpu_of[$run]=""; done
	for r in $(seq 1 "$ROUNDS"); do
		# In order in odd rounds, reversed in even ones, so drift hits all alike.
		order=$runs
		[ $((r % 2)) -eq 0 ] && order=$(tr ' ' '\n' <<<"$runs" | tac | tr '\n' ' ')
		line="  round $r:"
		for run in $order; do
			res=$(run_wrk "${run%%:*}" "$DURATION" "$(header_of "${run#*:}")" "$alg round $r")
			read -r rps cpu <<<"$res"
			rps_of[$run]="${rps_of[$run]} $rps"
			cpu_of[$run]="${cpu_of[$run]} $cpu"
			line="$line  $run $(printf '%.0f' "$rps")/s ${cpu}us"
		done
		echo "$line"
	done

	declare -A med=() cpu=()
	for run in $runs; do
		# shellcheck disable=SC2086
		med[$run]=$(median ${rps_of[$run]})
		# shellcheck disable=SC2086
		cpu[$run]=$(median1 ${cpu_of[$run]})
	done
	for creds in bearer cookie; do
		line="$alg $creds: protected ${med[A:$creds]} req/s, unprotected ${med[B:$creds]} req/s, ratio $(div "${med[A:$creds]}" "${med[B:$creds]}")"
		line="$line  [caddy CPU/request: ${cpu[A:$creds]} us vs ${cpu[B:$creds]} us, CPU ratio $(div "${cpu[B:$creds]}" "${cpu[A:$creds]}")]"
		summary+=("$line")
	done
	hop=$(python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) + float(sys.argv[2]) - float(sys.argv[3])))' "${cpu[A:cookie]}" "${cpu[F:cookie]}" "${cpu[B:cookie]}")
	line="$alg cookie, forward_auth to /check: ${med[D:cookie]} req/s, ratio to unprotected $(div "${med[D:cookie]}" "${med[B:cookie]}"), to protected in Caddy $(div "${med[D:cookie]}" "${med[A:cookie]}"), to forward_auth allowing all $(div "${med[D:cookie]}" "${med[F:cookie]}")"
	line="$line  [caddy CPU/request: ${cpu[D:cookie]} us vs protected in Caddy + the forward_auth hop ${hop} us, CPU ratio $(div "$hop" "${cpu[D:cookie]}")]"
	summary+=("$line")
	summary+=("$alg: bearer vs cookie in Caddy: CPU/request ${cpu[A:bearer]} us vs ${cpu[A:cookie]} us, cost over the plain proxy $(div "${cpu[A:bearer]}" "${cpu[B:bearer]}")x vs $(div "${cpu[A:cookie]}" "${cpu[B:cookie]}")x")
	if [ "$PASSTHROUGH" = 1 ]; then
		summary+=("$alg: plugin pass-through (C): ${med[C:bearer]} req/s, ratio $(div "${med[C:bearer]}" "${med[B:bearer]}") [${cpu[C:bearer]} us, CPU ratio $(div "${cpu[B:bearer]}" "${cpu[C:bearer]}")]")
	fi
	unset rps_of cpu_of med cpu
	stop_caddy
done

echo
if [ "$INSTRUCTIONS" -gt 0 ]; then
	echo "== summary (instructions Caddy executed per request, callgrind, $INSTRUCTIONS requests per site; ratio = unprotected / protected, target >= 0.97)"
else
	echo "== summary (median of $ROUNDS x ${DURATION}s, wrk -t$THREADS -c$CONNECTIONS; target ratio >= 0.97)"
fi
printf '%s\n' "${summary[@]}"
[ "$INSTRUCTIONS" -gt 0 ] && exit 0
echo "(CPU ratio = Caddy CPU per unprotected request / per protected request: what the"
echo " throughput ratio would be if Caddy alone were CPU-bound; less sensitive to other load."
echo " For forward_auth, Caddy's CPU counts both hops and the check: it is compared with the"
echo " protected route plus what the forward_auth hop costs by itself (F - B), target >= 1.)"
