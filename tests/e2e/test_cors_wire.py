"""CORS over the wire: a real gateway process, a real echo upstream, the shipped-like CORS policy.

Threat: the backend reflected any `Origin` with credentials, so any page a logged-in user visited
could read their data. The origin families below are the ones CORS scanners (CORScanner) try;
none may get an `Access-Control-Allow-Origin`, on actual requests or on preflights. Preflights
are answered by the gateway without a token and never reach the upstream. Policies that would
re-open the hole are refused at load by `gateway check`, naming the file and line.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.auth import mint_dev_token
from tests.support.gateway_proc import ROOT, TEST_JWT_SECRET, Proc, echo_upstream, gateway, write_policy

APP = "https://app.example.com"
ADMIN = "https://admin.example.com"

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    auth:
      jwt: {algorithms: [HS256]}
    cors:
      allow_origins: [https://app.example.com, https://admin.example.com]
      allow_credentials: true
      allow_methods: [GET, POST, PATCH, DELETE]
      allow_headers: [Authorization, Content-Type, X-Request-ID]
      max_age: 600
    routes:
      - {id: echo.read, path: /v1/echo, methods: [GET, POST, PUT], auth: jwt, upstream_path: /echo}
      - {id: echo.public, path: /v1/public, methods: [GET], auth: none, upstream_path: /public}
      - id: admin.only
        path: /v1/admin
        methods: [GET]
        auth: jwt
        upstream_path: /admin
        cors: {allow_origins: [https://admin.example.com]}
"""

# (id, Origin header value): each must get no Access-Control-Allow-Origin at all.
HOSTILE = [
    pytest.param("https://evil.com", id="reflected_arbitrary"),
    pytest.param("https://app.example.com.evil.net", id="prefix"),
    pytest.param("https://app.example.comevil.net", id="prefix_no_dot"),
    pytest.param("https://evilapp.example.com", id="suffix_glued"),
    pytest.param("https://notapp.example.com", id="suffix_not"),
    pytest.param("https://example.com", id="parent_domain"),
    pytest.param("null", id="null"),
    pytest.param("https://app.example.com_.evil.net", id="special_underscore"),
    pytest.param("https://app.example.com%60.evil.net", id="special_pct60"),
    pytest.param("https://evil.com`.app.example.com", id="special_backtick"),
    pytest.param("https://app.example.com!.evil.net", id="special_bang"),
    pytest.param("https://evil.com\\.app.example.com", id="special_backslash"),
    pytest.param("https://evil.app.example.com", id="evil_subdomain"),
    pytest.param("http://app.example.com", id="http_for_https"),
    pytest.param("HTTPS://APP.EXAMPLE.COM", id="uppercase"),
    pytest.param("https://App.example.com", id="mixed_case_host"),
    pytest.param("https://app.example.com:443", id="explicit_default_port"),
    pytest.param("https://app.example.com:8443", id="other_port"),
    pytest.param("https://app.example.com.", id="trailing_dot"),
    pytest.param("https://app.example.com/", id="trailing_slash"),
    pytest.param("https://user@app.example.com", id="userinfo"),
    pytest.param("https://app.example.com, https://evil.com", id="list"),
    pytest.param("wss://app.example.com", id="other_scheme"),
]


def bearer(sub: str = "user-1", org: str = "org-1") -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_dev_token(TEST_JWT_SECRET, sub, org, audience="authenticated")}


def preflight_headers(origin: str, method: str = "GET", req_headers: str | None = None) -> dict[str, str]:
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if req_headers is not None:
        h["Access-Control-Request-Headers"] = req_headers
    return h


def vary_origin(r: httpx.Response) -> bool:
    values = [v.strip().lower() for value in r.headers.get_list("vary") for v in value.split(",")]
    return "origin" in values


def reason(r: httpx.Response) -> str | None:
    if not r.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    return str(r.json().get("reason"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    with echo_upstream() as up:
        yield up


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: Proc) -> Iterator[Proc]:
    directory = write_policy(tmp_path_factory.mktemp("cors-wire"), gateway=POLICY)
    with gateway(directory, upstream.url) as g:
        yield g


@pytest.fixture(scope="module")
def client(gw: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        yield c


def seen(upstream: Proc, path: str) -> int:
    return int(httpx.get(upstream.url + "/count").json()["seen"].get(path, 0))


# --- hostile origins ------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", HOSTILE)
def test_hostile_origin_actual_request_gets_no_allow_header(client: httpx.Client, origin: str) -> None:
    r = client.get("/v1/echo", headers={"Origin": origin, **bearer()})
    # the request itself is served (CORS is a browser read permission, not authentication) ...
    assert r.status_code == 200, r.text
    # ... but nothing grants the page the right to read it
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-credentials" not in r.headers
    assert "access-control-expose-headers" not in r.headers
    assert vary_origin(r)


@pytest.mark.parametrize("origin", HOSTILE)
def test_hostile_origin_preflight_is_403_and_not_forwarded(
    client: httpx.Client, upstream: Proc, origin: str
) -> None:
    before = seen(upstream, "/echo")
    r = client.options("/v1/echo", headers=preflight_headers(origin, "POST", "authorization"))
    assert (r.status_code, reason(r)) == (403, "cors.origin_denied")
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-methods" not in r.headers
    assert vary_origin(r)
    assert seen(upstream, "/echo") == before


# --- allowed origins -------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [APP, ADMIN])
def test_allowed_origin_is_echoed_exactly_with_credentials(client: httpx.Client, origin: str) -> None:
    r = client.get("/v1/echo", headers={"Origin": origin, **bearer()})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-allow-credentials"] == "true"
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-request-id", "ratelimit", "ratelimit-policy", "retry-after"} <= exposed
    assert r.headers.get_list("access-control-allow-origin") == [origin]  # one value, never a list
    assert vary_origin(r)
    assert r.headers.get("x-request-id")


def test_no_origin_still_varies(client: httpx.Client) -> None:
    r = client.get("/v1/echo", headers=bearer())
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    assert vary_origin(r)


@pytest.mark.parametrize("origin", [APP, ADMIN])
def test_preflight_answered_without_token_and_never_forwarded(
    client: httpx.Client, upstream: Proc, origin: str
) -> None:
    before = seen(upstream, "/echo")
    r = client.options("/v1/echo", headers=preflight_headers(origin, "POST", "Authorization, Content-Type"))
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-allow-credentials"] == "true"
    methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST"} <= methods
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert r.headers["access-control-max-age"] == "600"
    assert vary_origin(r)
    assert r.content == b""
    assert seen(upstream, "/echo") == before


@pytest.mark.parametrize(
    ("method", "req_headers", "expected"),
    [
        # PUT is a method of the route, but not one CORS allows
        pytest.param("PUT", None, "cors.method_denied", id="method_not_in_cors_policy"),
        # DELETE is allowed by CORS, but the route does not declare it
        pytest.param("DELETE", None, "cors.method_denied", id="method_not_on_route"),
        pytest.param("POST", "X-Evil", "cors.header_denied", id="header_not_allowed"),
    ],
)
def test_preflight_refusals_are_403_and_not_forwarded(
    client: httpx.Client, upstream: Proc, method: str, req_headers: str | None, expected: str
) -> None:
    before = seen(upstream, "/echo")
    r = client.options("/v1/echo", headers=preflight_headers(APP, method, req_headers))
    assert (r.status_code, reason(r)) == (403, expected)
    assert "access-control-allow-origin" not in r.headers
    assert vary_origin(r)
    assert seen(upstream, "/echo") == before


def test_error_to_allowed_origin_is_readable(client: httpx.Client) -> None:
    # no token: 401, and the page must be able to read why (ACAO on the refusal)
    r = client.get("/v1/echo", headers={"Origin": APP})
    assert (r.status_code, reason(r)) == (401, "auth.missing_token")
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-allow-credentials"] == "true"
    assert vary_origin(r)
    hostile = client.get("/v1/echo", headers={"Origin": "https://evil.com"})
    assert hostile.status_code == 401
    assert "access-control-allow-origin" not in hostile.headers
    assert vary_origin(hostile)


def test_public_route_uses_the_global_policy(client: httpx.Client) -> None:
    ok = client.get("/v1/public", headers={"Origin": ADMIN})
    bad = client.get("/v1/public", headers={"Origin": "https://evil.com"})
    assert ok.status_code == bad.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ADMIN
    assert "access-control-allow-origin" not in bad.headers


def test_route_override_is_honoured(client: httpx.Client, upstream: Proc) -> None:
    before = seen(upstream, "/admin")
    admin = client.get("/v1/admin", headers={"Origin": ADMIN, **bearer()})
    assert admin.status_code == 200
    assert admin.headers["access-control-allow-origin"] == ADMIN
    app = client.get("/v1/admin", headers={"Origin": APP, **bearer()})
    assert app.status_code == 200
    assert "access-control-allow-origin" not in app.headers
    assert vary_origin(app)

    ok = client.options("/v1/admin", headers=preflight_headers(ADMIN))
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ADMIN
    refused = client.options("/v1/admin", headers=preflight_headers(APP))
    assert (refused.status_code, reason(refused)) == (403, "cors.origin_denied")
    assert "access-control-allow-origin" not in refused.headers
    # only the two actual GETs reached the upstream
    assert seen(upstream, "/admin") == before + 2


# --- refused at load: `gateway check` -------------------------------------------------------------

CHECK_POLICY = """\
upstream: {{url: "http://127.0.0.1:9"}}
cors:
  allow_origins:
    - {origin}
  allow_credentials: true
routes:
  - {{id: a, path: /v1/a, methods: [GET], auth: none}}
"""
# an error may name the `cors:` block (a rule about two fields), the `allow_origins:` key or the entry
GLOBAL_LINES = (2, 3, 4)

ROUTE_POLICY = """\
upstream: {{url: "http://127.0.0.1:9"}}
cors:
  allow_origins: [https://app.acme-corp.io]   # production refuses example.com placeholders
  allow_credentials: true
routes:
  - id: a
    path: /v1/a
    methods: [GET]
    auth: none
    cors:
      allow_origins:
        - {origin}
"""
ROUTE_LINES = (10, 11, 12)


def production_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_"))}
    env.update({
        "GATEWAY_ENV": "production",
        "GATEWAY_JWT_SECRET": secrets.token_urlsafe(48),
        "GATEWAY_IDENTITY_SECRET": secrets.token_urlsafe(48),
        "GATEWAY_AUDIT_KEY": "k1:" + secrets.token_urlsafe(48),
        "KOMMO_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        "KOMMO_CHANNEL_SECRET": secrets.token_urlsafe(32),
        "KOMMO_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
        "KOMMO_CLIENT_SECRET": secrets.token_urlsafe(32),
        "PYTHONPATH": str(ROOT),
    })
    return env


def gateway_check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "check", str(directory)], cwd=ROOT,
                          env=production_env(), capture_output=True, text=True, timeout=60)


BAD_ORIGINS = [
    pytest.param('"*"', "allow_credentials", id="star_with_credentials"),
    pytest.param('"null"', "null", id="null"),
    pytest.param("'https://.*\\.example\\.com'", "regular expression", id="regex_dot_star"),
    pytest.param("'^https://app\\.example\\.com$'", "regular expression", id="regex_anchored"),
    pytest.param("'https://*example.com'", "wildcard", id="unanchored_wildcard"),
    pytest.param("'https://app.*.com'", "wildcard", id="inner_wildcard"),
    pytest.param("http://app.example.com", "production", id="http_in_production"),
]


@pytest.mark.parametrize(("origin", "message"), BAD_ORIGINS)
@pytest.mark.parametrize("where", ["global", "route"])
def test_gateway_check_refuses_unsafe_origins(
    tmp_path: Path, origin: str, message: str, where: str
) -> None:
    if where == "global":
        text, lines = CHECK_POLICY.format(origin=origin), GLOBAL_LINES
    else:
        text, lines = ROUTE_POLICY.format(origin=origin), ROUTE_LINES
    (tmp_path / "gateway.yaml").write_text(text)
    done = gateway_check(tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert any(f"gateway.yaml:{n} " in out for n in lines), out
    assert message in out, out


def test_gateway_check_accepts_the_shipped_like_policy_in_production(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(CHECK_POLICY.format(origin="https://app.acme-corp.io"))
    done = gateway_check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK:")


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://localhost:3000", "https://*.example.org",
                                    "https://127.0.0.1:8443"])
def test_gateway_check_refuses_placeholder_and_local_origins_in_production(tmp_path: Path, origin: str) -> None:
    (tmp_path / "gateway.yaml").write_text(CHECK_POLICY.format(origin=origin))
    done = gateway_check(tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "example / local origins are refused in production" in out, out
