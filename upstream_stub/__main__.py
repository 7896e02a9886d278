"""`python -m upstream_stub`: serve the upstream with uvicorn on UPSTREAM_HOST:UPSTREAM_PORT.

`python -m upstream_stub openapi` prints the upstream's own OpenAPI document instead.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Generator

import uvicorn

from upstream_stub.app import StartupError, create_app
from upstream_stub.settings import UpstreamSettings


def main() -> int:
    settings = UpstreamSettings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        app = create_app(settings)
    except StartupError as exc:
        print(f"upstream_stub: refusing to start: {exc}", file=sys.stderr)
        return 2
    # Our own access log omits query strings (OAuth codes travel there); uvicorn's would print them.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(settings.shutdown_grace) + 5)
    server = _CleanExitServer(config)
    server.run()
    return 0 if server.started else 1


class _CleanExitServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after a graceful shutdown (exit -15); a clean stop exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


if __name__ == "__main__":
    if sys.argv[1:2] == ["openapi"]:
        from upstream_stub.openapi import main as openapi_main

        sys.exit(openapi_main(sys.argv[2:]))
    sys.exit(main())
