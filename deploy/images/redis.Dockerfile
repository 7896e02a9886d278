# Redis from Debian's package, for sites that cannot pull the official `redis` image (the deploy
# test builds it on the local Debian base). Same interface as the official image for compose.yaml:
# `redis-server` and `redis-cli` on PATH, data in /data, runs as a non-root user.
# Build context: deploy/images (this folder). BASE_IMAGE: see scripts/deploy-test.sh.
ARG BASE_IMAGE=edge-gateway-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]
