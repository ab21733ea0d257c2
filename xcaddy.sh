#!/usr/bin/env bash
# Builds a Caddy binary with this plugin (from this working tree) and the
# standard modules. Usage: ./xcaddy.sh [OUTPUT]   (default: ./caddy)
# Needs only Go: xcaddy is installed with `go install` when missing.
set -euo pipefail

CADDY_VERSION=v2.11.9
XCADDY_VERSION=v0.4.5

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/caddy}
case $out in /*) ;; *) out=$PWD/$out ;; esac

xcaddy=$(command -v xcaddy || true)
if [ -z "$xcaddy" ]; then
	gobin=$(go env GOBIN)
	[ -n "$gobin" ] || gobin=$(go env GOPATH)/bin
	if [ ! -x "$gobin/xcaddy" ]; then
		echo "installing xcaddy $XCADDY_VERSION" >&2
		go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
	fi
	xcaddy=$gobin/xcaddy
fi

# A version that exists nowhere but here: go resolves it by the replace
# xcaddy writes, without asking the module proxy for this module.
module=$(cd "$here" && go list -m)
cd "$here"
CGO_ENABLED=0 "$xcaddy" build "$CADDY_VERSION" --output "$out" --with "$module@v0.0.0=$here"
echo "built $out" >&2
