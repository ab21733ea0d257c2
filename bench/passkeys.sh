#!/usr/bin/env bash
# bench/passkeys.sh — does a passkey sign-in cost more than a code's?
#
# Runs, with the same SQLite store setup, the handler
# benchmarks (no network, no Caddy server) of
#   - a code request   POST /auth/email (limits, code, outbox row)
#   - a code exchange  POST /auth/token (EdDSA tokens)
#   - a passkey sign-in POST /auth/passkeys/login/begin then /login/finish
#                      (EdDSA tokens; the authenticator's signature is made
#                      outside the timer, as the client makes it)
#   - the signature check alone: the library's P-256 check of an assertion
#                      from the stored COSE key, which a finish makes and an
#                      exchange has no counterpart for
# and prints each one's time and three ratios: passkey sign-in against the
# exchange alone, against a whole code sign-in (request + exchange), and,
# without its signature check, against the exchange alone.
# It never fails on the numbers.
#   BENCHTIME=2000x   iterations of each (go test -benchtime)
set -euo pipefail
cd "$(dirname "$0")/.."
bench() { go test -run '^$' -bench "$1" -benchtime "${BENCHTIME:-2000x}" -count 1 .; }
out="$(bench '^BenchmarkCodeRequest$')
$(bench '^Benchmark(Exchange|PasskeySignIn)$/^EdDSA$')
$(bench '^BenchmarkPasskeySignatureCheck$')"
# Only the result lines: the handlers' log lines may follow a benchmark's name.
out="$(echo "$out" | grep -E '^Benchmark.*ns/op')"
echo "$out"
echo "$out" | awk '
	/^BenchmarkCodeRequest/          { req = $3 }
	/^BenchmarkExchange\/EdDSA/      { code = $3 }
	/^BenchmarkPasskeySignIn\/EdDSA/ { pk = $3 }
	/^BenchmarkPasskeySignatureCheck/ { sig = $3 }
	END {
		if (req == 0 || code == 0 || pk == 0 || sig == 0) { print "benchmarks missing"; exit 1 }
		printf "passkey sign-in / code exchange:                   %.2f\n", pk / code
		printf "passkey sign-in / code sign-in (request+exchange): %.2f\n", pk / (req + code)
		printf "passkey sign-in less its signature check / code exchange: %.2f\n", (pk - sig) / code
	}'
