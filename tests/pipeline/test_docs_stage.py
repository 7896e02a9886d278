"""DocsStage on its own, driven over ASGI with a loaded OpenAPI document: what each documentation
endpoint answers (status, exact headers, body; HEAD; 304 on a matching If-None-Match), 405 for any
other method, and the requests the stage steps aside for so routing refuses them like any other
undeclared path (outside /v1/, no `api:` section, an endpoint switched off, a page without the
document it renders, an unknown asset or docs path)."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.openapi import docs
from gateway.openapi.document import ApiDocument, load_document
from gateway.openapi.policy import ApiPolicy
from gateway.pipeline import docs as docs_stage
from gateway.pipeline.docs import DocsStage
from gateway.policy.schema import ApiSpec
from tests.pipeline.stage_kit import RECEIVE, SEND, Downstream, stage_scope

DOCUMENT, PAGE, ERRORS = "/v1/openapi.json", "/v1/docs", "/v1/docs/errors"
INIT_JS, CSS = "/v1/docs/assets/init.js", "/v1/docs/assets/gateway.css"
COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
          (b"cross-origin-resource-policy", b"same-origin")]
PAGE_HEADERS = [(b"cache-control", b"public, max-age=300"), (b"content-security-policy", docs.CSP),
                (b"x-frame-options", b"DENY")]
HTML = b"text/html; charset=utf-8"
JS = b"text/javascript; charset=utf-8"


def document(tmp: Path, info: dict[str, Any] | None = None, name: str = "doc") -> ApiDocument:
    """A small OpenAPI 3.1 document loaded as the policy loads `openapi.yaml`."""
    d = tmp / name
    d.mkdir()
    data: dict[str, Any] = {"openapi": "3.1.0", "paths": {"/v1/items": {"get": {"responses": {"200": {
        "description": "ok"}}}}}}
    if info is not None:
        data["info"] = info
    (d / "openapi.yaml").write_text(json.dumps(data))
    errors: list[str] = []
    doc = load_document(d, errors)
    assert errors == [] and doc is not None
    return doc


@pytest.fixture
def doc(tmp_path: Path) -> ApiDocument:
    return document(tmp_path, {"title": "Items <API>", "version": "1"})


def api(doc: ApiDocument | None, **switches: bool) -> ApiPolicy:
    return ApiPolicy(ApiSpec(**switches), doc)


def context(api_policy: ApiPolicy | None) -> RequestContext:
    sections = {} if api_policy is None else {"compiled.api": api_policy}
    return RequestContext("req-docs-1", "192.0.2.1", SimpleNamespace(sections=sections))  # type: ignore[arg-type]


class Recorder:
    """The ASGI `send`: records every message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(dict(message))


def scope_for(ctx: RequestContext, path: str, method: str = "GET",
              headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    scope = stage_scope(ctx, method, headers)
    scope["path"] = path
    return scope


async def served(ctx: RequestContext, path: str, method: str = "GET",
                 headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) of the stage's own answer; checks it answered once and alone."""
    down, send = Downstream(), Recorder()
    await DocsStage(down)(scope_for(ctx, path, method, headers), RECEIVE, send)
    assert down.reached == []
    assert [m["type"] for m in send.messages] == ["http.response.start", "http.response.body"]
    start, body = send.messages
    assert ctx.status == start["status"]
    assert set(body) == {"type", "body"}  # no more_body: the answer is complete
    return start["status"], list(start["headers"]), body["body"]


async def passes(ctx: RequestContext, path: str, method: str = "GET",
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The stage steps aside: the next stage gets exactly what the stage got."""
    down = Downstream()
    scope = scope_for(ctx, path, method, headers)
    await DocsStage(down)(scope, RECEIVE, SEND)  # SEND fails the test if the stage answers
    assert down.handed == [(scope, RECEIVE, SEND)]
    assert ctx.status == 0


def expected(etag: bytes, extra: list[tuple[bytes, bytes]], ctype: bytes | None = None,
             length: int | None = None) -> list[tuple[bytes, bytes]]:
    out = [(b"etag", etag), (b"x-request-id", b"req-docs-1"), *COMMON, *extra]
    if ctype is not None:
        out += [(b"content-type", ctype), (b"content-length", str(length).encode())]
    return sorted(out)


# --- stepping aside -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/v2/openapi.json", "/v1", "/", "/docs/assets/init.js",
                                  "/v1openapi.json"])
async def test_paths_outside_v1_pass_without_reading_the_policy(path: str) -> None:
    # A policy with no `sections` at all: reading it would fail the test.
    ctx = RequestContext("req-docs-1", "192.0.2.1", SimpleNamespace())  # type: ignore[arg-type]
    await passes(ctx, path)
    await passes(ctx, path, "POST")


@pytest.mark.parametrize("path", [DOCUMENT, PAGE, ERRORS, INIT_JS])
async def test_without_an_api_section_every_docs_path_passes(path: str) -> None:
    await passes(context(None), path)
    await passes(context(None), path, "POST")


@pytest.mark.parametrize("path", ["/v1/items", "/v1/openapi.json/", "/v1/openapi.yaml", "/v1/docs/", "/v1/docs/x",
                                  "/v1/docs/errors/", "/v1/docs/assets/", "/v1/docs/assets/nope.js",
                                  "/v1/docs/assets/../init.js", "/v1/docs/assets/init.js/", "/v1/docs/assetsinit.js",
                                  "/v1/OPENAPI.JSON", "/v1/Docs"])
async def test_other_v1_paths_pass_even_with_everything_on(doc: ApiDocument, path: str) -> None:
    await passes(context(api(doc)), path)
    await passes(context(api(doc)), path, "DELETE")


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_serve_document_off_takes_the_document_and_the_page_away(doc: ApiDocument, method: str) -> None:
    ctx_api = api(doc, serve_document=False)
    await passes(context(ctx_api), DOCUMENT, method)
    await passes(context(ctx_api), PAGE, method)  # the page renders the document: nothing to show


async def test_serve_document_off_keeps_the_reason_catalogue_and_assets(doc: ApiDocument) -> None:
    ctx_api = api(doc, serve_document=False)
    assert (await served(context(ctx_api), ERRORS))[0] == 200
    assert (await served(context(ctx_api), INIT_JS))[0] == 200


@pytest.mark.parametrize("path", [PAGE, ERRORS, INIT_JS, CSS])
async def test_serve_docs_off_takes_the_page_catalogue_and_assets_away(doc: ApiDocument, path: str) -> None:
    await passes(context(api(doc, serve_docs=False)), path)
    await passes(context(api(doc, serve_docs=False)), path, "PUT")


async def test_serve_docs_off_keeps_the_document(doc: ApiDocument) -> None:
    status, _, body = await served(context(api(doc, serve_docs=False)), DOCUMENT)
    assert (status, body) == (200, doc.json_bytes)


async def test_without_a_loaded_document_only_the_catalogue_and_assets_are_served() -> None:
    ctx_api = api(None, document=False)
    await passes(context(ctx_api), DOCUMENT)
    await passes(context(ctx_api), PAGE)
    assert (await served(context(ctx_api), ERRORS))[0] == 200
    assert (await served(context(ctx_api), CSS))[0] == 200


async def test_everything_off_passes_every_docs_path(doc: ApiDocument) -> None:
    for path in (DOCUMENT, PAGE, ERRORS, INIT_JS):
        await passes(context(api(doc, serve_document=False, serve_docs=False)), path)


# --- what is served -------------------------------------------------------------------------------

async def test_the_document_is_served_public_cacheable_and_to_any_origin(doc: ApiDocument) -> None:
    ctx = context(api(doc))
    status, headers, body = await served(ctx, DOCUMENT)
    assert (status, body) == (200, doc.json_bytes)
    assert json.loads(body)["info"]["title"] == "Items <API>"
    assert sorted(headers) == expected(doc.etag, [(b"cache-control", b"public, max-age=300"),
                                                  (b"access-control-allow-origin", b"*")],
                                       b"application/json", len(doc.json_bytes))
    assert not any(k == b"set-cookie" for k, _ in headers)


async def test_the_page_is_served_framed_by_nobody_under_its_csp(doc: ApiDocument) -> None:
    page = docs.docs_page("Items <API>")
    status, headers, body = await served(context(api(doc)), PAGE)
    assert (status, body) == (200, page.body)
    assert b"<title>Items &lt;API&gt; \xe2\x80\x94 API documentation</title>" in body
    assert sorted(headers) == expected(page.etag, PAGE_HEADERS, HTML, len(page.body))


@pytest.mark.parametrize("info", [None, {"version": "1"}, {"title": "", "version": "1"}])
async def test_the_page_of_a_document_without_a_title_is_titled_api(tmp_path: Path, info: Any) -> None:
    status, _, body = await served(context(api(document(tmp_path, info))), PAGE)
    assert (status, body) == (200, docs.docs_page("API").body)
    assert b"<title>API \xe2\x80\x94 API documentation</title>" in body


async def test_the_reason_catalogue_is_served_as_a_page(doc: ApiDocument) -> None:
    page = docs.errors_page()
    status, headers, body = await served(context(api(doc)), ERRORS)
    assert (status, body) == (200, page.body)
    assert b'<tr id="route.sunset">' in body
    assert sorted(headers) == expected(page.etag, PAGE_HEADERS, HTML, len(page.body))


@pytest.mark.parametrize(("path", "name", "ctype"), [(INIT_JS, "init.js", JS),
                                                      (CSS, "gateway.css", b"text/css; charset=utf-8")])
async def test_an_asset_is_served_cacheable_for_a_day(doc: ApiDocument, path: str, name: str, ctype: bytes) -> None:
    asset = docs.assets()[name]
    status, headers, body = await served(context(api(doc)), path)
    assert (status, body) == (200, asset.body)
    assert sorted(headers) == expected(asset.etag, [(b"cache-control", b"public, max-age=86400")], ctype,
                                       len(asset.body))


@pytest.mark.parametrize("path", [DOCUMENT, PAGE, ERRORS, INIT_JS])
async def test_head_has_the_get_headers_and_no_body(doc: ApiDocument, path: str) -> None:
    _, get_headers, get_body = await served(context(api(doc)), path)
    status, headers, body = await served(context(api(doc)), path, "HEAD")
    assert (status, body) == (200, b"")
    assert headers == get_headers
    assert (b"content-length", str(len(get_body)).encode()) in headers and get_body


async def test_a_reloaded_document_is_served_in_place_of_the_old_one(tmp_path: Path) -> None:
    old = document(tmp_path, {"title": "Old", "version": "1"}, "old")
    new = document(tmp_path, {"title": "New", "version": "2"}, "new")
    assert old.etag != new.etag
    for d in (old, new, old, new):
        _, headers, body = await served(context(api(d)), DOCUMENT)
        assert body == d.json_bytes
        assert (b"etag", d.etag) in headers
        assert (b"content-type", b"application/json") in headers


async def test_the_document_is_hashed_once_per_load_not_per_request(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The served document is the whole API contract (hundreds of KB): building its Asset hashes it,
    # which must not happen on every GET. One document is kept: a reload replaces it.
    built: list[bytes] = []

    class Counting(docs.Asset):
        def __init__(self, body: bytes, content_type: str) -> None:
            built.append(body)
            super().__init__(body, content_type)

    monkeypatch.setattr(docs_stage, "Asset", Counting)
    old = document(tmp_path, {"title": "Once", "version": "1"}, "old")
    new = document(tmp_path, {"title": "Twice", "version": "2"}, "new")
    for _ in range(3):
        assert (await served(context(api(old)), DOCUMENT))[2] == old.json_bytes
    assert built == [old.json_bytes]
    for _ in range(2):
        assert (await served(context(api(new)), DOCUMENT))[2] == new.json_bytes
    assert built == [old.json_bytes, new.json_bytes]


# --- conditional requests -------------------------------------------------------------------------

def etag_of(path: str, doc: ApiDocument) -> bytes:
    return {DOCUMENT: doc.etag, PAGE: docs.docs_page("Items <API>").etag, ERRORS: docs.errors_page().etag,
            INIT_JS: docs.assets()["init.js"].etag}[path]


@pytest.mark.parametrize("path", [DOCUMENT, PAGE, ERRORS, INIT_JS])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_matching_if_none_match_is_answered_304_without_a_body(doc: ApiDocument, path: str,
                                                                       method: str) -> None:
    etag = etag_of(path, doc)
    _, full, _ = await served(context(api(doc)), path)
    status, headers, body = await served(context(api(doc)), path, method, [(b"if-none-match", etag)])
    assert (status, body) == (304, b"")
    # The 304 carries the validator and caching headers, not the representation's.
    assert headers == [h for h in full if h[0] not in (b"content-type", b"content-length")]
    assert (b"etag", etag) in headers


@pytest.mark.parametrize("value", [
    pytest.param(lambda e: e, id="exact"),
    pytest.param(lambda e: b"W/" + e, id="weak"),
    pytest.param(lambda e: b"*", id="star"),
    pytest.param(lambda e: b'"other", ' + e, id="in_a_list"),
    pytest.param(lambda e: e + b',"other"', id="first_in_a_list_without_space"),
    pytest.param(lambda e: b'"a",  W/' + e + b'  ,"b"', id="weak_padded_in_a_list"),
    pytest.param(lambda e: b'"a", *', id="star_in_a_list"),
])
async def test_if_none_match_is_compared_weakly_as_a_list(doc: ApiDocument, value: Any) -> None:
    status, _, body = await served(context(api(doc)), DOCUMENT, headers=[(b"if-none-match", value(doc.etag))])
    assert (status, body) == (304, b"")


@pytest.mark.parametrize("value", [
    pytest.param(lambda e: b'"other"', id="other_tag"),
    pytest.param(lambda e: b"", id="empty"),
    pytest.param(lambda e: e.strip(b'"'), id="unquoted"),
    pytest.param(lambda e: e[:-2] + b'"', id="prefix"),
    pytest.param(lambda e: b"W/" + e[:-2] + b'"', id="weak_prefix"),
    pytest.param(lambda e: b"w/" + e, id="lower_case_weak"),
    pytest.param(lambda e: e + e, id="two_tags_without_a_comma"),
    pytest.param(lambda e: b"**", id="not_a_star"),
])
async def test_a_non_matching_if_none_match_gets_the_full_answer(doc: ApiDocument, value: Any) -> None:
    status, _, body = await served(context(api(doc)), DOCUMENT, headers=[(b"if-none-match", value(doc.etag))])
    assert (status, body) == (200, doc.json_bytes)


async def test_other_validators_do_not_make_a_304(doc: ApiDocument) -> None:
    headers = [(b"if-match", doc.etag), (b"etag", doc.etag), (b"if-modified-since", b"Thu, 01 Jan 2099 00:00:00 GMT")]
    status, _, body = await served(context(api(doc)), DOCUMENT, headers=headers)
    assert (status, body) == (200, doc.json_bytes)


async def test_a_matching_first_if_none_match_line_is_a_304_whatever_follows(doc: ApiDocument) -> None:
    lines = [(b"if-none-match", doc.etag), (b"if-none-match", b'"other"')]
    status, _, body = await served(context(api(doc)), DOCUMENT, headers=lines)
    assert (status, body) == (304, b"")


async def test_if_none_match_lines_are_one_list(doc: ApiDocument) -> None:
    """RFC 9110: a list header's lines combine; an ETag on a later line matches too."""
    lines = [(b"if-none-match", b'"other"'), (b"if-none-match", b'"another", ' + doc.etag)]
    status, _, body = await served(context(api(doc)), DOCUMENT, headers=lines)
    assert (status, body) == (304, b"")
    status, _, _ = await served(context(api(doc)), DOCUMENT,
                                headers=[(b"if-none-match", b'"other"'), (b"if-none-match", b'"x"')])
    assert status == 200


async def test_one_page_s_etag_does_not_validate_another(doc: ApiDocument) -> None:
    status, _, _ = await served(context(api(doc)), PAGE, headers=[(b"if-none-match", doc.etag)])
    assert status == 200


# --- methods --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [DOCUMENT, PAGE, ERRORS, INIT_JS])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "get"])
async def test_any_other_method_is_refused_405_with_allow(doc: ApiDocument, path: str, method: str) -> None:
    ctx, down = context(api(doc)), Downstream()
    with pytest.raises(GatewayError) as info:
        await DocsStage(down)(scope_for(ctx, path, method, [(b"if-none-match", b"*")]), RECEIVE, SEND)
    err = info.value
    assert (err.status, err.reason) == (405, "route.method_not_allowed")
    assert err.detail == f"{method} is not allowed here"
    assert err.headers == {"Allow": "GET, HEAD"}
    assert down.reached == [] and ctx.status == 0
