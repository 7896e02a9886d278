"""Authentication, tenant binding, authorization and the upstream identity, over real sockets.

A real gateway process in front of the echo upstream (which answers with what it received,
headers and body included), so each case shows both what the client got and what the upstream saw.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.support.gateway_proc import (
    TEST_IDENTITY_SECRET,
    TEST_JWT_SECRET,
    Proc,
    echo_upstream,
    gateway,
    wait_until,
    write_policy,
)

ISSUER = "https://idp.test"
AUDIENCE = "authenticated"
ORG_A, ORG_B = "org-a", "org-b"
MAX_TOKEN_BYTES = 2048

POLICY = f"""
    upstream: {{url: "${{GATEWAY_UPSTREAM_URL}}", name: upstream}}
    auth:
      jwt:
        algorithms: [HS256]
        issuer: {ISSUER}
        audience: {AUDIENCE}
        leeway_seconds: 5
        max_token_bytes: {MAX_TOKEN_BYTES}
    # Dozens of deliberate 401s from one address: keep the brute-force guard out of the way.
    rate_limits:
      brute_force: {{max_failures: 100000, window: "1 minute", cooldown_seconds: 1}}
    routes:
      - {{id: bound.query, path: /v1/q, methods: [GET], auth: jwt, tenant: {{mode: verify, query: orgId}}}}
      - {{id: bound.body, path: /v1/b, methods: [POST], auth: jwt, tenant: {{mode: verify, body: orgId}}}}
      - {{id: bound.path, path: "/v1/orgs/{{orgId}}/things", methods: [GET], auth: jwt,
          tenant: {{mode: verify, path: orgId}}}}
      - {{id: bound.rewrite, path: /v1/rw, methods: [GET], auth: jwt, tenant: {{mode: rewrite, query: orgId}}}}
      - {{id: admin.only, path: /v1/admin, methods: [GET], auth: jwt, roles: [admin, owner]}}
      - {{id: scoped, path: /v1/scoped, methods: [GET], auth: jwt, scopes: [agents.write]}}
      - {{id: plain, path: /v1/plain, methods: [GET], auth: jwt}}
      - {{id: public, path: /v1/public, methods: [GET], auth: none}}
"""


# --- token factories ----------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {"sub": "alice", "org_id": ORG_A, "org_role": "member", "iss": ISSUER,
                           "aud": AUDIENCE, "iat": now, "exp": now + 300}
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def make_token(**over: Any) -> str:
    return jwt.encode(claims(**over), TEST_JWT_SECRET, algorithm="HS256")


def forge(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, key: bytes | None,
          digest: str = "sha256") -> str:
    """A compact JWS built by hand, so that every part can be wrong on purpose (key None: unsigned)."""
    h = b64(header if isinstance(header, bytes) else json.dumps(header).encode())
    p = b64(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    signature = "" if key is None else b64(hmac.new(key, f"{h}.{p}".encode(), digest).digest())
    return f"{h}.{p}.{signature}"


SECRET = TEST_JWT_SECRET.encode()
HS = {"alg": "HS256", "typ": "JWT"}


def alg_none(alg: str) -> str:
    return forge({"alg": alg, "typ": "JWT"}, claims(), None)


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    with echo_upstream() as up:
        yield up


@pytest.fixture(scope="module")
def audit_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth-wire-audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def gw(upstream: Proc, tmp_path_factory: pytest.TempPathFactory, audit_log: Path) -> Iterator[Proc]:
    d = tmp_path_factory.mktemp("auth-wire-policy")
    write_policy(d, gateway=POLICY)
    with gateway(Path(d), upstream.url, {"GATEWAY_AUDIT_LOG": str(audit_log)}) as g:
        yield g


def audit_record(audit_log: Path, request_id: str) -> dict[str, Any] | None:
    """The audit line of one request, waiting briefly for the asynchronous writer."""
    found: list[dict[str, Any]] = []

    def look() -> bool:
        if audit_log.exists():
            for line in audit_log.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("request_id") == request_id:
                    found.append(rec)
                    return True
        return False

    wait_until(look, timeout=3)
    return found[0] if found else None


@pytest.fixture(scope="module")
def client(gw: Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def problem(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["reason"] == reason, body
    assert body["status"] == status
    assert body["request_id"] == r.headers["x-request-id"]
    return body


def upstream_saw(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, (r.status_code, r.text)
    seen: dict[str, Any] = r.json()
    headers: dict[str, list[str]] = {}
    for k, v in seen["headers"]:
        headers.setdefault(k.lower(), []).append(v)
    seen["h"] = headers
    return seen


# --- 401: every attacker trick, over the wire ---------------------------------------------------

BAD_TOKENS = [
    *[pytest.param(alg_none(alg), "auth.bad_algorithm", id=f"alg_{alg}") for alg in
      ("none", "None", "NONE", "nOnE")],
    pytest.param(forge({"alg": "none"}, claims(), SECRET), "auth.bad_algorithm", id="alg_none_with_signature"),
    pytest.param(jwt.encode(claims(), "another-secret-of-sufficient-length-000000", algorithm="HS256"),
                 "auth.bad_signature", id="other_secret"),
    pytest.param(forge(HS, claims(), b""), "auth.bad_signature", id="empty_key"),
    pytest.param(forge({"alg": "HS512"}, claims(), SECRET, "sha512"), "auth.bad_algorithm",
                 id="alg_not_in_policy"),
    pytest.param(forge({"alg": "hs256"}, claims(), SECRET), "auth.bad_algorithm", id="alg_lower_case"),
    pytest.param(forge({"typ": "JWT"}, claims(), SECRET), "auth.bad_algorithm", id="alg_missing"),
    pytest.param(make_token(exp=int(time.time()) - 120, iat=int(time.time()) - 600), "auth.expired",
                 id="expired"),
    pytest.param(make_token(nbf=int(time.time()) + 600), "auth.not_yet_valid", id="nbf_future"),
    pytest.param(make_token(iss="https://evil.test"), "auth.bad_issuer", id="wrong_iss"),
    pytest.param(make_token(iss=None), "auth.bad_issuer", id="missing_iss"),
    pytest.param(make_token(aud="someone-else"), "auth.bad_audience", id="wrong_aud"),
    pytest.param(make_token(exp=None), "auth.missing_claim", id="missing_exp"),
    pytest.param(make_token(exp="soon"), "auth.malformed", id="exp_not_a_number"),
    pytest.param(forge(HS, json.dumps(claims()).replace('"exp": ', '"exp": 1e400, "x": ').encode(), SECRET),
                 "auth.malformed", id="exp_infinite"),
    pytest.param(make_token(iat=int(time.time()) + 3600), "auth.iat_in_future", id="iat_future"),
    pytest.param(make_token(sub=None), "auth.missing_claim", id="missing_sub"),
    pytest.param(make_token(sub=42), "auth.malformed", id="sub_not_a_string"),
    pytest.param("e30*.e30.abc", "auth.malformed", id="bad_base64_chars"),
    # A base64url segment can never be 1 (mod 4) characters long.
    pytest.param(forge(HS, claims(), SECRET).rsplit(".", 1)[0] + "." + "A" * 41, "auth.malformed",
                 id="bad_base64_length"),
    pytest.param(forge(b"{not json", claims(), SECRET), "auth.malformed", id="garbage_json_header"),
    pytest.param(forge(HS, b"{not json", SECRET), "auth.malformed", id="garbage_json_payload"),
    pytest.param(forge(HS, b"[1, 2]", SECRET), "auth.malformed", id="payload_not_object"),
    pytest.param(forge(b'{"alg":"HS256","alg":"none"}', claims(), SECRET), "auth.malformed",
                 id="duplicate_header_member"),
    pytest.param("a.b", "auth.malformed", id="two_segments"),
    pytest.param(forge(HS, claims(pad="x" * MAX_TOKEN_BYTES), SECRET), "auth.token_too_large", id="oversize"),
    pytest.param(forge({**HS, "jwk": {"kty": "oct", "k": b64(b"attacker")}}, claims(), SECRET),
                 "auth.bad_header", id="embedded_jwk"),
    pytest.param(forge({**HS, "jwk": {"kty": "oct", "k": b64(b"attacker")}}, claims(), b"attacker"),
                 "auth.bad_header", id="embedded_jwk_self_signed"),
    pytest.param(forge({**HS, "jku": "http://127.0.0.1:1/jwks.json"}, claims(), SECRET), "auth.bad_header",
                 id="jku"),
    pytest.param(forge({**HS, "x5u": "http://127.0.0.1:1/cert.pem"}, claims(), SECRET), "auth.bad_header",
                 id="x5u"),
    pytest.param(forge({**HS, "crit": ["exp"]}, claims(), SECRET), "auth.bad_header", id="crit"),
    # `kid` pointing at an empty file: a verifier that reads keys from paths would use b"".
    pytest.param(forge({**HS, "kid": "../../../../../../dev/null"}, claims(), b""), "auth.bad_signature",
                 id="kid_path_traversal"),
    pytest.param(forge({**HS, "kid": "x' UNION SELECT 'attacker"}, claims(), b"attacker"),
                 "auth.bad_signature", id="kid_sql"),
]


@pytest.mark.parametrize(("token", "reason"), BAD_TOKENS)
def test_bad_token_is_401_with_reason_and_challenge(client: httpx.Client, token: str, reason: str) -> None:
    r = client.get("/v1/plain", headers=bearer(token))
    problem(r, 401, reason)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert token not in r.text  # never echo token contents


def test_missing_token_is_401_missing_token(client: httpx.Client) -> None:
    r = client.get("/v1/plain")
    problem(r, 401, "auth.missing_token")
    challenge = r.headers["www-authenticate"]
    # RFC 6750 §3.1: no error code when the request carried no credentials at all.
    assert challenge.startswith("Bearer ") and "error=" not in challenge


@pytest.mark.parametrize("query", [
    pytest.param("access_token={t}", id="access_token"),
    pytest.param("token={t}", id="token"),
    pytest.param("authorization=Bearer%20{t}", id="authorization"),
])
def test_token_in_query_string_is_not_accepted(client: httpx.Client, query: str) -> None:
    r = client.get(f"/v1/plain?{query.format(t=make_token())}")
    problem(r, 401, "auth.missing_token")


def test_token_in_cookie_is_not_accepted(client: httpx.Client) -> None:
    r = client.get("/v1/plain", headers={"Cookie": f"access_token={make_token()}"})
    problem(r, 401, "auth.missing_token")


@pytest.mark.parametrize("value", [
    pytest.param("Basic " + b64(b"alice:secret"), id="basic"),
    pytest.param("Token {t}", id="token_scheme"),
    pytest.param("Bearer", id="bearer_without_token"),
    pytest.param("Bearer {t} {t}", id="two_tokens"),
    pytest.param("{t}", id="no_scheme"),
])
def test_wrong_authorization_form_is_401(client: httpx.Client, value: str) -> None:
    r = client.get("/v1/plain", headers={"Authorization": value.format(t=make_token())})
    problem(r, 401, "auth.malformed")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_two_authorization_headers_are_refused(client: httpx.Client) -> None:
    good = f"Bearer {make_token()}"
    r = client.get("/v1/plain", headers=[("Authorization", good), ("Authorization", good)])
    problem(r, 401, "auth.malformed")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_valid_token_passes_and_scheme_is_case_insensitive(client: httpx.Client) -> None:
    assert client.get("/v1/plain", headers=bearer(make_token())).status_code == 200
    assert client.get("/v1/plain", headers={"Authorization": f"bearer {make_token()}"}).status_code == 200


def test_public_route_needs_no_token(client: httpx.Client) -> None:
    seen = upstream_saw(client.get("/v1/public"))
    assert "authorization" not in seen["h"]


# --- tenant binding -----------------------------------------------------------------------------

def test_query_other_org_is_403(client: httpx.Client) -> None:
    r = client.get(f"/v1/q?orgId={ORG_B}", headers=bearer(make_token()))
    problem(r, 403, "tenant.mismatch")


def test_query_own_org_passes_unchanged(client: httpx.Client) -> None:
    seen = upstream_saw(client.get(f"/v1/q?orgId={ORG_A}&page=2", headers=bearer(make_token())))
    assert seen["query"] == f"orgId={ORG_A}&page=2"


def test_query_absent_org_is_injected(client: httpx.Client) -> None:
    seen = upstream_saw(client.get("/v1/q?page=2", headers=bearer(make_token())))
    assert f"orgId={ORG_A}" in seen["query"].split("&")
    assert "page=2" in seen["query"].split("&")
    seen = upstream_saw(client.get("/v1/q", headers=bearer(make_token())))
    assert seen["query"] == f"orgId={ORG_A}"


@pytest.mark.parametrize("query", [
    pytest.param(f"orgId={ORG_A}&orgId={ORG_A}", id="repeated_same"),
    pytest.param(f"orgId={ORG_A}&orgId={ORG_B}", id="repeated_different"),
    pytest.param("orgid=x", id="lower_case"),
    pytest.param("ORGID=x", id="upper_case"),
    pytest.param("org%49d=x", id="percent_encoded_name"),
    pytest.param(f"orgId={ORG_A}&org%49d={ORG_B}", id="percent_encoded_second"),
    pytest.param(f"orgId[]={ORG_B}", id="array_syntax"),
    pytest.param(f"orgId%5B%5D={ORG_B}", id="array_syntax_encoded"),
    pytest.param(f"orgId.x={ORG_B}", id="nested_syntax"),
    pytest.param(f"%20orgId={ORG_B}", id="leading_space"),
    pytest.param(f"x=1;orgId={ORG_B}", id="semicolon_separator"),
    pytest.param("orgId=org+a", id="plus_in_value"),
    pytest.param(f"orgId={ORG_A}&orgId", id="repeated_without_value"),
])
def test_query_ambiguity_is_400(client: httpx.Client, query: str) -> None:
    r = client.get(f"/v1/q?{query}", headers=bearer(make_token()))
    problem(r, 400, "request.ambiguous")


def test_path_bound_org(client: httpx.Client) -> None:
    problem(client.get(f"/v1/orgs/{ORG_B}/things", headers=bearer(make_token())), 403, "tenant.mismatch")
    problem(client.get("/v1/orgs/ORG-A/things", headers=bearer(make_token())), 403, "tenant.mismatch")
    seen = upstream_saw(client.get(f"/v1/orgs/{ORG_A}/things", headers=bearer(make_token())))
    assert seen["path"] == f"/orgs/{ORG_A}/things"


def post_json(client: httpx.Client, body: bytes, content_type: str = "application/json",
              token: str | None = None) -> httpx.Response:
    return client.post("/v1/b", content=body,
                       headers={**bearer(token or make_token()), "Content-Type": content_type})


def test_body_other_org_is_403(client: httpx.Client) -> None:
    problem(post_json(client, json.dumps({"orgId": ORG_B, "name": "x"}).encode()), 403, "tenant.mismatch")


def test_body_own_org_is_forwarded_byte_for_byte(client: httpx.Client) -> None:
    raw = b'{"orgId": "org-a",   "name": "x"}'
    seen = upstream_saw(post_json(client, raw))
    assert seen["body"].encode("latin-1") == raw


def test_body_duplicate_key_is_400(client: httpx.Client) -> None:
    raw = b'{"orgId": "org-a", "orgId": "org-b"}'
    problem(post_json(client, raw), 400, "request.ambiguous")
    problem(post_json(client, b'{"orgId": "org-a", "x": {"a": 1, "a": 2}}'), 400, "request.ambiguous")


@pytest.mark.parametrize("content_type", [
    pytest.param("text/plain", id="text_plain"),
    pytest.param("application/x-www-form-urlencoded", id="form"),
    pytest.param("multipart/form-data; boundary=x", id="multipart"),
])
def test_body_with_non_json_content_type_is_415(client: httpx.Client, content_type: str) -> None:
    problem(post_json(client, b'{"orgId": "org-b"}', content_type), 415, "request.unsupported_media_type")


@pytest.mark.parametrize(("raw", "content_type", "status", "reason"), [
    pytest.param(b'[{"orgId": "org-b"}]', "application/json", 400, "request.ambiguous", id="array"),
    pytest.param(b'"org-a"', "application/json", 400, "request.ambiguous", id="string"),
    pytest.param(b'{"orgId": "org-a", "OrgId": "org-b"}', "application/json", 400, "request.ambiguous",
                 id="case_variant_key"),
    pytest.param(b'{"org\\u0049d": "org-b", "orgId": "org-a"}', "application/json", 400, "request.ambiguous",
                 id="escaped_duplicate_key"),
    pytest.param(b'\xef\xbb\xbf{"orgId": "org-a"}', "application/json", 400, "request.bad_json", id="bom"),
    pytest.param(b'{"orgId": "org-a", "n": 1e400}', "application/json", 400, "request.bad_json", id="huge_number"),
    pytest.param(b'{"orgId": "org-a"', "application/json", 400, "request.bad_json", id="truncated"),
    pytest.param(b'{"orgId": "org-a"}', "application/json; charset=latin-1", 415,
                 "request.unsupported_media_type", id="other_charset"),
    pytest.param(b'{"orgId": null}', "application/json", 403, "tenant.mismatch", id="null_org"),
    pytest.param(b'{"orgId": ["org-a"]}', "application/json", 403, "tenant.mismatch", id="list_org"),
    pytest.param(b'{"orgId": "ORG-A"}', "application/json", 403, "tenant.mismatch", id="other_case_org"),
])
def test_body_refusals(client: httpx.Client, raw: bytes, content_type: str, status: int, reason: str) -> None:
    problem(post_json(client, raw, content_type), status, reason)


def test_body_without_content_type_is_415(client: httpx.Client) -> None:
    r = client.post("/v1/b", content=b'{"name": "x"}', headers=bearer(make_token()))
    problem(r, 415, "request.unsupported_media_type")


def test_body_injected_org_has_correct_content_length(client: httpx.Client) -> None:
    raw = json.dumps({"name": "agent \u00e9"}).encode()
    seen = upstream_saw(post_json(client, raw))
    sent = seen["body"].encode("latin-1")
    assert json.loads(sent) == {"name": "agent \u00e9", "orgId": ORG_A}
    assert seen["h"]["content-length"] == [str(len(sent))]
    assert "transfer-encoding" not in seen["h"]


def test_chunked_body_injected_org_has_content_length(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name":'
        yield b' "chunked"}'

    r = client.post("/v1/b", content=chunks(), headers={**bearer(make_token()), "Content-Type": "application/json"})
    seen = upstream_saw(r)
    sent = seen["body"].encode("latin-1")
    assert json.loads(sent) == {"name": "chunked", "orgId": ORG_A}
    assert seen["h"]["content-length"] == [str(len(sent))]


def test_token_without_org_claim_is_403_missing_claim(client: httpx.Client) -> None:
    token = make_token(org_id=None)
    problem(client.get("/v1/q", headers=bearer(token)), 403, "tenant.missing_claim")
    problem(post_json(client, b'{"name": "x"}', token=token), 403, "tenant.missing_claim")
    # An unbound route does not need an org.
    assert client.get("/v1/plain", headers=bearer(token)).status_code == 200


def test_rewrite_mode_replaces_a_differing_value_and_allows(client: httpx.Client) -> None:
    seen = upstream_saw(client.get(f"/v1/rw?orgId={ORG_B}&page=1", headers=bearer(make_token())))
    params = seen["query"].split("&")
    assert f"orgId={ORG_A}" in params and "page=1" in params
    assert ORG_B not in seen["query"]


def test_denial_is_audited_with_its_reason(client: httpx.Client, audit_log: Path) -> None:
    r = client.get(f"/v1/q?orgId={ORG_B}", headers=bearer(make_token()))
    problem(r, 403, "tenant.mismatch")
    rec = audit_record(audit_log, r.headers["x-request-id"])
    assert rec is not None and rec["reason"] == "tenant.mismatch" and rec["decision"] == "deny"


def test_rewrite_of_a_differing_value_is_audited(client: httpx.Client, audit_log: Path) -> None:
    # Issue 3: "a differing client value is allowed through but audited as tenant.rewritten".
    r = client.get(f"/v1/rw?orgId={ORG_B}", headers=bearer(make_token()))
    assert r.status_code == 200
    rec = audit_record(audit_log, r.headers["x-request-id"])
    assert rec is not None, "an allowed GET whose orgId was rewritten left no audit record"
    assert rec.get("tenant") == "tenant.rewritten"


# --- authorization ------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "status"), [
    pytest.param("member", 403, id="member"),
    pytest.param("viewer", 403, id="viewer"),
    pytest.param("ADMIN", 403, id="admin_wrong_case"),  # not a declared role: authz.unknown_role
    pytest.param(None, 403, id="no_role"),
    pytest.param("admin", 200, id="admin"),
    pytest.param("owner", 200, id="owner"),
])
def test_role_restricted_route(client: httpx.Client, role: str | None, status: int) -> None:
    r = client.get("/v1/admin", headers=bearer(make_token(org_role=role)))
    if status == 403:
        declared = role in ("owner", "admin", "member", "viewer")
        problem(r, 403, "authz.forbidden" if declared else "authz.unknown_role")
    else:
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(("scope", "status"), [
    pytest.param(None, 403, id="no_scope"),
    pytest.param("agents.read", 403, id="other_scope"),
    pytest.param("agents.writer", 403, id="prefix_lookalike"),
    pytest.param("agents.read agents.write", 200, id="space_separated"),
    pytest.param(["agents.write"], 200, id="list"),
])
def test_scope_restricted_route(client: httpx.Client, scope: Any, status: int) -> None:
    r = client.get("/v1/scoped", headers=bearer(make_token(scope=scope)))
    if status == 403:
        problem(r, 403, "authz.forbidden")
    else:
        assert r.status_code == 200, r.text


# --- identity to the upstream -------------------------------------------------------------------

def identity_of(seen: dict[str, Any]) -> dict[str, Any]:
    values = seen["h"].get("x-gateway-identity", [])
    assert len(values) == 1, values
    out: dict[str, Any] = jwt.decode(values[0], TEST_IDENTITY_SECRET, algorithms=["HS256"], audience="upstream",
                                     options={"require": ["exp", "iat", "sub", "aud"]})
    return out


@pytest.mark.parametrize("role", ["member", "admin"])
def test_upstream_receives_a_signed_identity(client: httpx.Client, role: str) -> None:
    r = client.get("/v1/plain", headers=bearer(make_token(sub="user-42", org_role=role)))
    ident = identity_of(upstream_saw(r))
    assert ident["sub"] == "user-42"
    assert ident["org_id"] == ORG_A
    assert ident["org_role"] == role
    assert ident["rid"] == r.headers["x-request-id"]
    assert 0 < ident["exp"] - ident["iat"] <= 60


def test_identity_claims_come_from_the_token_not_the_query(client: httpx.Client) -> None:
    r = client.get(f"/v1/rw?orgId={ORG_B}", headers=bearer(make_token()))
    assert identity_of(upstream_saw(r))["org_id"] == ORG_A


def test_client_authorization_and_identity_headers_never_reach_the_upstream(client: httpx.Client) -> None:
    token = make_token()
    forged = jwt.encode({"sub": "root", "org_id": ORG_B, "org_role": "owner", "aud": "upstream",
                         "exp": int(time.time()) + 60}, TEST_IDENTITY_SECRET, algorithm="HS256")
    r = client.get("/v1/plain", headers=[
        ("Authorization", f"Bearer {token}"), ("X-Gateway-Identity", forged),
        ("x-gateway-identity", forged), ("X_Gateway_Identity", forged)])
    seen = upstream_saw(r)
    assert "authorization" not in seen["h"]
    assert token not in r.text and forged not in r.text
    ident = identity_of(seen)
    assert ident["sub"] == "alice" and ident["org_id"] == ORG_A


def test_public_route_drops_a_client_supplied_identity(client: httpx.Client) -> None:
    forged = jwt.encode({"sub": "root", "org_id": ORG_B, "aud": "upstream", "exp": int(time.time()) + 60},
                        TEST_IDENTITY_SECRET, algorithm="HS256")
    r = client.get("/v1/public", headers={"X-Gateway-Identity": forged,
                                          "Authorization": f"Bearer {make_token()}"})
    seen = upstream_saw(r)
    assert forged not in r.text
    assert "authorization" not in seen["h"]
    for value in seen["h"].get("x-gateway-identity", []):
        assert jwt.decode(value, TEST_IDENTITY_SECRET, algorithms=["HS256"], audience="upstream")["sub"] != "root"


def test_denied_request_never_reaches_the_upstream(client: httpx.Client, upstream: Proc) -> None:
    def count() -> int:
        seen = httpx.get(f"{upstream.url}/count").json()["seen"]
        return int(seen.get("/q", 0))

    before = count()
    problem(client.get(f"/v1/q?orgId={ORG_B}", headers=bearer(make_token())), 403, "tenant.mismatch")
    problem(client.get("/v1/q", headers=bearer(alg_none("none"))), 401, "auth.bad_algorithm")
    problem(client.get("/v1/q?orgid=x", headers=bearer(make_token())), 400, "request.ambiguous")
    assert count() == before
