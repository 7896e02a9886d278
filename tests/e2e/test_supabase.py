"""The README's Supabase recipe, as written, against a local JWKS server: a real gateway process with
the shipped policy, ES256 and RS256 keys served over http (fine in development), Supabase-shaped
tokens (iss https://<ref>.supabase.co/auth/v1, aud authenticated, org and role under app_metadata)
and the legacy HS256 secret at the same time (the migration period)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.auth.factories import hs_sign
from tests.support.gateway_proc import ROOT, Proc, echo_upstream, gateway, shipped_policy
from tests.support.jwks_server import JwksServer

REF = "abcdefghijklmnopqrst"
ISSUER = f"https://{REF}.supabase.co/auth/v1"
LEGACY_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
SHIPPED = ROOT / "policies"


def recipe_env() -> dict[str, str]:
    """The `export` lines of the README's Supabase recipe, exactly as documented."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- supabase-recipe -->", 1)[1].split("<!-- /supabase-recipe -->", 1)[0]
    env = {}
    for m in re.finditer(r"^export (\w+)=('[^']*'|\S+)", block, re.M):
        env[m.group(1)] = m.group(2).strip("'")
    assert {"GATEWAY_JWT_JWKS_URL", "GATEWAY_JWT_ISSUER", "GATEWAY_JWT_ORG_CLAIM"} <= env.keys(), block
    return env


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    out: dict[str, Any] = json.loads(algo.to_jwk(key.public_key()))
    out.update(kid=kid, alg=alg, use="sig")
    return out


class Idp:
    """Supabase-like signing keys and tokens."""

    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec2 = ec.generate_private_key(ec.SECP256R1())
        self.jwks = {"keys": [_jwk(self.ec, "ec-key-1", "ES256"), _jwk(self.rsa, "rsa-key-1", "RS256")]}

    @staticmethod
    def claims(org: str = "org-a", role: Any = "admin", **over: Any) -> dict[str, Any]:
        now = int(time.time())
        out: dict[str, Any] = {
            "iss": ISSUER, "aud": "authenticated", "sub": str(uuid.uuid4()), "iat": now, "exp": now + 3600,
            "email": "alice@example.test", "phone": "", "role": "authenticated", "aal": "aal1",
            "session_id": str(uuid.uuid4()), "is_anonymous": False,
            "app_metadata": {"provider": "email", "providers": ["email"], "org_id": org, "org_role": role},
            "user_metadata": {"email_verified": True},
        }
        out.update(over)
        return out

    def es256(self, kid: str = "ec-key-1", key: Any = None, **over: Any) -> str:
        return jwt.encode(self.claims(**over), key or self.ec, algorithm="ES256", headers={"kid": kid, "typ": "JWT"})

    def rs256(self, **over: Any) -> str:
        return jwt.encode(self.claims(**over), self.rsa, algorithm="RS256", headers={"kid": "rsa-key-1", "typ": "JWT"})

    def hs256(self, **over: Any) -> str:
        return jwt.encode(self.claims(**over), LEGACY_SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def idp() -> Idp:
    return Idp()


def _start(policy_dir: Path, idp: Idp, upstream: Proc, jwks: JwksServer) -> Any:
    env = recipe_env()
    # The project's host is replaced by the local server; the documented path is the one served.
    env["GATEWAY_JWT_JWKS_URL"] = env["GATEWAY_JWT_JWKS_URL"].replace(
        "https://<ref>.supabase.co", f"http://127.0.0.1:{jwks.port}")
    assert env["GATEWAY_JWT_JWKS_URL"] == jwks.url, env
    env["GATEWAY_JWT_ISSUER"] = env["GATEWAY_JWT_ISSUER"].replace("<ref>", REF)
    env["GATEWAY_JWT_SECRET"] = LEGACY_SECRET
    return gateway(policy_dir, upstream.url, env)


@pytest.fixture(scope="module")
def stack(idp: Idp) -> Iterator[tuple[Proc, JwksServer]]:
    with JwksServer(idp.jwks) as jwks, echo_upstream() as upstream, _start(SHIPPED, idp, upstream, jwks) as gw:
        yield gw, jwks


@pytest.fixture
def client(stack: tuple[Proc, JwksServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack[0].url, timeout=20) as c:
        yield c


def get(client: httpx.Client, token: str, org: str = "org-a") -> httpx.Response:
    return client.get(f"/v1/agents?orgId={org}", headers={"Authorization": f"Bearer {token}"})


def identity_seen(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, (r.status_code, r.text)
    headers = {k.lower(): v for k, v in r.json()["headers"]}
    assert "authorization" not in headers
    return jwt.decode(headers["x-gateway-identity"], options={"verify_signature": False})


def reason(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    return str(r.json()["reason"])


@pytest.mark.parametrize("kind", ["es256", "rs256", "hs256"])
def test_supabase_tokens_of_every_kind_pass(client: httpx.Client, idp: Idp, kind: str) -> None:
    token = getattr(idp, kind)()
    seen = identity_seen(get(client, token))
    assert seen["org_id"] == "org-a" and seen["org_role"] == "admin"


def test_org_from_app_metadata_is_bound(client: httpx.Client, idp: Idp) -> None:
    r = get(client, idp.es256(), org="org-b")
    assert r.status_code == 403 and reason(r) == "tenant.mismatch"


def test_literal_dotted_member_never_stands_in(client: httpx.Client, idp: Idp) -> None:
    token = idp.es256(**{"app_metadata.org_id": "org-b"})
    assert reason(get(client, token, org="org-b")) == "tenant.mismatch"
    assert identity_seen(get(client, token, org="org-a"))["org_id"] == "org-a"  # tenant and upstream agree


REFUSED = [
    pytest.param(lambda i: i.es256(kid="unknown-kid"), 401, "auth.unknown_kid", id="unknown_kid"),
    pytest.param(lambda i: i.es256(key=i.ec2), 401, "auth.bad_signature", id="es256_other_key_same_kid"),
    pytest.param(lambda i: i.es256(iss="https://other.supabase.co/auth/v1"), 401, "auth.bad_issuer", id="wrong_iss"),
    pytest.param(lambda i: i.es256(aud="anon"), 401, "auth.bad_audience", id="wrong_aud"),
    pytest.param(lambda i: jwt.encode(i.claims(), "another-secret-of-enough-length-0123456789", algorithm="HS256"),
                 401, "auth.bad_signature", id="hs256_other_secret"),
    pytest.param(lambda i: hs_sign({"alg": "HS256", "kid": "ec-key-1"}, i.claims(), i.ec.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)),
        401, "auth.bad_signature", id="hs256_keyed_with_jwks_public_key"),
    pytest.param(lambda i: i.es256(role="superadmin"), 403, "authz.unknown_role", id="role_superadmin"),
    pytest.param(lambda i: i.es256(role="Admin"), 403, "authz.unknown_role", id="role_wrong_case"),
    pytest.param(lambda i: i.es256(role=5), 403, "authz.unknown_role", id="role_number"),
    pytest.param(lambda i: i.es256(role=None), 403, "authz.unknown_role", id="role_missing"),
]


@pytest.mark.parametrize("make,status,why", REFUSED)
def test_refused(client: httpx.Client, idp: Idp, make: Any, status: int, why: str) -> None:
    r = get(client, make(idp))
    assert r.status_code == status and reason(r) == why, r.text


def _jwt_tuned(tmp_path: Path, extra: str) -> Path:
    """A copy of the shipped policy with `extra` lines added to auth.jwt (after leeway_seconds)."""
    policy = shipped_policy(tmp_path)
    gw_yaml = policy / "gateway.yaml"
    text = gw_yaml.read_text()
    assert "    leeway_seconds: 30\n" in text
    gw_yaml.write_text(text.replace("    leeway_seconds: 30\n", "    leeway_seconds: 30\n" + extra))
    return policy


def test_new_kid_is_fetched_on_first_sight(idp: Idp, tmp_path: Path) -> None:
    """Rotation: a key added to the set after start is fetched when a token first names it (the
    cool-down is shortened here so the test does not wait 30 s)."""
    policy = _jwt_tuned(tmp_path, "    jwks_cooldown_seconds: 1\n    jwks_refresh_seconds: 5\n")
    new = ec.generate_private_key(ec.SECP256R1())
    with JwksServer(dict(idp.jwks)) as jwks, echo_upstream() as upstream, _start(policy, idp, upstream, jwks) as gw, \
            httpx.Client(base_url=gw.url, timeout=20) as c:
        token = idp.es256(kid="ec-key-2", key=new)
        assert reason(get(c, token)) == "auth.unknown_kid"
        jwks.document = {"keys": [*idp.jwks["keys"], _jwk(new, "ec-key-2", "ES256")]}
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline:
            status = get(c, token).status_code
            if status == 200:
                break
            time.sleep(0.3)
        assert status == 200
        # Removed from the set: refused after the next refresh (5 s here), cached tokens included.
        old = idp.es256()
        assert get(c, old).status_code == 200  # verified once, so it sits in the token cache
        jwks.document = {"keys": [_jwk(new, "ec-key-2", "ES256")]}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and get(c, old).status_code == 200:
            time.sleep(0.5)
        r = get(c, old)
        assert r.status_code == 401 and reason(r) == "auth.unknown_kid"
        assert get(c, token).status_code == 200


def test_a_key_published_before_use_works_on_first_sight(idp: Idp, tmp_path: Path) -> None:
    """IdP rotation as Supabase and most IdPs do it: the new key is published in the JWKS, then
    tokens signed with it appear. The first request naming it waits for the fetch it causes and
    is served, not refused until the next scheduled refresh. A made-up kid is still refused, and
    quickly: after one fetch per cool-down there is nothing to wait for."""
    policy = _jwt_tuned(tmp_path, "    jwks_cooldown_seconds: 1\n")
    new = ec.generate_private_key(ec.SECP256R1())
    with JwksServer(dict(idp.jwks)) as jwks, echo_upstream() as upstream, _start(policy, idp, upstream, jwks) as gw, \
            httpx.Client(base_url=gw.url, timeout=20) as c:
        assert get(c, idp.es256()).status_code == 200
        jwks.document = {"keys": [*idp.jwks["keys"], _jwk(new, "ec-key-3", "ES256")]}
        time.sleep(1.5)  # past the cool-down that the start-up fetch began
        r = get(c, idp.es256(kid="ec-key-3", key=new))
        assert r.status_code == 200, r.text  # first sight: served (the old gateway: 401 unknown_kid)
        time.sleep(1.5)
        made_up = idp.es256(kid="no-such-kid", key=new)
        assert reason(get(c, made_up)) == "auth.unknown_kid"  # fetched once more, still unknown
        started = time.monotonic()
        for _ in range(5):  # within the cool-down: no fetch, no wait
            assert reason(get(c, made_up)) == "auth.unknown_kid"
        assert time.monotonic() - started < 10
