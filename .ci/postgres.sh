#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the tests and prints the line to export:
#   eval "$(.ci/postgres.sh)"    # then: go test ./...
# Installs Debian's postgresql when it is missing (as root). The cluster
# lives in a temporary directory, listens on 127.0.0.1 only (the first free
# port from ${PGPORT:-55432}),
# and trusts local connections: it is for tests, never for data.
set -euo pipefail

port=${PGPORT:-55432}
# Take the next port nobody listens on, so a cluster left running does not
# stand in the way.
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
	port=$((port + 1))
done
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "postgresql is not installed; run as root or: apt-get install -y postgresql" >&2
		exit 1
	fi
	echo "installing postgresql" >&2
	apt-get update >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

dir=$(mktemp -d /tmp/pwl-postgres.XXXXXX)
run=()
if [ "$(id -u)" = 0 ]; then
	# initdb refuses to run as root.
	chown postgres "$dir"
	run=(runuser -u postgres --)
fi
"${run[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 ||
	{ cat "$dir/initdb.log" >&2; exit 1; }
"${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
	-o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >&2 ||
	{ cat "$dir/server.log" >&2; exit 1; }
echo "export PWL_TEST_POSTGRES='postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable'"
echo "pwl_postgres_stop() { ${run[*]} $bin/pg_ctl -D $dir/data -m immediate stop >/dev/null; rm -rf $dir; }"
echo "# stop with: pwl_postgres_stop (or ${run[*]} $bin/pg_ctl -D $dir/data stop)" >&2
