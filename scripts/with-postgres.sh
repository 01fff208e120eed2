#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL server: a fresh cluster in a temporary folder,
# reachable only through a Unix socket there, removed afterwards. The command sees
# KEEL_TEST_POSTGRES_URL (an admin URL whose user may create databases).
#
#   scripts/with-postgres.sh pytest -q
#
# Installs Debian's postgresql package first if no server binaries are found (needs root).
set -euo pipefail

find_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

PGBIN=$(find_bin || true)
if [ -z "$PGBIN" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL server binaries not found; install the 'postgresql' package (as root)." >&2
    exit 1
  fi
  echo "Installing PostgreSQL (Debian package)…" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(find_bin)
fi

DIR=$(mktemp -d /tmp/keel-pg.XXXXXX)
PORT=$(( 20000 + RANDOM % 20000 ))
as_owner() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  # initdb refuses to run as root: the cluster belongs to the postgres system user.
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$DIR"
  as_owner() { runuser -u postgres -- "$@"; }
fi

cleanup() {
  as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

as_owner "$PGBIN/initdb" -D "$DIR/data" -U keel --auth=trust -E UTF8 >/dev/null
as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
  -o "-c listen_addresses='' -k $DIR -p $PORT -c fsync=on -c max_connections=200" start >/dev/null
export KEEL_TEST_POSTGRES_URL="postgresql+psycopg://keel@/postgres?host=$DIR&port=$PORT"
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on $DIR:$PORT" >&2
set +e
"$@"
status=$?
exit $status
