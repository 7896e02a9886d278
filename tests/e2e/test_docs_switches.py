"""`api.serve_document` and `api.serve_docs` switch the documentation endpoints off, over real sockets.

Switched off, an endpoint is not there: it answers exactly what a path the route table does not
declare answers (404 `route.not_found`, same problem body and headers), for any method, and
`gateway explain` shows the request passing the docs stage to be refused by route matching. With
the shipped switches (both on) the same requests are answered by the docs stage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.explain import explain_main
from gateway.policy.loader import load_policy
from gateway.settings import Settings, effective_env
from tests.support.gateway_proc import ROOT, Proc, echo_upstream, gateway, shipped_policy

DOCUMENT = "/v1/openapi.json"
PAGE = "/v1/docs"
ERRORS = "/v1/docs/errors"
MISSING = "/v1/no-such-route"
# Headers that differ between any two answers, whatever they are.
PER_REQUEST = {"date", "x-request-id", "content-length", "traceparent", "server"}


def policy_with(tmp: Path, **switches: bool) -> Path:
    """The shipped policy with `api.<key>: <value>` edited in place (comments kept)."""
    d = shipped_policy(tmp)
    text = (d / "gateway.yaml").read_text()
    for key, value in switches.items():
        old = f"  {key}: true"
        assert text.count(old) == 1, f"gateway.yaml no longer has `{old.strip()}` once"
        text = text.replace(old, f"  {key}: {str(value).lower()}")
    (d / "gateway.yaml").write_text(text)
    return d


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    with echo_upstream() as up:
        yield up


def _serve(tmp: Path | None, upstream: Proc, **switches: bool) -> Iterator[Proc]:
    with gateway(policy_with(tmp, **switches) if tmp is not None else ROOT / "policies", upstream.url) as gw:
        yield gw


@pytest.fixture(scope="module")
def shipped(upstream: Proc) -> Iterator[Proc]:
    yield from _serve(None, upstream)


@pytest.fixture(scope="module")
def no_document(tmp_path_factory: pytest.TempPathFactory, upstream: Proc) -> Iterator[Proc]:
    yield from _serve(tmp_path_factory.mktemp("nodoc"), upstream, serve_document=False)


@pytest.fixture(scope="module")
def no_docs(tmp_path_factory: pytest.TempPathFactory, upstream: Proc) -> Iterator[Proc]:
    yield from _serve(tmp_path_factory.mktemp("nodocs"), upstream, serve_docs=False)


def asset_path(gw: Proc) -> str:
    """One of the docs page's static files, as the page links it."""
    page = httpx.get(gw.url + PAGE)
    assert page.status_code == 200
    refs = re.findall(r'(?:src|href)="(/v1/docs/assets/[^"]+)"', page.text)
    assert refs, page.text[:500]
    return str(refs[0])


def shape(r: httpx.Response) -> tuple[int, dict[str, str], dict[str, Any]]:
    """What is the same in two answers to two different absent paths."""
    headers = {k: v for k, v in r.headers.items() if k not in PER_REQUEST}
    body = r.json()
    for key in ("instance", "request_id", "detail"):  # name the request or its path
        body.pop(key, None)
    return r.status_code, headers, body


def assert_absent(gw: Proc, path: str) -> None:
    for method in ("GET", "HEAD", "POST"):
        got = httpx.request(method, gw.url + path)
        like = httpx.request(method, gw.url + MISSING)
        assert got.status_code == like.status_code == 404, (method, path, got.status_code)
        if method == "HEAD":
            assert {k: v for k, v in got.headers.items() if k not in PER_REQUEST} == \
                {k: v for k, v in like.headers.items() if k not in PER_REQUEST}, (method, path)
            continue
        assert got.json()["reason"] == "route.not_found", (method, path, got.text)
        assert shape(got) == shape(like), (method, path)


def assert_served(gw: Proc, path: str, content_type: str) -> None:
    r = httpx.get(gw.url + path)
    assert r.status_code == 200, (path, r.text[:200])
    assert r.headers["content-type"].startswith(content_type) and r.content


def test_shipped_switches_serve_everything(shipped: Proc) -> None:
    assert_served(shipped, DOCUMENT, "application/json")
    assert_served(shipped, PAGE, "text/html")
    assert_served(shipped, ERRORS, "text/html")
    assert_served(shipped, asset_path(shipped), "")
    assert httpx.post(shipped.url + DOCUMENT).status_code == 405  # answered here, not by routing


def test_serve_document_false_removes_the_document_and_the_page(no_document: Proc, shipped: Proc) -> None:
    assert_absent(no_document, DOCUMENT)
    assert_absent(no_document, PAGE)  # the page renders the document: without it, nothing to show
    # the reason catalogue stays: every problem's `type` points into it
    assert_served(no_document, ERRORS, "text/html")
    r = httpx.get(no_document.url + "/v1/agents")
    assert r.status_code == 401 and r.json()["type"] == "/v1/docs/errors#auth.missing_token"


def test_serve_docs_false_removes_the_page_the_catalogue_and_the_assets(no_docs: Proc, shipped: Proc) -> None:
    asset = asset_path(shipped)
    for path in (PAGE, ERRORS, asset):
        assert_absent(no_docs, path)
    assert_served(no_docs, DOCUMENT, "application/json")


# --- gateway explain: the same paths are absent from the route table ----------------------------

@pytest.fixture
def explain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY_ENV", "GATEWAY_REDIS_URL", "GATEWAY_JWT_JWKS_URL", "GATEWAY_JWT_ISSUER",
                 "GATEWAY_TRUSTED_PROXIES", "GATEWAY_AUDIT_LOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAY_JWT_SECRET", "test-docs-switch-jwt-secret-0123456789abcd")
    monkeypatch.setenv("GATEWAY_IDENTITY_SECRET", "test-docs-switch-identity-0123456789abcde")
    monkeypatch.setenv("KOMMO_WEBHOOK_SECRET", "test-docs-switch-kommo-path-token-0123")


def explain(capsys: pytest.CaptureFixture[str], policy: Path, path: str) -> dict[str, Any]:
    explain_main(["--policy", str(policy), "GET", path, "--json"])
    out, _ = capsys.readouterr()
    result: dict[str, Any] = json.loads(out)
    return result


def decisions(result: dict[str, Any]) -> dict[str, str]:
    return {s["stage"]: s["decision"] for s in result["steps"]}


@pytest.mark.usefixtures("explain_env")
def test_explain_shows_switched_off_endpoints_refused_by_routing(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    on = explain(capsys, ROOT / "policies", DOCUMENT)
    assert (on["status"], decisions(on)["docs"], decisions(on)["route match"]) == (200, "answered", "not reached")
    missing = explain(capsys, ROOT / "policies", MISSING)
    assert (missing["status"], missing["reason"]) == (404, "route.not_found")
    off = policy_with(tmp_path / "off", serve_document=False, serve_docs=False)
    for path in (DOCUMENT, PAGE, ERRORS):
        ex = explain(capsys, off, path)
        assert (ex["status"], ex["reason"], ex["route"]) == (404, "route.not_found", None), path
        assert decisions(ex)["docs"] == "passed" and decisions(ex)["route match"] == "denied", path
    # the route table (`gateway routes`) never lists them: they are not routes, on or off
    for policy in (ROOT / "policies", off):
        table = load_policy(policy, effective_env(Settings(), {}), False)
        assert not [r.id for r in table.routes if r.template.text.startswith(("/v1/openapi", "/v1/docs"))]
