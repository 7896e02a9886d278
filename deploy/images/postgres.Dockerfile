# PostgreSQL from Debian's package, for sites that cannot pull the official `postgres` image. The
# entrypoint keeps that image's contract, which compose.postgres.yaml relies on: POSTGRES_PASSWORD
# (required) for the `postgres` superuser, PGDATA initialised on first start with scram-sha-256
# for TCP clients, then every /docker-entrypoint-initdb.d/*.sh run once against a socket-only
# server before the real one listens.
# Build context: deploy/images (this folder). BASE_IMAGE: see scripts/deploy-test.sh.
ARG BASE_IMAGE=edge-gateway-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/lib/postgresql/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
