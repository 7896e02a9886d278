"""Refusals at the edge of the wire leave a trace: a metric with a reason label for every refusal
the HTTP server layer makes (gateway/protocol.py), and an audit record for every denial (the
parser's 400s, upgrades, Host, framing), with the request id the client was given.

Two workers share one metrics directory and one audit file, so the counters are also checked as
the admin listener sums them over processes (prometheus_client multiprocess mode).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from gateway.protocol import PARSER_WARNING
from tests.support.gateway_proc import Proc, echo_upstream, gateway, write_policy
from tests.support.procs import wait_port
from tests.support.rawhttp import RawResponse, raw_request, read_response

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    defaults:
      timeouts: {connect: 1, total: 5, body_read: 5}
    limits: {header_timeout: 3, max_connections: 10}
    routes:
      - {id: echo, path: /v1/echo, methods: [GET, POST], auth: none, upstream_path: /echo}
"""
CEILING = 30.0  # generous: the machine may be busy; passing runs take a fraction of it


@pytest.fixture(scope="module")
def audit_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refusal-audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refusal-metrics")


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("refusal-access") / "access.log"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, audit_log: Path, access_log: Path,
       metrics_dir: Path) -> Iterator[Proc]:
    d = write_policy(Path(tmp_path_factory.mktemp("refusals")), gateway=POLICY)
    env = {"GATEWAY_WORKERS": "2", "GATEWAY_AUDIT_LOG": str(audit_log), "GATEWAY_ACCESS_LOG": str(access_log),
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with echo_upstream() as up, gateway(d, up.url, env) as g:
        wait_port(g.admin_port, timeout=60)  # type: ignore[attr-defined]
        # Both workers up (each serves /healthz once it runs).
        assert poll(lambda: httpx.get(f"{g.url}/healthz", timeout=5).status_code == 200)
        yield g


def poll(pred: Callable[[], Any], timeout: float = CEILING) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = pred()
        except (OSError, httpx.HTTPError):
            got = None
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def counter(gw: Proc, name: str, **labels: str) -> float:
    """The summed value of one counter series from the admin listener (0 if absent)."""
    text = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=10).text  # type: ignore[attr-defined]
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def counted(gw: Proc, name: str, at_least: float, **labels: str) -> float:
    """Poll until the counter reaches `at_least` (counts are flushed once a second per worker)."""
    got = poll(lambda: (v := counter(gw, name, **labels)) >= at_least and v)
    assert got, f"{name}{labels} stayed below {at_least}: {counter(gw, name, **labels)}"
    return float(got)


def json_line(path: Path, request_id: str) -> dict[str, Any]:
    """The JSON line of `path` (the audit file, the access log) with this request id, once written."""
    def find() -> dict[str, Any] | None:
        if not path.exists():
            return None
        for line in path.read_text().splitlines():
            rec: dict[str, Any] = json.loads(line)
            if rec.get("request_id") == request_id:
                return rec
        return None

    rec = poll(find)
    assert rec, f"no line with request id {request_id} in {path.name}"
    return rec  # type: ignore[no-any-return]


audit_record = access_line = json_line


def problem(resp: RawResponse, status: int, reason: str) -> str:
    assert resp.status == status, resp.body
    assert resp.header("content-type") == "application/problem+json"
    body = json.loads(resp.body)
    assert body["reason"] == reason
    rid = resp.header("x-request-id")
    assert rid and body["request_id"] == rid
    return rid


def exchange(gw: Proc, request: bytes) -> RawResponse:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(request)
        return read_response(s, timeout=CEILING)


# --- denials: problem+json, an audit record with the same request id, a metric ---------------------

UPGRADE = (b"GET /v1/echo HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_an_upgrade_denial_is_audited_and_counted(gw: Proc, audit_log: Path) -> None:
    before = counter(gw, "gateway_denials_total", route="none", reason="request.upgrade_not_allowed")
    rid = problem(exchange(gw, UPGRADE), 400, "request.upgrade_not_allowed")
    rec = audit_record(audit_log, rid)
    assert rec["reason"] == "request.upgrade_not_allowed"
    assert (rec["status"], rec["decision"], rec["method"]) == (400, "deny", "GET")
    counted(gw, "gateway_denials_total", before + 1, route="none", reason="request.upgrade_not_allowed")


@pytest.mark.parametrize(("request_bytes", "reason"), [
    pytest.param(b"GET /v1/echo HTTP/1.1\r\nHost: a.example\r\nHost: evil.example\r\n\r\n",
                 "request.bad_host", id="two_hosts"),
    pytest.param(b"POST /v1/echo HTTP/1.1\r\nHost: gw\r\nConnection: content-type\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", "request.bad_framing",
                 id="connection_names_content_type"),
])
def test_host_and_framing_denials_are_audited_and_counted(gw: Proc, audit_log: Path, request_bytes: bytes,
                                                           reason: str) -> None:
    before = counter(gw, "gateway_denials_total", route="none", reason=reason)
    rid = problem(raw_request(gw.port, request_bytes), 400, reason)
    rec = audit_record(audit_log, rid)
    assert (rec["reason"], rec["status"], rec["decision"]) == (reason, 400, "deny")
    counted(gw, "gateway_denials_total", before + 1, route="none", reason=reason)


@pytest.mark.parametrize(("request_bytes", "method"), [
    pytest.param(b"GET /v1/echo HTTP/1.1\r\nHost: gw\r\nBad Header: x\r\n\r\n", "GET", id="space_in_name"),
    pytest.param(b"\x16\x03\x01\x02\x00junk\r\n\r\n", "-", id="tls_hello"),
    pytest.param(b"GET /v1/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                 "GET", id="two_lengths"),
    # llhttp reports method 0, DELETE, for a method it never read: the record must not say DELETE.
    pytest.param(b"BAD\x01 REQUEST\r\n\r\n", "-", id="no_method"),
    # llhttp hands over the target only once it is complete, so a target that breaks off leaves
    # the method unconfirmed: `-`, never a guess.
    pytest.param(b"POST /v1/\x01echo HTTP/1.1\r\nHost: gw\r\n\r\n", "-", id="bad_target"),
])
def test_a_parser_refusal_is_audited_access_logged_and_counted(gw: Proc, audit_log: Path, access_log: Path,
                                                               request_bytes: bytes, method: str) -> None:
    before = counter(gw, "gateway_protocol_refusals_total", reason="request.invalid")
    rid = problem(exchange(gw, request_bytes), 400, "request.invalid")
    rec = audit_record(audit_log, rid)
    assert (rec["reason"], rec["status"], rec["decision"]) == ("request.invalid", 400, "deny")
    assert rec["route_id"] is None and rec["path"] == "(unparsed)"  # the raw target is never written
    assert rec["client_ip"] == "127.0.0.1"
    assert rec["method"] == method
    line = access_line(access_log, rid)
    assert (line["type"], line["status"], line["decision"], line["reason"]) == ("access", 400, "deny", "request.invalid")
    assert (line["route"], line["user_agent"], line["org"], line["sub"]) == (None, None, None, None)
    assert line["method"] == (None if method == "-" else method)  # the access log has null, not "-"
    assert line["client_ip"] == "127.0.0.1" and line["duration_ms"] >= 0
    counted(gw, "gateway_protocol_refusals_total", before + 1, reason="request.invalid")
    assert PARSER_WARNING not in gw.log()  # counted, audited and logged: no server-log line per refusal


def per_worker(metrics_dir: Path, reason: str) -> dict[str, float]:
    """The protocol-refusal counter as each worker wrote it to its own multiprocess file."""
    out = {}
    for f in metrics_dir.glob("counter_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(f)):
            _metric, sample, labels, *_rest = json.loads(key)
            if sample == "gateway_protocol_refusals_total" and labels.get("reason") == reason:
                out[f.name] = value
    return out


def test_parser_refusals_are_summed_over_both_workers(gw: Proc, metrics_dir: Path) -> None:
    # Multiprocess mode: each worker writes the counter (at zero from its start) to its own file.
    assert poll(lambda: len(per_worker(metrics_dir, "request.invalid")) >= 2), list(metrics_dir.iterdir())
    before = counter(gw, "gateway_protocol_refusals_total", reason="request.invalid")
    for _ in range(12):  # a new connection each: the kernel may spread them over the two workers
        assert exchange(gw, b"NOT HTTP AT ALL\r\n\r\n").status == 400
    assert counted(gw, "gateway_protocol_refusals_total", before + 12, reason="request.invalid") == before + 12
    # The admin listener's figure is the sum of the workers' files.
    assert sum(per_worker(metrics_dir, "request.invalid").values()) == before + 12


# --- refusals without a request: counted, not audited ---------------------------------------------

def test_header_timeouts_are_counted(gw: Proc) -> None:
    before = counter(gw, "gateway_protocol_refusals_total", reason="request.header_timeout")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as half, \
            socket.create_connection(("127.0.0.1", gw.port), timeout=10) as silent:
        half.sendall(b"GET /v1/echo HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        half.settimeout(CEILING)
        data = b""
        while chunk := half.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 408")
        silent.settimeout(CEILING)
        assert silent.recv(1) == b""
    counted(gw, "gateway_protocol_refusals_total", before + 2, reason="request.header_timeout")


def test_at_the_cap_the_longest_idle_keep_alive_connection_makes_room(gw: Proc) -> None:
    before = counter(gw, "gateway_protocol_refusals_total", reason="connection.reclaimed")
    held: list[socket.socket] = []
    try:
        # Each connection is served one request, then idles in keep-alive (75 s, no head deadline).
        # Two workers with a cap of 10 each: every new one beyond 20 closes an idle one.
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            held.append(s)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert read_response(s, timeout=CEILING).status == 200, "a new client was refused"
        closed = [i for i, s in enumerate(held) if closed_now(s)]
        # However the kernel spread them, each worker keeps its 10 newest and closed the rest.
        assert 10 <= len(held) - len(closed) <= 20, closed
        assert 39 not in closed and 38 not in closed, "a recent connection was closed, not the longest idle"
        # Counted once per connection it closed (flushed within a second or so).
        counted(gw, "gateway_protocol_refusals_total", before + len(closed), reason="connection.reclaimed")
        assert counter(gw, "gateway_protocol_refusals_total", reason="connection.reclaimed") == before + len(closed)
    finally:
        for s in held:
            s.close()


def closed_now(s: socket.socket) -> bool:
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_connections_over_the_cap_are_counted(gw: Proc) -> None:
    before = counter(gw, "gateway_protocol_refusals_total", reason="connection.limit")
    held = []
    try:
        # Silent connections are not idle keep-alive ones: nothing to reclaim, so beyond the two
        # workers' 10 each a new connection is closed at once (the 3 s head deadline is far).
        for _ in range(40):
            held.append(socket.create_connection(("127.0.0.1", gw.port), timeout=10))
        counted(gw, "gateway_protocol_refusals_total", before + 20, reason="connection.limit")
    finally:
        for s in held:
            s.close()


def test_refusals_log_no_errors(gw: Proc) -> None:
    exchange(gw, b"NOT HTTP\r\n\r\n")
    exchange(gw, UPGRADE)
    log = gw.log()
    assert "Traceback" not in log
    assert '"level": "error"' not in log and '"level":"error"' not in log


def test_only_uvicorns_parser_warning_is_dropped_from_the_server_log() -> None:
    import logging

    from gateway.protocol import protocol_for

    logger = logging.getLogger("uvicorn.error")
    protocol_for(None)
    protocol_for(None)  # every worker start asks again: the filter is on the logger once
    mine = [f for f in logger.filters if type(f).__name__ == "_ParserRefusalWarning"]
    assert len(mine) == 1

    def kept(msg: str, level: int = logging.WARNING) -> bool:
        return logger.filter(logging.LogRecord("uvicorn.error", level, __file__, 1, msg, None, None)) is not False

    assert not kept(PARSER_WARNING)
    assert kept("Exception in ASGI application", logging.ERROR)
    assert kept("Invalid HTTP request received. (another text)")
    assert kept("Unsupported upgrade request.")
