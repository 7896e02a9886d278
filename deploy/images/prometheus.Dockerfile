# Prometheus from Debian's package, for sites that cannot pull `prom/prometheus`. Same interface
# as that image for compose.yaml: the entrypoint is the server, arguments come from `command:`.
# Build context: deploy/images (this folder). BASE_IMAGE: see scripts/deploy-test.sh.
ARG BASE_IMAGE=edge-gateway-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
