#!/usr/bin/env bash
# Set up and run the gateway on 127.0.0.1:8080 in front of the bundled upstream on 127.0.0.1:8081,
# on embedded development defaults (no Redis; dev-only secrets, refused when GATEWAY_ENV=production).
# Ctrl-C or SIGTERM stops everything this script started (gateway, its workers, the upstream).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export UPSTREAM_PORT=${UPSTREAM_PORT:-8081}
export GATEWAY_UPSTREAM_URL=${GATEWAY_UPSTREAM_URL:-http://127.0.0.1:${UPSTREAM_PORT}}
export UPSTREAM_DB=${UPSTREAM_DB:-./upstream.db}

children=()
stopping=0
stop_children() {
  # Children run in the background so that a signal to this script is handled at once (bash runs
  # a trap only after a foreground child returns), and each one gets SIGTERM: the gateway drains
  # and exits, the upstream closes its store. Whatever is still alive after the grace is killed.
  [ "$stopping" = 1 ] && return
  stopping=1
  local pid deadline
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  deadline=$((SECONDS + ${GATEWAY_DRAIN_DELAY:-5} + 30))
  for pid in "${children[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap 'stop_children; exit 130' INT
trap 'stop_children; exit 143' TERM
trap 'stop_children' EXIT

.venv/bin/python -m upstream_stub &
children+=($!)
.venv/bin/python - <<'PY'
import socket, time, os
port = int(os.environ["UPSTREAM_PORT"])
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); break
    except OSError:
        time.sleep(0.1)
PY
echo "upstream on 127.0.0.1:${UPSTREAM_PORT}; gateway on ${GATEWAY_HOST:-127.0.0.1}:${GATEWAY_PORT:-8080}" >&2
.venv/bin/python -m gateway serve &
gateway_pid=$!
children+=("$gateway_pid")
set +e
wait "$gateway_pid"
rc=$?
set -e
exit "$rc"
