"""What the docs endpoints serve: the rendered API page, its static assets, the reason catalogue.

The page is Swagger UI from the `swagger-ui-py` distribution on PyPI (Swagger UI 5, which renders
OpenAPI 3.1), served from this host: the page makes no request to another host, and its CSP says
so (`default-src 'none'`, scripts and styles from 'self' only). Assets are read once and kept.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

from gateway.reasons import CATALOGUE

DOCS = "/v1/docs"
ERRORS = "/v1/docs/errors"
OPENAPI_JSON = "/v1/openapi.json"
ASSETS = "/v1/docs/assets/"

CSP = (b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       b"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

# Swagger UI's own files we serve, by the name the page uses.
_VENDOR = {"swagger-ui.css": "text/css; charset=utf-8", "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
           "favicon-32x32.png": "image/png"}

_INIT_JS = b"""window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/v1/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
    validatorUrl: null, tryItOutEnabled: false, displayRequestDuration: true
  });
});
"""

_OWN_CSS = b"""body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.5rem;text-align:left;
vertical-align:top}code{font-size:.95em}tr:target{background:#fff6d5}nav a{margin-right:1rem}
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} — API documentation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="{assets}favicon-32x32.png">
<link rel="stylesheet" href="{assets}swagger-ui.css"></head>
<body><noscript>This page needs JavaScript; the document itself is <a href="{doc}">{doc}</a>.
Error reasons: <a href="{errors}">{errors}</a>.</noscript>
<div id="swagger-ui"></div>
<script src="{assets}swagger-ui-bundle.js"></script>
<script src="{assets}init.js"></script></body></html>
"""


class Asset:
    """One static response body with its content type and strong ETag."""

    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type.encode()
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'


def swagger_ui_dir() -> Path | None:
    """Where the installed Swagger UI distribution keeps its static files (without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


@lru_cache(maxsize=1)
def assets() -> dict[str, Asset]:
    out = {"init.js": Asset(_INIT_JS, "text/javascript; charset=utf-8"),
           "gateway.css": Asset(_OWN_CSS, "text/css; charset=utf-8")}
    vendor = swagger_ui_dir()
    if vendor is not None:
        for name, ctype in _VENDOR.items():
            out[name] = Asset((vendor / name).read_bytes(), ctype)
    return out


@lru_cache(maxsize=4)
def docs_page(title: str) -> Asset:
    body = _PAGE.format(title=html.escape(title), assets=ASSETS, doc=OPENAPI_JSON, errors=ERRORS)
    return Asset(body.encode(), "text/html; charset=utf-8")


@lru_cache(maxsize=1)
def errors_page() -> Asset:
    rows = []
    for r in CATALOGUE:
        rid = html.escape(r.id)
        rows.append(f'<tr id="{rid}"><td><a href="#{rid}"><code>{rid}</code></a></td><td>{r.status}</td>'
                    f"<td>{html.escape(r.meaning)}</td><td>{html.escape(r.action)}</td></tr>")
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Error reasons</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{ASSETS}gateway.css"></head><body>
<nav><a href="{DOCS}">API documentation</a><a href="{OPENAPI_JSON}">OpenAPI document</a></nav>
<h1>Error reasons</h1>
<p>Every refusal is <code>application/problem+json</code> with a stable <code>reason</code>; its
<code>type</code> links to the row below. <code>request_id</code> identifies the request in the
operators' logs.</p>
<table><thead><tr><th>reason</th><th>status</th><th>meaning</th><th>what to do</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
    return Asset(body.encode(), "text/html; charset=utf-8")
