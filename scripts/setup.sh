#!/usr/bin/env bash
# Create .venv with the project installed. Usage: scripts/setup.sh [--test]
# With --test, also installs the test tools and the system packages the suite runs for real
# (redis-server, prometheus/promtool, nginx, wrk), from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11+ is required" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
stamp=".venv/.installed${extras:+-test}"
# A test install includes the plain one (run.sh after test.sh must not reinstall).
if [ -z "$extras" ] && [ -f .venv/.installed-test ] && [ ! pyproject.toml -nt .venv/.installed-test ]; then
  stamp=".venv/.installed-test"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extras}"
  touch "$stamp"
fi

if [ "${1:-}" = "--test" ]; then
  need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  # `make bench`: wrk drives the load, nginx is the upstream and the proxy baseline.
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v nginx >/dev/null 2>&1 || need+=(nginx)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing ${need[*]} from Debian packages"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
      # The Debian packages start their services; the tests run their own on free ports.
      (command -v systemctl >/dev/null 2>&1 && systemctl stop prometheus nginx 2>/dev/null) || true
    else
      echo "setup: please install: ${need[*]} (tests need them)" >&2
      exit 1
    fi
  fi
fi
