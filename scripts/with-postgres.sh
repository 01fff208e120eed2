#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL server: a fresh cluster in a temporary folder,
# reachable only through a Unix socket there, removed afterwards. The command sees
# KEEL_TEST_POSTGRES_URL (an admin URL whose user may create databases).
#
#   scripts/with-postgres.sh pytest -q
#
# The server is PostgreSQL 16 with the pgvector extension, from the `pgserver` package that
# the `dev` extra installs into the virtual environment (KEEL_PYTHON, default .venv/bin/python).
# Without it, Debian's PostgreSQL is used instead (installed first if missing; needs root),
# which has no pgvector: the pgvector tests then skip, or fail under KEEL_TEST_PGVECTOR=required.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${KEEL_PYTHON:-$ROOT/.venv/bin/python}

# The bin folder of pgserver's bundled PostgreSQL, found without importing pgserver (whose
# import creates folders and warns about XDG_RUNTIME_DIR).
pgserver_bin() {
  [ -x "$PYTHON" ] || return 0
  "$PYTHON" - <<'PY' 2>/dev/null || true
import importlib.util, pathlib
spec = importlib.util.find_spec("pgserver")
if spec and spec.submodule_search_locations:
    bin = pathlib.Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    if (bin / "initdb").is_file():
        print(bin)
PY
}

find_debian_bin() {
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}

PGBIN=$(pgserver_bin)
PGVECTOR=yes
if [ -z "$PGBIN" ]; then
  PGVECTOR=no
  PGBIN=$(find_debian_bin || true)
  if [ -z "$PGBIN" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "No PostgreSQL server found: $PYTHON has no pgserver package and there is no" \
        "system PostgreSQL. Install the 'dev' extra (make test, or pip install -c" \
        "constraints.txt -e '.[dev]': it brings pgserver, PostgreSQL 16 with pgvector) or point" \
        "KEEL_PYTHON at a Python that has it; or install Debian's 'postgresql' package as root" \
        "(without pgvector)." >&2
      exit 1
    fi
    echo "Installing PostgreSQL (Debian package)…" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PGBIN=$(find_debian_bin)
  fi
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

if [ "$PGVECTOR" = yes ] && ! as_owner "$PGBIN/postgres" --version >/dev/null 2>&1; then
  # The postgres user cannot reach the virtual environment (a home folder closed to others):
  # run a copy. The binaries find lib/, share/ and ../../pgserver.libs relative to themselves.
  SITE=$(dirname "$(dirname "$(dirname "$PGBIN")")")
  mkdir -p "$DIR/pg/pgserver"
  cp -r "$SITE/pgserver/pginstall" "$DIR/pg/pgserver/"
  [ -d "$SITE/pgserver.libs" ] && cp -r "$SITE/pgserver.libs" "$DIR/pg/"
  chmod -R a+rX "$DIR/pg"
  PGBIN=$DIR/pg/pgserver/pginstall/bin
fi

as_owner "$PGBIN/initdb" -D "$DIR/data" -U keel --auth=trust -E UTF8 >/dev/null
as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
  -o "-c listen_addresses='' -k $DIR -p $PORT -c fsync=on -c max_connections=200" start >/dev/null
export KEEL_TEST_POSTGRES_URL="postgresql+psycopg://keel@/postgres?host=$DIR&port=$PORT"
VERSION=$("$PGBIN/postgres" --version | awk '{print $3}')
if [ "$PGVECTOR" = yes ]; then
  echo "PostgreSQL $VERSION with pgvector (pgserver) on $DIR:$PORT" >&2
else
  echo "PostgreSQL $VERSION on $DIR:$PORT, WITHOUT pgvector: install the 'dev' extra (pgserver)" \
    "for the pgvector tests." >&2
fi
set +e
"$@"
status=$?
exit $status
