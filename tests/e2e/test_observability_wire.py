"""Request ids, the access log and W3C trace context, over real sockets.

Threat (request ids): an anonymous caller sends `X-Request-ID: <someone else's id>` to plant it in
the audit trail. Only a trusted proxy may set the id; everyone else's value is kept apart as
`client_request_id`.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import select
import socket
import termios
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support.gateway_proc import (
    TEST_JWT_SECRET,
    Proc,
    bundled_upstream,
    echo_upstream,
    gateway,
    metric,
    start_gateway,
    wait_until,
    write_policy,
)

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    auth:
      jwt: {algorithms: [HS256]}
    routes:
      - {id: echo, path: /v1/echo, methods: [GET, POST], auth: none, upstream_path: /echo}
      - {id: private, path: /v1/private, methods: [GET], auth: jwt, upstream_path: /private}
"""
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


def token() -> str:
    now = int(time.time())
    return jwt.encode({"sub": "alice", "org_id": "org-a", "org_role": "member", "aud": "authenticated",
                       "iat": now, "exp": now + 300}, TEST_JWT_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    with echo_upstream() as up:
        yield up


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(tmp_path_factory.mktemp("pol"), gateway=POLICY)


class Gw:
    def __init__(self, proc: Proc, logs: Path) -> None:
        self.proc, self.logs = proc, logs

    @property
    def url(self) -> str:
        return self.proc.url

    def lines(self, name: str) -> list[dict[str, Any]]:
        path = self.logs / name
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def access(self, rid: str) -> dict[str, Any]:
        assert wait_until(lambda: any(e["request_id"] == rid for e in self.lines("access.log"))), rid
        return next(e for e in self.lines("access.log") if e["request_id"] == rid)

    def audit(self, rid: str) -> dict[str, Any]:
        assert wait_until(lambda: any(e.get("request_id") == rid for e in self.lines("audit.log")), 20), rid
        return next(e for e in self.lines("audit.log") if e.get("request_id") == rid)


def _gw(tmp: Path, policy: Path, upstream: Proc, env: dict[str, str]) -> Iterator[Gw]:
    full = {"GATEWAY_ACCESS_LOG": str(tmp / "access.log"), "GATEWAY_AUDIT_LOG": str(tmp / "audit.log"), **env}
    with gateway(policy, upstream.url, full) as proc:
        yield Gw(proc, tmp)


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory, policy: Path, upstream: Proc) -> Iterator[Gw]:
    yield from _gw(tmp_path_factory.mktemp("public"), policy, upstream, {})


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory, policy: Path, upstream: Proc) -> Iterator[Gw]:
    yield from _gw(tmp_path_factory.mktemp("proxied"), policy, upstream, {"GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"})


def upstream_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.json()["headers"]}


# --- request ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", [
    pytest.param("victims-request-id-0001", id="well_formed"),
    pytest.param("x" * 300, id="too_long"),
    pytest.param('bad id "quoted" <tag>', id="not_an_id"),
])
def test_untrusted_client_cannot_choose_the_request_id(public: Gw, sent: str) -> None:
    r = httpx.post(f"{public.url}/v1/echo", headers={"X-Request-ID": sent}, content=b"{}")
    assert r.status_code in (200, 400)  # hygiene refuses control bytes in a header: still logged
    rid = r.headers["x-request-id"]
    assert rid != sent and len(rid) == 24
    if r.status_code == 200:
        assert upstream_headers(r)["x-request-id"] == rid  # the upstream gets ours too
    expected = "".join(c if " " <= c <= "~" else "?" for c in sent[:128])
    assert public.access(rid)["client_request_id"] == expected
    audit = public.audit(rid)  # a POST (or a refusal): audited
    assert audit["request_id"] == rid and audit["client_request_id"] == expected
    assert all(e.get("request_id") != sent for e in public.lines("audit.log") + public.lines("access.log"))


def test_trusted_proxy_sets_the_request_id(behind_proxy: Gw) -> None:
    r = httpx.get(f"{behind_proxy.url}/v1/echo", headers={"X-Request-ID": "lb-assigned-id-0042"})
    assert r.headers["x-request-id"] == "lb-assigned-id-0042"
    assert upstream_headers(r)["x-request-id"] == "lb-assigned-id-0042"
    assert "client_request_id" not in behind_proxy.access("lb-assigned-id-0042")


def test_trusted_proxy_malformed_id_is_replaced(behind_proxy: Gw) -> None:
    r = httpx.get(f"{behind_proxy.url}/v1/echo", headers={"X-Request-ID": "short"})
    rid = r.headers["x-request-id"]
    assert rid != "short" and behind_proxy.access(rid)["client_request_id"] == "short"


# --- access log ----------------------------------------------------------------------------------


def test_access_log_line_for_allowed_and_refused(public: Gw) -> None:
    tok = token()
    ok = httpx.get(f"{public.url}/v1/private", headers={"Authorization": f"Bearer {tok}", "User-Agent": "probe/1.0"})
    denied = httpx.get(f"{public.url}/v1/private")
    missing = httpx.get(f"{public.url}/v1/nowhere")
    a = public.access(ok.headers["x-request-id"])
    assert (a["type"], a["route"], a["method"], a["status"], a["decision"]) == ("access", "private", "GET", 200, "allow")
    assert (a["sub"], a["org"], a["user_agent"], a["client_ip"]) == ("alice", "org-a", "probe/1.0", "127.0.0.1")
    assert a["bytes_out"] == len(ok.content) and a["bytes_in"] == 0
    assert a["upstream_ms"] is not None and a["duration_ms"] >= a["upstream_ms"]
    assert len(a["trace_id"]) == 32 and a["time"].endswith("Z")
    d = public.access(denied.headers["x-request-id"])
    assert (d["status"], d["decision"], d["reason"], d["upstream_ms"]) == (401, "deny", "auth.missing_token", None)
    m = public.access(missing.headers["x-request-id"])
    assert (m["status"], m["route"]) == (404, None)
    text = (public.logs / "access.log").read_text()
    assert tok not in text and tok.split(".")[1] not in text  # never the token


def test_access_log_counts_request_bytes(public: Gw) -> None:
    r = httpx.post(f"{public.url}/v1/echo", content=b"x" * 1000)
    assert public.access(r.headers["x-request-id"])["bytes_in"] == 1000


def test_access_log_off_and_stdout(tmp_path: Path, policy: Path, upstream: Proc) -> None:
    with gateway(policy, upstream.url, {"GATEWAY_ACCESS_LOG": "off"}) as gw:
        rid = httpx.get(f"{gw.url}/v1/echo").headers["x-request-id"]
        time.sleep(0.5)
        assert rid not in gw.log()
    with gateway(policy, upstream.url, {"GATEWAY_ACCESS_LOG": "stdout"}) as gw:
        rid = httpx.get(f"{gw.url}/v1/echo").headers["x-request-id"]
        assert wait_until(lambda: f'"request_id":"{rid}"' in gw.log())
        line = next(x for x in gw.log().splitlines() if f'"request_id":"{rid}"' in x)
        assert json.loads(line)["type"] == "access"


# A full pipe holds 16 pages, and a whole-line write that does not fit in the last page's room
# starts a new one: with batches of a few KiB, "full" was seen at 39,286 bytes of 65,536. What the
# tests need is that the writer is held up, not a byte count near 64 KiB.
PIPE_FULL = 16_384


def queued_bytes(fd: int) -> int:
    """How many bytes wait in the pipe `fd` (FIONREAD)."""
    queued = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, queued)
    return queued[0]


def request_ids_read(fd: int, wanted: set[str], timeout: float = 30) -> set[str]:
    """Read JSON lines from the pipe `fd` until every id in `wanted` was seen (or `timeout`), and
    return the request ids seen. Every line must parse whole: a torn line fails the test."""
    seen: set[str] = set()
    buf = b""
    deadline = time.monotonic() + timeout
    while not wanted <= seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            buf += os.read(fd, 1 << 16)
            *whole, buf = buf.split(b"\n")
            seen.update(str(json.loads(x).get("request_id")) for x in whole if x)
    return seen


def test_a_stdout_nobody_reads_never_stalls_the_gateway(policy: Path, upstream: Proc) -> None:
    """The access log goes to a pipe whose reader stopped (a stuck log shipper): the gateway keeps
    answering at its usual pace, and once the reader is back every line is whole JSON."""
    r, w = os.pipe()
    gw = start_gateway(policy, upstream.url, {"GATEWAY_ACCESS_LOG": "stdout"}, stdout=w)
    os.close(w)  # the gateway holds the only write end
    try:
        sent = []
        with httpx.Client(timeout=10) as client:  # ~300 bytes a line: 600 lines are 3x the pipe
            for _ in range(600):
                resp = client.get(f"{gw.url}/v1/echo")
                assert resp.status_code == 200
                sent.append(resp.headers["x-request-id"])
        assert queued_bytes(r) >= PIPE_FULL, queued_bytes(r)  # the pipe really is full
        assert set(sent) <= request_ids_read(r, set(sent))
    finally:
        gw.stop()
        os.close(r)


def test_a_stderr_nobody_reads_never_stalls_the_gateway(policy: Path, upstream: Proc) -> None:
    """Every denial logs a line to stderr at the default level. With stderr a pipe whose reader
    stopped, a flood of refused requests used to block the event loop once the pipe was full (273
    refusals, then every request timed out). Now the refusals and the valid requests after them
    are answered, and once the reader is back every line arrives whole."""
    r, w = os.pipe()
    gw = start_gateway(policy, upstream.url, {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_ACCESS_LOG": "off"}, stderr=w)
    os.close(w)
    try:
        refused = []
        with httpx.Client(timeout=10) as client:  # ~240 bytes a line: 800 lines are 3x the pipe
            for i in range(800):
                resp = client.get(f"{gw.url}/v1/nothing-here/{i}")
                assert resp.status_code == 404
                refused.append(resp.headers["x-request-id"])
            assert [client.get(f"{gw.url}/v1/echo").status_code for _ in range(20)] == [200] * 20
        assert queued_bytes(r) >= PIPE_FULL, queued_bytes(r)  # the pipe really is full
        assert set(refused) <= request_ids_read(r, set(refused))
    finally:
        gw.stop()
        os.close(r)


def refuse_pipelined(port: int, count: int, conns: int = 4) -> int:
    """Send `count` requests for a path no route has, pipelined on `conns` keep-alive connections
    at once, and return how many 404 answers came back."""
    def one(n: int) -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            got = 0
            for start in range(0, n, 250):
                batch = min(250, n - start)
                sock.sendall(b"GET /v1/nothing-here HTTP/1.1\r\nHost: x\r\n\r\n" * batch)
                buf = b""
                while buf.count(b"HTTP/1.1 404 ") < batch:
                    chunk = sock.recv(1 << 16)
                    assert chunk, "the gateway closed the connection"
                    buf += chunk
                got += buf.count(b"HTTP/1.1 404 ")
            return got

    with ThreadPoolExecutor(conns) as pool:
        return sum(pool.map(one, [count // conns] * conns))


def test_lines_dropped_while_stderr_is_stuck_are_counted_in_a_metric(policy: Path, upstream: Proc) -> None:
    """The log.dropped note can only arrive once stderr takes lines again; while it is stuck, an
    alert watches `gateway_server_log_dropped_total` on the admin listener. 12,000 refusals log
    12,000 lines: more than the pipe plus the 10,000-line queue hold, so some must be dropped."""
    r, w = os.pipe()
    gw = start_gateway(policy, upstream.url, {"GATEWAY_LOG_LEVEL": "info", "GATEWAY_ACCESS_LOG": "off"}, stderr=w)
    os.close(w)
    try:
        assert refuse_pipelined(gw.port, 12_000) == 12_000
        assert httpx.get(f"{gw.url}/v1/echo", timeout=10).status_code == 200  # still answering
        dropped = 0.0
        deadline = time.monotonic() + 20  # metrics reach the admin listener within a second or two
        while dropped == 0 and time.monotonic() < deadline:
            dropped = metric(gw, "gateway_server_log_dropped_total")
            time.sleep(0.2)
        assert dropped > 0
        assert queued_bytes(r) >= PIPE_FULL, queued_bytes(r)  # stderr really is stuck
        buf, notes = b"", []
        deadline = time.monotonic() + 30
        while not notes and time.monotonic() < deadline:  # the reader is back
            ready, _, _ = select.select([r], [], [], 0.5)
            if ready:
                buf += os.read(r, 1 << 20)
                *whole, buf = buf.split(b"\n")  # whole lines only; the rest waits for its end
                notes += [json.loads(x) for x in whole if b'"log.dropped"' in x]
        assert notes, "no log.dropped note once stderr was read again"
        # The note says what was dropped until stderr moved again; the metric counted each of those.
        assert 0 < int(notes[0]["msg"].split()[0]) <= metric(gw, "gateway_server_log_dropped_total")
    finally:
        gw.stop()
        os.close(r)


# --- trace context -------------------------------------------------------------------------------


def test_trace_is_continued_with_the_gateway_span_as_parent(public: Gw) -> None:
    r = httpx.get(f"{public.url}/v1/echo", headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"})
    seen = upstream_headers(r)
    version, trace, parent, flags = seen["traceparent"].split("-")
    assert (version, trace, flags) == ("00", CLIENT_TRACE, "01")
    assert parent != CLIENT_SPAN and len(parent) == 16  # the gateway's own span
    assert seen["tracestate"] == "vendor=abc"
    rid = r.headers["x-request-id"]
    assert public.access(rid)["trace_id"] == CLIENT_TRACE


@pytest.mark.parametrize("value", [
    pytest.param(None, id="absent"),
    pytest.param("00-" + "0" * 32 + "-" + CLIENT_SPAN + "-01", id="zero_trace"),
    pytest.param(f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-01", id="upper_case"),
    pytest.param(f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01", id="version_ff"),
    pytest.param(f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra", id="v00_with_extra"),
    pytest.param("garbage", id="garbage"),
])
def test_missing_or_malformed_traceparent_starts_a_new_trace(public: Gw, value: str | None) -> None:
    headers = {"tracestate": "vendor=abc"}
    if value is not None:
        headers["traceparent"] = value
    r = httpx.get(f"{public.url}/v1/echo", headers=headers)
    seen = upstream_headers(r)
    _, trace, parent, _ = seen["traceparent"].split("-")
    assert trace != CLIENT_TRACE and trace != "0" * 32 and len(trace) == 32
    assert "tracestate" not in seen  # never without a valid traceparent
    assert public.access(r.headers["x-request-id"])["trace_id"] == trace


def test_trace_id_in_audit_record(public: Gw) -> None:
    r = httpx.post(f"{public.url}/v1/echo", headers={"traceparent": TRACEPARENT}, content=b"{}")
    assert public.audit(r.headers["x-request-id"])["trace_id"] == CLIENT_TRACE


def test_bundled_upstream_continues_the_trace(tmp_path: Path) -> None:
    from tests.support.gateway_proc import ROOT

    with bundled_upstream({"UPSTREAM_LOG_LEVEL": "info"}) as up, \
            gateway(ROOT / "policies", up.url, {"GATEWAY_ACCESS_LOG": str(tmp_path / "access.log")}) as gw:
        r = httpx.get(f"{gw.url}/v1/agents?orgId=org-a",
                      headers={"traceparent": TRACEPARENT, "Authorization": f"Bearer {token()}"})
        assert r.status_code == 200, r.text
        assert wait_until(lambda: f"trace={CLIENT_TRACE}" in up.log())
        line = next(x for x in up.log().splitlines() if f"trace={CLIENT_TRACE}" in x)
        parent = line.split("parent=")[1].split()[0]
        assert parent not in ("-", CLIENT_SPAN) and len(parent) == 16
