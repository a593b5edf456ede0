#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on localhost, for the PostgreSQL-backed MLflow test.
#
#   tests/services/postgres.sh start STATE_DIR PORT   # prints the database URI when ready
#   tests/services/postgres.sh stop STATE_DIR
#
# Installs Debian's postgresql when missing (root + apt) and psycopg2-binary (the driver MLflow
# uses) when Python lacks it. The cluster lives in a fresh folder under /tmp (STATE_DIR/datadir
# names it) owned by the 'postgres' user when run as root (the server refuses to run as root),
# trusts local connections only, listens on 127.0.0.1:PORT, and has one database 'mlflow'.
# Exit status: 0 ready; 3 PostgreSQL cannot be installed here; 1 any other failure.
set -euo pipefail

cmd=${1:?usage: postgres.sh start STATE_DIR PORT | stop STATE_DIR}
STATE=${2:?usage: postgres.sh start STATE_DIR PORT | stop STATE_DIR}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
log() { echo "postgres: $*" >&2; }

pg_bin() {  # the folder of initdb/pg_ctl/createdb: Debian's newest versioned one, else PATH's
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"
  elif command -v initdb >/dev/null; then dirname "$(readlink -f "$(command -v initdb)")"
  fi
}

as_owner() {  # run a command as the cluster's owner (postgres when we are root)
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  PORT=${3:?usage: postgres.sh start STATE_DIR PORT}
  BIN=$(pg_bin)
  if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
      log "PostgreSQL missing and no root apt-get to install it"; exit 3
    fi
    log "installing postgresql (apt)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql; } \
         >"$STATE/apt.log" 2>&1; then
      log "apt-get install failed:"; tail -5 "$STATE/apt.log" >&2; exit 3
    fi
    BIN=$(pg_bin)
  fi
  PYTHON=${PYTHON:-python}  # the interpreter that will run mlflow server
  if ! "$PYTHON" -c "import psycopg2" 2>/dev/null; then
    log "installing psycopg2-binary (pip)"
    "$PYTHON" -m pip install --quiet psycopg2-binary >"$STATE/pip.log" 2>&1 \
      || { log "pip install psycopg2-binary failed"; tail -5 "$STATE/pip.log" >&2; exit 3; }
  fi
  # the server runs as a regular user; it needs every folder above its data readable
  DATA=$(mktemp -d /tmp/asknlearn-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres: "$DATA"
  chmod 0700 "$DATA"
  echo "$DATA" >"$STATE/datadir"
  as_owner "$BIN/initdb" -D "$DATA/data" -U postgres --auth=trust -E UTF8 >"$DATA/initdb.log" 2>&1 \
    || { log "initdb failed"; cat "$DATA/initdb.log" >&2; exit 1; }
  as_owner "$BIN/pg_ctl" -D "$DATA/data" -l "$DATA/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c fsync=off" >/dev/null \
    || { log "the server did not start"; cat "$DATA/server.log" >&2; exit 1; }
  as_owner "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres mlflow
  echo "postgresql://postgres@127.0.0.1:$PORT/mlflow"
  ;;
stop)
  [ -s "$STATE/datadir" ] || exit 0
  DATA=$(cat "$STATE/datadir")
  if [ -d "$DATA/data" ]; then
    as_owner "$(pg_bin)/pg_ctl" -D "$DATA/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  cp "$DATA/server.log" "$STATE/server.log" 2>/dev/null || true
  rm -rf "$DATA" "$STATE/datadir"
  ;;
*)
  echo "usage: postgres.sh start STATE_DIR PORT | stop STATE_DIR" >&2; exit 2 ;;
esac
