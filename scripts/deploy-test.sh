#!/usr/bin/env bash
# The deployment proven in real containers: build the image, bring up deploy/compose.yaml with
# generated secrets (two gateway replicas behind nginx, Redis, the upstream on PostgreSQL when this
# version of it has the PostgreSQL store (else SQLite), Prometheus), run the smoke test through
# the load balancer (scripts/deploy_smoke.py), tear everything down.
#
# Usage: scripts/deploy-test.sh [--keep]        (or `make deploy-test`)
#   --keep                 leave the stack running afterwards (prints how to stop it)
# Environment:
#   PYTHON_IMAGE           base image; default: python:3.11-slim if it can be pulled, else a local
#                          Debian bookworm base made with debootstrap and cached as
#                          edge-gateway-base:bookworm (redis/nginx/postgres/prometheus are then
#                          built from Debian's packages too: deploy/images/)
#   DEPLOY_TEST_STORE      auto (default) | sqlite | postgres
#   DEPLOY_TEST_BREAK      identity-secret | trusted-proxy: break one thing on purpose, to show the
#                          smoke test fails at the step that checks it (exit status non-zero)
#   DEBIAN_MIRROR          for debootstrap (default http://deb.debian.org/debian)
#   WHEEL_PYTHON           interpreter that builds the wheelhouse; must be the base's Python
#                          version so environment markers agree (default: /usr/bin/python3 for
#                          the local Debian base, python3 otherwise)
# Needs root (or a docker group member) and Debian's apt for the tools it installs when missing:
# docker.io, docker-compose, debootstrap. Starts dockerd when none runs and stops it at the end.
# Exit status: 0 when every step passed; otherwise non-zero and the failed step is named.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
KEEP=""
[ "${1:-}" = "--keep" ] && KEEP=1

STEP="setup"
STORE=${DEPLOY_TEST_STORE:-auto}
BREAK=${DEPLOY_TEST_BREAK:-}
BASE_LOCAL=edge-gateway-base:bookworm
IMAGE=edge-gateway:test
PROJECT="edgegw-test-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/deploy-test.XXXXXX")
CACHE=${DEPLOY_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-gateway-deploy}
STARTED_DOCKERD=""
COMPOSE_UP=""
COMPOSE=()
SUMMARY=()

log() { printf '[deploy-test %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
step() { STEP=$1; log "== $1"; }
note() { SUMMARY+=("$*"); log "$*"; }
die() { log "ERROR: $*"; exit 1; }

compose() { "${COMPOSE[@]}" "$@"; }

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ $rc -ne 0 ]; then
    local sub=""
    [ -s "$WORK/failed-step" ] && sub=" / $(cat "$WORK/failed-step")"
    if [ -n "$COMPOSE_UP" ]; then
      log "state of the stack at the failure:"
      compose ps 2>&1 | sed 's/^/    /'
      compose logs --no-color --tail=25 2>&1 | sed 's/^/    /' | tail -n 150
    fi
    log "FAILED at step: ${STEP}${sub} (exit $rc)"
  fi
  if [ -n "$COMPOSE_UP" ]; then
    if [ -n "$KEEP" ] && [ $rc -eq 0 ]; then
      log "--keep: stack left running; stop it with:"
      log "  ${COMPOSE[*]} down -v"
    else
      compose down -v --remove-orphans --timeout 60 >/dev/null 2>&1 || log "warning: compose down failed"
    fi
  fi
  if [ -z "$KEEP" ] || [ $rc -ne 0 ]; then rm -rf "$WORK"; fi
  if [ -n "$STARTED_DOCKERD" ]; then
    if [ -n "$KEEP" ] && [ $rc -eq 0 ]; then
      log "dockerd (pid $STARTED_DOCKERD) left running for the kept stack"
    else
      kill "$STARTED_DOCKERD" 2>/dev/null
      for _ in $(seq 60); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 0.5; done
      log "stopped the dockerd this script started"
    fi
  fi
  if [ $rc -eq 0 ]; then
    log "summary:"
    for line in "${SUMMARY[@]}"; do log "  $line"; done
    log "PASSED in $(($(date +%s) - T0)) s"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

apt_install() {
  [ "$(id -u)" = 0 ] || die "please install: $* (needs root to do it here)"
  command -v apt-get >/dev/null || die "please install: $* (no apt-get here)"
  log "installing from Debian: $*"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

INPUTS_HASH=$(bash scripts/deploy-inputs-hash.sh)

# --- 1. tools and the daemon ------------------------------------------------------------------------
step "tools"
need=()
command -v docker >/dev/null || need+=(docker.io)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  need+=(docker-compose)
fi
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  COMPOSE=(docker-compose)
fi
COMPOSE+=(-p "$PROJECT" --project-directory "$ROOT/deploy" -f "$ROOT/deploy/compose.yaml")

step "dockerd"
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || apt_install docker.io
  [ "$(id -u)" = 0 ] || die "no Docker daemon answers and only root can start one"
  mkdir -p "$CACHE"
  log "no Docker daemon answers: starting dockerd (log: $CACHE/dockerd.log)"
  setsid dockerd >"$CACHE/dockerd.log" 2>&1 < /dev/null &
  STARTED_DOCKERD=$!
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$CACHE/dockerd.log"; die "dockerd did not come up"; }
fi
log "docker $(docker version -f '{{.Server.Version}}' 2>/dev/null), $("${COMPOSE[0]}" version 2>/dev/null | head -1)"

# --- 2. base image -----------------------------------------------------------------------------------
step "base-image"
LOCAL_BASE=""
if [ -n "${PYTHON_IMAGE:-}" ]; then
  BASE=$PYTHON_IMAGE
  docker image inspect "$BASE" >/dev/null 2>&1 || docker pull "$BASE" >/dev/null || die "cannot get $BASE"
elif docker image inspect python:3.11-slim >/dev/null 2>&1 \
     || timeout 120 docker pull python:3.11-slim >/dev/null 2>&1; then
  BASE=python:3.11-slim
else
  BASE=$BASE_LOCAL
  LOCAL_BASE=1
  if docker image inspect "$BASE" >/dev/null 2>&1; then
    log "python:3.11-slim cannot be pulled; using the cached local base $BASE"
  else
    log "python:3.11-slim cannot be pulled; making $BASE with debootstrap (a few minutes, once)"
    command -v debootstrap >/dev/null || apt_install debootstrap
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    rootfs="$WORK/rootfs"
    mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
  fi
fi
BASE_PY=$(docker run --rm "$BASE" python3 -c 'import platform; print(platform.python_version())')
note "base image: $BASE (Python $BASE_PY)"

# --- 3. images of the other services (only when the public ones cannot be pulled) ---------------
step "service-images"
if [ -n "$LOCAL_BASE" ]; then
  for svc in redis nginx prometheus postgres; do
    docker build -q -f "deploy/images/$svc.Dockerfile" --build-arg "BASE_IMAGE=$BASE" \
      -t "edge-gateway-local/$svc:bookworm" deploy/images >"$WORK/build-$svc.log" 2>&1 \
      || { tail -20 "$WORK/build-$svc.log"; die "building deploy/images/$svc.Dockerfile failed"; }
  done
  export EDGE_REDIS_IMAGE=edge-gateway-local/redis:bookworm EDGE_NGINX_IMAGE=edge-gateway-local/nginx:bookworm \
    EDGE_PROMETHEUS_IMAGE=edge-gateway-local/prometheus:bookworm EDGE_POSTGRES_IMAGE=edge-gateway-local/postgres:bookworm
  note "redis/nginx/prometheus/postgres images built from Debian packages (deploy/images/)"
fi

# --- 4. wheelhouse (offline build input) ---------------------------------------------------------------
step "wheelhouse"
if [ -z "${WHEEL_PYTHON:-}" ]; then
  if [ -n "$LOCAL_BASE" ] && [ -x /usr/bin/python3 ]; then WHEEL_PYTHON=/usr/bin/python3; else WHEEL_PYTHON=python3; fi
fi
HOST_PY=$("$WHEEL_PYTHON" -c 'import platform; print(platform.python_version())')
if [ "$HOST_PY" != "$BASE_PY" ]; then
  log "warning: wheelhouse built with Python $HOST_PY, image has $BASE_PY: markers may differ (set WHEEL_PYTHON)"
fi
WH=deploy/wheelhouse
"$WHEEL_PYTHON" -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
  > "$WORK/requirements.txt"
# Rebuilt when the runtime dependencies or the interpreter change (not for test-only extras).
key=$(cat "$WORK/requirements.txt" <(echo "$HOST_PY") | sha256sum | cut -c1-16)
if [ "$(cat "$WH/.key" 2>/dev/null)" != "$key" ]; then
  mkdir -p "$CACHE"
  if [ ! -x "$CACHE/wheel-venv-$HOST_PY/bin/pip" ]; then
    "$WHEEL_PYTHON" -m venv "$CACHE/wheel-venv-$HOST_PY" || die "cannot make a venv with $WHEEL_PYTHON (python3-venv?)"
  fi
  rm -rf "$WH.tmp" && mkdir -p "$WH.tmp"
  "$CACHE/wheel-venv-$HOST_PY/bin/pip" wheel -q -w "$WH.tmp" "setuptools>=68" wheel -r "$WORK/requirements.txt" \
    >"$WORK/wheel.log" 2>&1 || { grep -v '^WARNING: Location' "$WORK/wheel.log" | tail -20; die "pip wheel failed"; }
  echo "$key" > "$WH.tmp/.key"
  rm -rf "$WH" && mv "$WH.tmp" "$WH"
fi
note "wheelhouse: $(find "$WH" -name '*.whl' | wc -l) wheels for Python $HOST_PY ($WH)"

# --- 5. the image ----------------------------------------------------------------------------------------
step "image"
docker build -q -f deploy/Dockerfile --build-arg "PYTHON_IMAGE=$BASE" --build-arg "WHEELHOUSE=$WH" \
  -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; die "docker build failed"; }
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
checks=$(docker run --rm --entrypoint sh "$IMAGE" -c '
  echo "uid=$(id -u)"
  for c in gcc cc c++ g++ clang make; do command -v "$c" >/dev/null && echo "compiler=$c"; done
  pip check >/dev/null 2>&1 && echo "pip-check=ok" || echo "pip-check=FAILED"
  gateway --help >/dev/null 2>&1 && echo "gateway=ok"')
# Here-strings, not `echo | grep -q`: under pipefail, grep -q leaving at its first match can kill
# echo with SIGPIPE, which failed the uid check once and would have passed the compiler check.
grep -qx "uid=10001" <<<"$checks" || die "image does not run as uid 10001: $checks"
if grep -q "^compiler=" <<<"$checks"; then die "compiler in the final image: $checks"; fi
grep -qx "pip-check=ok" <<<"$checks" || die "pip check fails in the image"
grep -qx "gateway=ok" <<<"$checks" || die "gateway command missing in the image"
note "image $IMAGE: $((size / 1000000)) MB ($size bytes), uid 10001, no compiler, pip check ok"

# --- 6. the stack ------------------------------------------------------------------------------------------
step "store"
if [ "$STORE" = auto ]; then
  if docker run --rm "$IMAGE" python -c 'import upstream_stub.migrations' >/dev/null 2>&1; then STORE=postgres; else STORE=sqlite; fi
fi
[ "$STORE" = postgres ] && COMPOSE+=(-f "$ROOT/deploy/compose.postgres.yaml")
note "upstream store: $STORE"

step "secrets"
umask 077
LB_PORT=$(free_port)
PROM_PORT=$(free_port)
python3 - "$WORK/deploy.env" <<'EOF'
import base64, secrets, sys, uuid
tok = lambda: secrets.token_urlsafe(48)
values = {
    "GATEWAY_JWT_SECRET": tok(), "GATEWAY_IDENTITY_SECRET": tok(), "GATEWAY_AUDIT_KEY": "k1:" + tok(),
    "GATEWAY_CORS_ORIGINS": "https://app.deploy-test.internal",
    "UPSTREAM_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    "UPSTREAM_STATE_SECRET": tok(), "KOMMO_WEBHOOK_SECRET": tok(), "KOMMO_CHANNEL_SECRET": tok(),
    "KOMMO_CLIENT_ID": str(uuid.uuid4()), "KOMMO_CLIENT_SECRET": tok(),
    "KOMMO_REDIRECT_URI": "https://gateway.example.com/v1/kommo/oauth/callback",
    "POSTGRES_PASSWORD": secrets.token_hex(24), "UPSTREAM_DB_OWNER_PASSWORD": secrets.token_hex(24),
    "UPSTREAM_DB_APP_PASSWORD": secrets.token_hex(24),
}
with open(sys.argv[1], "w") as f:
    f.writelines(f"{k}={v}\n" for k, v in values.items())
EOF
cat >> "$WORK/deploy.env" <<EOF
EDGE_GATEWAY_IMAGE=$IMAGE
EDGE_HTTP_BIND=127.0.0.1
EDGE_HTTP_PORT=$LB_PORT
EDGE_PROMETHEUS_BIND=127.0.0.1
EDGE_PROMETHEUS_PORT=$PROM_PORT
EOF
for var in EDGE_REDIS_IMAGE EDGE_NGINX_IMAGE EDGE_PROMETHEUS_IMAGE EDGE_POSTGRES_IMAGE; do
  [ -n "${!var:-}" ] && echo "$var=${!var}" >> "$WORK/deploy.env"
done
umask 022
COMPOSE+=(--env-file "$WORK/deploy.env")
case "$BREAK" in
  "") ;;
  identity-secret)
    # The upstream gets a different identity key than the gateways: every forwarded request is refused.
    printf 'services:\n  upstream:\n    environment:\n      GATEWAY_IDENTITY_SECRET: %s\n' \
      "$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')" > "$WORK/break.yaml" ;;
  trusted-proxy)
    # The gateways trust an address that is not the LB's: X-Forwarded-For is no longer believed.
    printf 'services:\n  gateway-1:\n    environment:\n      GATEWAY_TRUSTED_PROXIES: 172.28.0.99/32\n  gateway-2:\n    environment:\n      GATEWAY_TRUSTED_PROXIES: 172.28.0.99/32\n' \
      > "$WORK/break.yaml" ;;
  *) die "DEPLOY_TEST_BREAK must be identity-secret or trusted-proxy" ;;
esac
if [ -n "$BREAK" ]; then COMPOSE+=(-f "$WORK/break.yaml"); note "BROKEN ON PURPOSE: $BREAK"; fi
log "secrets generated in $WORK/deploy.env (mode 600, removed at the end)"

step "compose-up"
compose config -q || die "compose config refused the files"
# Leftovers of a run that was killed outright hold the fixed edge subnet: remove what is idle.
for net in $(docker network ls -q --filter name=edgegw-test- 2>/dev/null); do
  docker network rm "$net" >/dev/null 2>&1 || true
done
COMPOSE_UP=1
compose up -d --no-build >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; die "compose up failed"; }
for _ in $(seq 120); do
  curl -fsS -o /dev/null "http://127.0.0.1:$LB_PORT/readyz" 2>/dev/null && break
  sleep 1
done
curl -fsS -o /dev/null "http://127.0.0.1:$LB_PORT/readyz" || die "the LB does not answer /readyz"
note "stack up in $(($(date +%s) - T0)) s since start: $(compose ps --services 2>/dev/null | sort | tr '\n' ' ')"

# --- 7. smoke test through the load balancer ------------------------------------------------------------
step "smoke"
PY=$ROOT/.venv/bin/python
if ! "$PY" -c 'import httpx, jwt, gateway' >/dev/null 2>&1; then
  bash scripts/setup.sh >/dev/null
fi
SMOKE_T0=$(date +%s)
DEPLOY_COMPOSE="$(printf '%s\n' "${COMPOSE[@]}")" "$PY" scripts/deploy_smoke.py \
  --lb "http://127.0.0.1:$LB_PORT" --prometheus "http://127.0.0.1:$PROM_PORT" \
  --env-file "$WORK/deploy.env" --project "$PROJECT" --failed-step-file "$WORK/failed-step"
note "smoke test passed in $(($(date +%s) - SMOKE_T0)) s"
STEP="teardown"

# --- 8. stamp: .ci/run re-runs this test only when the deploy inputs change ---------------------------
if [ -z "$BREAK" ] && [ "${DEPLOY_TEST_STORE:-auto}" = auto ] && [ "$(bash scripts/deploy-inputs-hash.sh)" = "$INPUTS_HASH" ]; then
  echo "$INPUTS_HASH" > deploy/tested.sha256
  note "deploy inputs $INPUTS_HASH recorded in deploy/tested.sha256 (commit it)"
fi
