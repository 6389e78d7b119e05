#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages (if absent) and starts a throwaway server on loopback.
# Prints the SQLAlchemy URL of a fresh database; used by .ci/run for the multi-worker study tests.
set -euo pipefail
PORT=${PGPORT:-54329}
DIR=${PGDIR:-/tmp/harness-pg}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
RUN_AS=""
[ "$(id -u)" = 0 ] && RUN_AS="runuser -u postgres --"
if ! $RUN_AS "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
  rm -rf "$DIR"; mkdir -p "$DIR"; [ -n "$RUN_AS" ] && chown postgres "$DIR"
  $RUN_AS "$BIN/initdb" -D "$DIR" -A trust -U harness >/dev/null
  $RUN_AS "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=200" start >/dev/null
fi
"$BIN/psql" -h 127.0.0.1 -p "$PORT" -U harness -d postgres -qtAc "SELECT 1" >/dev/null
echo "postgresql+psycopg2://harness@127.0.0.1:$PORT/postgres"
