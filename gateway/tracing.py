"""W3C Trace Context (`traceparent` / `tracestate`): continue the caller's trace or start one.

Every request gets a span of the gateway's own: the trace id of a valid incoming `traceparent`
(else a new random one), a new span id, and the caller's span as parent. The upstream receives
the same trace id with the *gateway's* span as parent, so a trace shows client -> gateway ->
upstream. The trace id goes into the access log, the audit record and error logs.

With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans are also
exported through the OpenTelemetry SDK and its OTLP/HTTP exporter (`pip install
edge-gateway[otel]`; `OTEL_SERVICE_NAME`, default `edge-gateway`, and the SDK's other standard
variables apply). With none set no SDK is imported and the cost is one header parse.

Threat: the header comes from anyone. A malformed one (wrong length, upper-case hex, all-zero
ids, version ff, repeated) is ignored and a new trace starts, as the specification says;
`tracestate` is forwarded only with a valid `traceparent` and only up to 512 bytes.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from random import getrandbits
from typing import Any

log = logging.getLogger("gateway.tracing")

_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
MAX_TRACESTATE = 512


class Span:
    """The gateway's span of one request."""

    __slots__ = ("trace_id", "span_id", "parent_id", "flags", "tracestate", "otel")

    def __init__(self, trace_id: str, span_id: str, parent_id: str | None, flags: str,
                 tracestate: bytes | None, otel: Any = None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.flags = flags
        self.tracestate = tracestate
        self.otel = otel

    def traceparent(self) -> bytes:
        """What the upstream receives: our trace id, our span as its parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}".encode()


def parse_traceparent(value: bytes) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a valid header value, else None."""
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace, parent, flags = m.groups()
    if version == b"ff" or trace == _ZERO_TRACE or parent == _ZERO_SPAN:
        return None
    # Version 00 is exactly 55 characters; a later version may append fields after a dash.
    if len(value) != 55 and (version == b"00" or value[55:56] != b"-"):
        return None
    return trace.decode(), parent.decode(), flags.decode()


def incoming(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str, str] | None, bytes | None]:
    """The caller's trace context from the request headers (one pass)."""
    parents: list[bytes] = []
    states: list[bytes] = []
    for k, v in headers:
        if k == b"traceparent":
            parents.append(v)
        elif k == b"tracestate":
            states.append(v)
    if len(parents) != 1:  # none, or repeated (ambiguous): start a new trace
        return None, None
    parsed = parse_traceparent(parents[0].strip())
    if parsed is None:
        return None, None
    state = b",".join(s.strip() for s in states if s.strip()) or None
    if state is not None and len(state) > MAX_TRACESTATE:
        state = None
    return parsed, state


class Tracer:
    """Ids only: continue or start a trace, export nothing."""

    exporting = False

    def start(self, headers: list[tuple[bytes, bytes]]) -> Span:
        parsed, state = incoming(headers)
        # Trace and span ids must be unique, not secret (W3C Trace Context §9): the PRNG costs
        # a fraction of a getrandom() syscall per request. `or 1`: an all-zero id is invalid.
        span_id = f"{getrandbits(64) or 1:016x}"
        if parsed is None:
            return Span(f"{getrandbits(128) or 1:032x}", span_id, None, "00", None)
        trace_id, parent_id, flags = parsed
        return Span(trace_id, span_id, parent_id, flags[-2:], state)

    def end(self, span: Span, attributes: Mapping[str, Any], error: bool) -> None:
        """Nothing to export."""

    def shutdown(self) -> None:
        """Nothing to flush."""


class OtelTracer(Tracer):
    """Spans exported by the OpenTelemetry SDK (batching, OTLP/HTTP) in its own thread."""

    exporting = True

    def __init__(self, service_name: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("edge-gateway")
        self._propagator = TraceContextTextMapPropagator()
        self._kind = SpanKind.SERVER

    def start(self, headers: list[tuple[bytes, bytes]]) -> Span:
        parsed, state = incoming(headers)
        carrier: dict[str, str] = {}
        if parsed is not None:
            carrier["traceparent"] = "00-{}-{}-{}".format(*parsed)
            if state is not None:
                carrier["tracestate"] = state.decode("latin-1")
        context = self._propagator.extract(carrier)
        otel = self._tracer.start_span("gateway request", context=context, kind=self._kind,
                                       start_time=time.time_ns())
        sc = otel.get_span_context()
        return Span(format(sc.trace_id, "032x"), format(sc.span_id, "016x"),
                    parsed[1] if parsed else None, format(int(sc.trace_flags), "02x"),
                    state if parsed else None, otel)

    def end(self, span: Span, attributes: Mapping[str, Any], error: bool) -> None:
        otel = span.otel
        if otel is None:
            return
        from opentelemetry.trace import Status, StatusCode

        route = attributes.get("gateway.route")
        if route:
            otel.update_name(f"{attributes.get('http.request.method', '')} {route}".strip())
        otel.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if error:
            otel.set_status(Status(StatusCode.ERROR))
        otel.end()

    def shutdown(self) -> None:
        self._provider.shutdown()


def tracer_from_env(environ: Mapping[str, str] | None = None) -> Tracer:
    """An exporting tracer when the standard OTLP variables ask for one, else ids only."""
    env = os.environ if environ is None else environ
    if not (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return Tracer()
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return Tracer()
    try:
        return OtelTracer(env.get("OTEL_SERVICE_NAME") or "edge-gateway")
    except ImportError:
        log.error("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed "
                  "(pip install 'edge-gateway[otel]'); spans are not exported")
        return Tracer()
