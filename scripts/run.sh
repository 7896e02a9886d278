#!/usr/bin/env bash
# Set up and run the gateway on 127.0.0.1:8080 in front of the bundled upstream on 127.0.0.1:8081,
# on embedded development defaults (no Redis; dev-only secrets, refused when GATEWAY_ENV=production).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export UPSTREAM_PORT=${UPSTREAM_PORT:-8081}
export GATEWAY_UPSTREAM_URL=${GATEWAY_UPSTREAM_URL:-http://127.0.0.1:${UPSTREAM_PORT}}
export UPSTREAM_DB=${UPSTREAM_DB:-./upstream.db}
.venv/bin/python -m upstream_stub &
upstream_pid=$!
trap 'kill -TERM $upstream_pid 2>/dev/null; wait $upstream_pid 2>/dev/null' EXIT
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
.venv/bin/python -m gateway serve
