"""The gateway's own documentation endpoints, answered before routing:

    GET /v1/openapi.json     the OpenAPI document (public, strong ETag, cacheable)
    GET /v1/docs             the rendered document (Swagger UI, assets served from here)
    GET /v1/docs/errors      the reason catalogue; every problem's `type` points into it
    GET /v1/docs/assets/...  the page's static files

Each is switched by the policy (`api.serve_document`, `api.serve_docs`); switched off, or with no
`api:` section, the paths fall through to routing, which refuses them like any undeclared path.
Only GET and HEAD are answered; these pages read no credentials and set no cookies.
"""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.errors import MethodNotAllowed
from gateway.openapi import docs
from gateway.openapi.docs import Asset
from gateway.openapi.policy import ApiPolicy
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send, header_all

_HEADERS_COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                   (b"cross-origin-resource-policy", b"same-origin")]


class DocsStage:
    """Serves the document, the docs page and the reason catalogue when the policy enables them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        ctx: RequestContext = scope["gateway"]
        api: ApiPolicy | None = ctx.policy.sections.get("compiled.api")
        asset = self._asset(path, api) if api is not None else None
        if asset is None:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed(detail=f"{method} is not allowed here", headers={"Allow": "GET, HEAD"})
        headers = [(b"etag", asset.etag), (b"x-request-id", ctx.request_id.encode()), *_HEADERS_COMMON]
        if path == docs.OPENAPI_JSON:
            headers.append((b"cache-control", b"public, max-age=300"))
            headers.append((b"access-control-allow-origin", b"*"))  # a public document, no credentials
        elif path.startswith(docs.ASSETS):
            headers.append((b"cache-control", b"public, max-age=86400"))
        else:
            headers.append((b"cache-control", b"public, max-age=300"))
            headers.append((b"content-security-policy", docs.CSP))
            headers.append((b"x-frame-options", b"DENY"))
        # A list header: several lines are one list (RFC 9110 §5.3), so each line is read.
        if _matches(b",".join(header_all(scope, b"if-none-match")) or None, asset.etag):
            ctx.status = 304
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-type", asset.content_type))
        headers.append((b"content-length", str(len(asset.body)).encode()))
        ctx.status = 200
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else asset.body})

    @staticmethod
    def _asset(path: str, api: ApiPolicy) -> Asset | None:
        spec = api.spec
        if path == docs.OPENAPI_JSON:
            doc = api.document
            if not spec.serve_document or doc is None:
                return None
            return _document_asset(doc.json_bytes, doc.etag)
        if not spec.serve_docs:
            return None
        if path == docs.DOCS:
            if api.document is None or not spec.serve_document:
                return None  # the page renders the document; without it there is nothing to show
            info = api.document.data.get("info") or {}
            return docs.docs_page(str(info.get("title") or "API"))
        if path == docs.ERRORS:
            return docs.errors_page()
        if path.startswith(docs.ASSETS):
            return docs.assets().get(path[len(docs.ASSETS):])
        return None


_doc_cache: dict[bytes, Asset] = {}


def _document_asset(body: bytes, etag: bytes) -> Asset:
    asset = _doc_cache.get(etag)
    if asset is None:
        _doc_cache.clear()  # one document at a time (a reload replaces it)
        asset = _doc_cache[etag] = Asset(body, "application/json")
    return asset


def _matches(if_none_match: bytes | None, etag: bytes) -> bool:
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(b",")]
    return b"*" in tags or etag in tags or (b"W/" + etag) in tags
