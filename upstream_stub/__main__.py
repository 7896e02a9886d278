"""`python -m upstream_stub`: serve the upstream with uvicorn on UPSTREAM_HOST:UPSTREAM_PORT.

`python -m upstream_stub openapi` prints the upstream's own OpenAPI document instead.
`python -m upstream_stub migrate`: create or upgrade the PostgreSQL schema and its row-level security
(with UPSTREAM_DATABASE_OWNER_URL); exit 0 done, 1 database error (rolled back), 2 refused.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Generator

import uvicorn

from upstream_stub.app import StartupError, create_app
from upstream_stub.settings import SettingsError, UpstreamSettings, load_settings


def main() -> int:
    if sys.argv[1:2] == ["openapi"]:
        from upstream_stub.openapi import main as openapi_main

        return openapi_main(sys.argv[2:])
    if sys.argv[1:2] == ["migrate"]:
        from upstream_stub.migrations import main as migrate_main

        return migrate_main(sys.argv[2:])
    try:
        settings = load_settings()
    except SettingsError as exc:
        for line in exc.problems:
            print(f"upstream_stub: {line}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        app = create_app(settings)
    except StartupError as exc:
        print(f"upstream_stub: refusing to start: {exc}", file=sys.stderr)
        return 2
    refusal = _database_refusal(settings)
    if refusal:
        print(f"upstream_stub: refusing to start: {refusal}", file=sys.stderr)
        return 2
    # Our own access log omits query strings (OAuth codes travel there); uvicorn's would print them.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(settings.shutdown_grace) + 5)
    server = _CleanExitServer(config)
    server.run()
    return 0 if server.started else 1


def _database_refusal(settings: UpstreamSettings) -> str | None:
    """On PostgreSQL: a role that could bypass row-level security, or an unmigrated schema, is refused."""
    if not settings.database_url:
        return None
    import psycopg

    from upstream_stub.store.pg.db import check_role_sync

    try:
        return check_role_sync(settings.database_url)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"cannot connect with UPSTREAM_DATABASE_URL: {first[:300]}"


class _CleanExitServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after a graceful shutdown (exit -15); a clean stop exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


if __name__ == "__main__":
    sys.exit(main())
