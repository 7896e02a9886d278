"""W3C trace context parsing, and span export over OTLP/HTTP to a real receiver socket."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from gateway.tracing import OtelTracer, Tracer, parse_traceparent, tracer_from_env
from tests.support.gateway_proc import Proc, echo_upstream, gateway, wait_until, write_policy

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param(f"00-{TRACE}-{SPAN}-01", (TRACE, SPAN, "01"), id="valid"),
    pytest.param(f"00-{TRACE}-{SPAN}-00", (TRACE, SPAN, "00"), id="not_sampled"),
    pytest.param(f"01-{TRACE}-{SPAN}-01-future", (TRACE, SPAN, "01"), id="future_version_extra_field"),
    pytest.param(f"00-{TRACE}-{SPAN}-01-x", None, id="v00_extra_field"),
    pytest.param(f"ff-{TRACE}-{SPAN}-01", None, id="version_ff"),
    pytest.param(f"00-{'0' * 32}-{SPAN}-01", None, id="zero_trace"),
    pytest.param(f"00-{TRACE}-{'0' * 16}-01", None, id="zero_parent"),
    pytest.param(f"00-{TRACE.upper()}-{SPAN}-01", None, id="upper_case"),
    pytest.param(f"00-{TRACE[:-1]}-{SPAN}-01", None, id="short_trace"),
    pytest.param(f"00_{TRACE}_{SPAN}_01", None, id="wrong_separator"),
    pytest.param("", None, id="empty"),
])
def test_parse_traceparent(value: str, expected: tuple[str, str, str] | None) -> None:
    assert parse_traceparent(value.encode()) == expected


def test_repeated_traceparent_starts_a_new_trace() -> None:
    span = Tracer().start([(b"traceparent", f"00-{TRACE}-{SPAN}-01".encode()),
                           (b"traceparent", f"00-{'1' * 32}-{SPAN}-01".encode())])
    assert span.trace_id not in (TRACE, "1" * 32) and span.parent_id is None


def test_oversized_tracestate_is_dropped() -> None:
    span = Tracer().start([(b"traceparent", f"00-{TRACE}-{SPAN}-01".encode()), (b"tracestate", b"a=" + b"x" * 600)])
    assert span.trace_id == TRACE and span.tracestate is None
    two = Tracer().start([(b"traceparent", f"00-{TRACE}-{SPAN}-01".encode()), (b"tracestate", b"a=1"),
                          (b"tracestate", b"b=2")])
    assert two.tracestate == b"a=1,b=2"
    assert two.traceparent().decode().split("-")[1:3] == [TRACE, two.span_id] and two.span_id != SPAN


def test_no_exporter_without_the_variables() -> None:
    assert type(tracer_from_env({})) is Tracer
    assert type(tracer_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})) is Tracer
    tracer = tracer_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert isinstance(tracer, OtelTracer)
    tracer.shutdown()


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        n = int(self.headers.get("content-length", "0"))
        _Receiver.bodies.append(self.rfile.read(n))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _spans() -> list[object]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for body in _Receiver.bodies:
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                out.extend((service, span) for span in ss.spans)
    return out


def test_spans_exported_over_otlp(tmp_path: Path, collector: str) -> None:
    policy = write_policy(tmp_path / "pol", gateway="""
        upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
        routes:
          - {id: echo, path: /v1/echo, methods: [GET], auth: none, upstream_path: /echo}
    """)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_SERVICE_NAME": "edge-test",
           "OTEL_BSP_SCHEDULE_DELAY": "100", "GATEWAY_ACCESS_LOG": "off"}
    up: Proc
    with echo_upstream() as up, gateway(policy, up.url, env) as gw:
        r = httpx.get(f"{gw.url}/v1/echo", headers={"traceparent": f"00-{TRACE}-{SPAN}-01"})
        upstream_parent = dict(r.json()["headers"])["traceparent"].split("-")[2]
        assert wait_until(lambda: len(_spans()) >= 1, timeout=20)
    service, span = _spans()[0]  # type: ignore[misc]
    assert service == "edge-test"
    assert span.trace_id.hex() == TRACE and span.parent_span_id.hex() == SPAN
    assert span.span_id.hex() == upstream_parent  # the upstream's parent is the exported span
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["gateway.route"].string_value == "echo" and attrs["http.response.status_code"].int_value == 200
    assert span.name == "GET echo"


def test_log_lines_written_while_serving_carry_request_and_trace_ids() -> None:
    import contextvars
    import json
    import logging

    from gateway.logs import CURRENT_REQUEST, JsonFormatter

    def inside_request() -> str:
        CURRENT_REQUEST.set(("req-0123456789abcdef", TRACE))
        record = logging.LogRecord("gateway.forwarder", logging.ERROR, __file__, 1, "upstream broke", None, None)
        return JsonFormatter().format(record)

    line = json.loads(contextvars.copy_context().run(inside_request))
    assert (line["request_id"], line["trace_id"]) == ("req-0123456789abcdef", TRACE)
    outside = json.loads(JsonFormatter().format(
        logging.LogRecord("gateway", logging.ERROR, __file__, 1, "no request", None, None)))
    assert "trace_id" not in outside and "request_id" not in outside
