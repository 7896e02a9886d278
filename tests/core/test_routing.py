"""Default-deny routing, versioned paths mapped upstream, 404/405, problem+json."""

from __future__ import annotations

import httpx
import pytest

from tests.support.gateway_proc import Proc


def test_declared_route_is_forwarded_to_unversioned_path(gw: Proc) -> None:
    r = httpx.get(f"{gw.url}/v1/echo?a=1")
    assert r.status_code == 200
    body = r.json()
    assert body["path"] == "/echo" and body["query"] == "a=1"


def test_template_params_are_rebuilt_upstream(gw: Proc) -> None:
    r = httpx.get(f"{gw.url}/v1/items/abc-123")
    assert r.status_code == 200
    assert r.json()["raw_path"] == "/items/abc-123"


@pytest.mark.parametrize("path", ["/v1/nothing", "/echo", "/v2/echo", "/v1/echo/extra", "/v1/items", "/"],
                         ids=["unknown", "unversioned", "other_version", "deeper", "param_missing", "root"])
def test_undeclared_path_is_404(gw: Proc, path: str) -> None:
    r = httpx.get(gw.url + path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["reason"] == "route.not_found"
    assert body["request_id"] == r.headers["x-request-id"]
    assert set(body) == {"type", "title", "status", "detail", "reason", "request_id"}


def test_undeclared_method_is_405_with_allow(gw: Proc) -> None:
    r = httpx.patch(f"{gw.url}/v1/echo")
    assert r.status_code == 405
    assert r.json()["reason"] == "route.method_not_allowed"
    assert r.headers["allow"] == "GET, HEAD, POST, PUT"


def test_plain_options_is_405_not_forwarded(gw: Proc) -> None:
    r = httpx.options(f"{gw.url}/v1/echo")
    assert r.status_code == 405


def test_incoming_request_id_from_untrusted_peer_is_replaced(gw: Proc) -> None:
    # Only a trusted proxy may set the id (tests/e2e/test_observability_wire.py has both sides).
    r = httpx.get(f"{gw.url}/v1/echo", headers={"X-Request-ID": "abcdefgh-1234"})
    assert r.headers["x-request-id"] != "abcdefgh-1234"
    sent = dict((k.lower(), v) for k, v in r.json()["headers"])
    assert sent["x-request-id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("rid", ["short", "has space in it", "x" * 200, "inject\"quote1"],
                         ids=["too_short", "space", "too_long", "quote"])
def test_malformed_request_id_is_replaced(gw: Proc, rid: str) -> None:
    r = httpx.get(f"{gw.url}/v1/echo", headers={"X-Request-ID": rid})
    assert r.headers["x-request-id"] != rid
    assert len(r.headers["x-request-id"]) == 24


def test_health_endpoints(gw: Proc) -> None:
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{gw.url}/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}  # status only on the public port (detail: admin listener)


def test_request_ids_are_distinct_hex_and_not_shared_with_a_forked_child() -> None:
    import os

    from gateway.pipeline.requestid import new_request_id

    ids = [new_request_id() for _ in range(3 * new_request_id.BATCH + 5)]  # several refills
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id must not be the parent's next one
        os.write(w, new_request_id().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 24 and child != new_request_id()
