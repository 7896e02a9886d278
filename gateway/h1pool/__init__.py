"""Lean HTTP/1.1 client pool for the forwarder: asyncio Protocols + httptools, one upstream per pool.

    pool = H1Pool("http://10.0.0.5:8080", max_connections=256, keepalive_seconds=30)
    resp = await pool.request("GET", b"/v1/items?x=1", [(b"accept", b"*/*")], None,
                              connect_timeout=2, total_timeout=30)
    try:
        while chunk := await resp.read_chunk():
            ...
    finally:
        resp.release()
"""

from gateway.h1pool.conn import Cancel, H1Response
from gateway.h1pool.errors import (
    PoolSaturated,
    RequestBodyLengthError,
    UpstreamCancelled,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.h1pool.pool import H1Pool

__all__ = [
    "Cancel", "H1Pool", "H1Response", "PoolSaturated", "RequestBodyLengthError", "UpstreamCancelled",
    "UpstreamConnectError", "UpstreamError", "UpstreamProtocolError", "UpstreamTimeout",
]
