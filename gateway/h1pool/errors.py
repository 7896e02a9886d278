"""Typed failures of the upstream HTTP/1.1 client; the forwarder maps them to 502/504."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base class: anything that went wrong talking to the upstream."""


class UpstreamConnectError(UpstreamError):
    """No response byte ever arrived: refused, DNS/TLS failure, reset or closed before answering.

    The upstream may or may not have seen the request (a reset can follow a received request)."""


class UpstreamTimeout(UpstreamError):
    """The connect timeout (pool wait + TCP/TLS connect) or the total timeout passed."""


class UpstreamProtocolError(UpstreamError):
    """The answer was malformed, too large in its head, or broke off mid-response."""


class RequestBodyLengthError(UpstreamError):
    """A streamed request body did not match the `content-length` the caller declared.

    The connection was aborted before the upstream could see a complete-looking request."""


class PoolSaturated(UpstreamTimeout):
    """No connection of the pool became free within the pool wait: the upstream is saturated."""


class UpstreamCancelled(UpstreamError):
    """The caller cancelled the exchange (`Cancel.fire`); the connection was aborted."""
