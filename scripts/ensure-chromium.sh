#!/usr/bin/env bash
# Make sure Debian's chromium is here: the browser tests and `make docs-screenshots` drive
# it through Playwright (which never downloads a browser of its own). Installs the package
# when it is missing and we are root; otherwise says so, and the browser tests skip with
# that reason (under CI=true they fail instead).
set -euo pipefail

[ -x /usr/lib/chromium/chromium ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "Debian's chromium is not installed (apt-get install chromium, as root): the browser tests will be skipped." >&2
  exit 0
fi
echo "Installing chromium (Debian package)…" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
