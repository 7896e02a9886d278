#!/bin/sh
# First start of the PostgreSQL container (/docker-entrypoint-initdb.d, as superuser over the
# socket): the two roles of the bundled upstream and its database. Neither role is superuser or
# may bypass row-level security; the owner role owns the schema and is used only by
# `python -m upstream_stub migrate`; the app role is what the serving upstream connects as.
set -eu
: "${UPSTREAM_DB_OWNER_PASSWORD:?}" "${UPSTREAM_DB_APP_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
     -v owner_pw="$UPSTREAM_DB_OWNER_PASSWORD" -v app_pw="$UPSTREAM_DB_APP_PASSWORD" <<'SQL'
CREATE ROLE upstream_owner LOGIN PASSWORD :'owner_pw' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE ROLE upstream_app LOGIN PASSWORD :'app_pw' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE DATABASE upstream OWNER upstream_owner;
REVOKE ALL ON DATABASE upstream FROM PUBLIC;
GRANT CONNECT ON DATABASE upstream TO upstream_app;
\connect upstream
ALTER SCHEMA public OWNER TO upstream_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO upstream_app;
SQL
echo "init-roles: roles upstream_owner and upstream_app, database upstream"
