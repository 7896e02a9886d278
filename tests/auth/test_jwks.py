"""JwksCache against a mocked JWKS host (respx): start-up, refresh on unknown kid, keeping good keys."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.auth.jwks import MAX_JWKS_BYTES, JwksCache
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.auth.keys import KeyRejected, StaticKeySet, VerifyKey, load_jwk, load_jwks
from gateway.errors import Unauthorized
from tests.auth.factories import NOW, Keys, claims, key_set, policy, rs_token, sign_with

URL = "https://idp.test/.well-known/jwks.json"
ALGS = frozenset({"RS256", "ES256"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def doc(*jwks: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(jwks)}


@pytest.fixture
async def make_cache() -> AsyncIterator[Any]:
    made: list[JwksCache] = []

    def make(**kw: Any) -> JwksCache:
        kw.setdefault("refresh_seconds", 3600)
        kw.setdefault("cooldown_seconds", 30)
        kw.setdefault("allowed_algorithms", ALGS)
        cache = JwksCache(URL, **kw)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.close()


async def test_start_fetches_keys(respx_mock: respx.MockRouter, keys: Keys, make_cache: Any) -> None:
    respx_mock.get(URL).respond(200, json=doc(keys.rsa_jwk, keys.ec_jwk))
    cache = make_cache()
    assert not cache.ready
    await cache.start()
    assert cache.ready
    assert set(cache.keys) == {"rsa-1", "ec-1"}
    v = JwtVerifier(policy(algorithms=["RS256", "ES256"]), jwks=cache)
    assert v.verify(rs_token(keys), now=NOW)["sub"] == "user-1"


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(500), id="http_500"),
        pytest.param(httpx.Response(200, text="<html>"), id="not_json"),
        pytest.param(httpx.Response(200, json={"keys": "x"}), id="keys_not_list"),
        pytest.param(httpx.Response(200, json=[1]), id="not_object"),
        pytest.param(httpx.Response(200, json={"keys": []}), id="empty"),
        pytest.param(httpx.Response(302, headers={"Location": "https://evil.test/jwks"}), id="redirect"),
        pytest.param(httpx.ConnectError("refused"), id="connect_error"),
        pytest.param(httpx.ReadTimeout("slow"), id="timeout"),
    ],
)
async def test_start_survives_bad_host_and_is_not_ready(
    respx_mock: respx.MockRouter, make_cache: Any, response: Any
) -> None:
    if isinstance(response, Exception):
        respx_mock.get(URL).mock(side_effect=response)
    else:
        respx_mock.get(URL).mock(return_value=response)
    cache = make_cache()
    await cache.start()  # never raises
    assert not cache.ready
    assert cache.last_error


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(httpx.Response(503), id="http_503"),
        pytest.param(httpx.Response(200, text="{garbage"), id="garbage"),
        pytest.param(httpx.Response(200, json={"keys": []}), id="empty_set"),
        pytest.param(
            httpx.Response(200, json={"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}), id="only_oct"
        ),
        pytest.param(httpx.Response(200, content=b"{" + b" " * (MAX_JWKS_BYTES + 1) + b"}"), id="oversized"),
        pytest.param(httpx.ConnectError("down"), id="down"),
    ],
)
async def test_failed_refresh_keeps_last_good_keys(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any, bad: Any
) -> None:
    route = respx_mock.get(URL)
    route.mock(return_value=httpx.Response(200, json=doc(keys.rsa_jwk)))
    cache = make_cache()
    await cache.start()
    before = dict(cache.keys)
    if isinstance(bad, Exception):
        route.mock(side_effect=bad)
    else:
        route.mock(return_value=bad)
    assert await cache.refresh() is False
    assert cache.ready and dict(cache.keys) == before


async def started(respx_mock: respx.MockRouter, keys: Keys, make_cache: Any) -> tuple[Any, FakeClock, JwksCache]:
    """A cache started against a set holding the EC key, on a fake clock, with a 30 s cool-down."""
    route = respx_mock.get(URL)
    route.mock(return_value=httpx.Response(200, json=doc(keys.ec_jwk)))
    clock = FakeClock()
    cache = make_cache(cooldown_seconds=30, clock=clock)
    await cache.start()
    return route, clock, cache


async def test_unknown_kid_triggers_one_refresh_within_cooldown(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    route, clock, cache = await started(respx_mock, keys, make_cache)
    assert route.call_count == 1
    clock.now += 31  # the cool-down counts from the last fetch of any kind
    route.mock(return_value=httpx.Response(200, json=doc(keys.ec_jwk, keys.rsa_jwk)))  # rotation
    v = JwtVerifier(policy(algorithms=["RS256", "ES256"]), jwks=cache)
    token = rs_token(keys)
    # The request that names the new kid is refused at once; the fetch happens in the background.
    with pytest.raises(Unauthorized) as info:
        v.verify(token, now=NOW)
    assert info.value.reason == "auth.unknown_kid"
    for kid in ("made-up-1", "made-up-2", "made-up-3"):
        with pytest.raises(Unauthorized):
            v.verify(rs_token(keys, kid=kid), now=NOW)
    await cache.wait_idle()
    assert route.call_count == 2  # one refresh for the whole burst
    assert v.verify(token, now=NOW)["sub"] == "user-1"
    # Still within the cool-down: more unknown kids cause no fetch...
    clock.now += 29
    with pytest.raises(Unauthorized):
        v.verify(rs_token(keys, kid="made-up-4"), now=NOW)
    await cache.wait_idle()
    assert route.call_count == 2
    # ...and once it is over, the next unknown kid does.
    clock.now += 2
    with pytest.raises(Unauthorized):
        v.verify(rs_token(keys, kid="made-up-5"), now=NOW)
    await cache.wait_idle()
    assert route.call_count == 3


async def test_await_refresh_waits_for_the_fetch_the_unknown_kid_caused(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    route, clock, cache = await started(respx_mock, keys, make_cache)
    v = JwtVerifier(policy(algorithms=["RS256", "ES256"]), jwks=cache)
    token = rs_token(keys)
    # Nothing in flight (the start-up fetch is within the cool-down): no wait, nothing new.
    with pytest.raises(Unauthorized):
        v.verify(token, now=NOW)
    assert await v.await_new_keys() is False
    clock.now += 31
    route.mock(return_value=httpx.Response(200, json=doc(keys.ec_jwk, keys.rsa_jwk)))  # published
    with pytest.raises(Unauthorized):
        v.verify(token, now=NOW)  # schedules the fetch
    assert await v.await_new_keys() is True
    assert v.verify(token, now=NOW)["sub"] == "user-1"
    # A fetch that brings nothing new (a made-up kid) answers False: the token stays refused.
    clock.now += 31
    with pytest.raises(Unauthorized):
        v.verify(rs_token(keys, kid="made-up"), now=NOW)
    assert await v.await_new_keys() is False
    assert route.call_count == 3


async def test_a_bounded_wait_leaves_the_shared_fetch_running(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    gate = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200, json=doc(keys.ec_jwk, keys.rsa_jwk))

    route, clock, cache = await started(respx_mock, keys, make_cache)
    clock.now += 31
    route.mock(side_effect=slow)
    assert cache.request_refresh() is True
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await cache.await_refresh()
    assert cache._pending, "the fetch was cancelled with the waiter"
    gate.set()
    await cache.wait_idle()
    assert "rsa-1" in cache.keys


async def test_request_refresh_is_rate_limited(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    route = respx_mock.get(URL).respond(200, json=doc(keys.ec_jwk))
    clock = FakeClock()
    cache = make_cache(cooldown_seconds=10, clock=clock)
    await cache.start()
    assert cache.request_refresh() is False  # a fetch just ran
    clock.now += 10
    assert cache.request_refresh() is True
    assert cache.request_refresh() is False  # one already scheduled
    await cache.wait_idle()
    assert route.call_count == 2


def test_request_refresh_without_loop_is_a_no_op(keys: Keys) -> None:
    cache = JwksCache(URL, allowed_algorithms=ALGS)
    assert cache.request_refresh() is False


async def test_background_timer_refreshes(respx_mock: respx.MockRouter, keys: Keys, make_cache: Any) -> None:
    route = respx_mock.get(URL).respond(200, json=doc(keys.ec_jwk))
    cache = make_cache(refresh_seconds=0.02, cooldown_seconds=0.01)
    await cache.start()
    for _ in range(100):
        if route.call_count >= 3:
            break
        await asyncio.sleep(0.01)
    assert route.call_count >= 3
    await cache.close()
    calls = route.call_count
    await asyncio.sleep(0.05)
    assert route.call_count == calls  # closed: no more fetches


def _small_rsa_jwk() -> dict[str, Any]:
    # 1024-bit keys are refused; generating one is quick.
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    out = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    out.update(kid="rsa-small", alg="RS256")
    return out


async def test_only_keys_fitting_the_allowlist_are_loaded(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    p384 = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key()))
    private_ec = json.loads(ECAlgorithm.to_jwk(keys.ec))
    candidates = [
        keys.rsa_jwk,
        keys.ec_jwk,
        {**keys.ed_jwk},  # EdDSA not allowed here
        {**keys.rsa_jwk, "kid": "ps", "alg": "PS256"},  # alg not allowed
        {**keys.rsa_jwk, "kid": "enc", "use": "enc"},
        {**keys.rsa_jwk, "kid": "ops", "key_ops": ["encrypt"]},
        {**keys.ec_jwk, "kid": "liar", "alg": "RS256"},  # alg does not fit kty
        {**p384, "kid": "p384"},  # curve of ES384, not allowed
        {**private_ec, "kid": "private"},
        {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "hmac"},
        {**keys.rsa_jwk, "kid": None},
        {**keys.rsa_jwk, "kid": "broken", "n": "AAAA"},
        _small_rsa_jwk(),
        {**keys.ec_jwk, "kid": "dup"},
        {**keys.rsa_jwk, "kid": "dup"},
        "not-an-object",
    ]
    respx_mock.get(URL).respond(200, json={"keys": candidates})
    cache = make_cache()
    await cache.start()
    assert set(cache.keys) == {"rsa-1", "ec-1"}
    assert cache.keys["rsa-1"].algorithms == {"RS256"}


async def test_unchanged_keys_keep_their_object(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    route = respx_mock.get(URL).respond(200, json=doc(keys.rsa_jwk, keys.ec_jwk))
    cache = make_cache()
    await cache.start()
    rsa_before, ec_before = cache.keys["rsa-1"], cache.keys["ec-1"]
    route.respond(200, json=doc(keys.rsa_jwk, {**keys.ec_jwk, "x": keys.ec_jwk["y"], "y": keys.ec_jwk["x"]}))
    await cache.refresh()  # EC point swapped: invalid key, skipped; RSA unchanged
    assert cache.keys["rsa-1"] is rsa_before
    assert "ec-1" not in cache.keys or cache.keys["ec-1"] is not ec_before


async def test_slow_host_hits_total_deadline(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=doc(keys.ec_jwk))

    respx_mock.get(URL).mock(side_effect=slow)
    cache = make_cache(http_timeout=0.05)
    await cache.start()
    assert not cache.ready
    assert cache.last_error and cache.last_error.startswith("TimeoutError")


# --- load_jwk: every refusal names its reason (it goes to the log), and what a loaded key holds ---


def _rejection(jwk: Any, allowed: frozenset[str] = ALGS) -> str:
    with pytest.raises(KeyRejected) as info:
        load_jwk(jwk, allowed)
    return str(info.value)


def test_load_jwk_refusals_name_their_reason(keys: Keys) -> None:
    rsa_, ec_ = keys.rsa_jwk, keys.ec_jwk
    okp = {k: v for k, v in keys.ed_jwk.items() if k != "alg"}
    cases: list[tuple[Any, frozenset[str], str]] = [
        ("not-an-object", ALGS, "not a JSON object"),
        ({**rsa_, "kid": 5}, ALGS, "kid is not a string"),
        ({**rsa_, "d": "AQAB"}, ALGS, "contains private key material"),
        ({**rsa_, "oth": []}, ALGS, "contains private key material"),
        ({**rsa_, "use": "enc"}, ALGS, "use is 'enc', not 'sig'"),
        ({**rsa_, "key_ops": ["encrypt"]}, ALGS, "key_ops does not include 'verify'"),
        ({**rsa_, "key_ops": "verify"}, ALGS, "key_ops does not include 'verify'"),
        ({**ec_, "crv": "P-192", "alg": None}, ALGS, "unsupported EC curve 'P-192'"),
        ({k: v for k, v in ec_.items() if k not in ("crv", "alg")}, ALGS, "unsupported EC curve None"),
        ({**okp, "crv": "X25519"}, frozenset({"EdDSA"}), "unsupported OKP curve 'X25519'"),
        ({k: v for k, v in okp.items() if k != "crv"}, frozenset({"EdDSA"}), "unsupported OKP curve None"),
        # An HMAC secret is refused for what it is, with or without its `k`, and whatever else
        # it carries (a private member, a `use`, an allowlisted alg).
        ({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "h"}, frozenset({"HS256"}),
         "symmetric (oct) keys are never accepted from a key set"),
        ({"kty": "oct", "k": "c2VjcmV0", "d": "x", "use": "enc"}, ALGS,
         "symmetric (oct) keys are never accepted from a key set"),
        ({"kty": "oct", "kid": "h", "alg": "HS256"}, frozenset({"HS256"}),
         "symmetric (oct) keys are never accepted from a key set"),
        ({**rsa_, "kty": "DSA"}, ALGS, "unsupported kty 'DSA'"),
        ({k: v for k, v in rsa_.items() if k != "kty"}, ALGS, "unsupported kty None"),
        ({**ec_, "alg": "RS256"}, ALGS, "alg 'RS256' does not fit kty/crv"),
        ({**ec_, "alg": "ES512"}, ALGS, "alg 'ES512' does not fit kty/crv"),
        (rsa_, frozenset({"ES256"}), "no algorithm of this key is on the allowlist"),
        ({**rsa_, "alg": "PS256"}, frozenset({"RS256"}), "no algorithm of this key is on the allowlist"),
        (_small_rsa_jwk(), ALGS, "RSA key of 1024 bits is below 2048"),
    ]
    for jwk, allowed, reason in cases:
        if isinstance(jwk, dict):
            jwk = {k: v for k, v in jwk.items() if v is not None}
        assert _rejection(jwk, allowed) == reason, jwk


def test_unusable_key_material_names_the_error(keys: Keys) -> None:
    reason = _rejection({**keys.rsa_jwk, "n": "AAAA"})
    assert reason.startswith("unusable key material: ")
    name = reason.removeprefix("unusable key material: ")
    assert name.isidentifier() and name != "NoneType"


def test_loaded_key_carries_its_kid_and_only_fitting_algorithms(keys: Keys) -> None:
    rsa_key = load_jwk(keys.rsa_jwk, frozenset({"RS256", "PS256", "ES256"}))
    assert (rsa_key.kid, rsa_key.algorithms) == ("rsa-1", frozenset({"RS256"}))  # its declared alg only
    undeclared = {k: v for k, v in keys.rsa_jwk.items() if k != "alg"}
    assert load_jwk(undeclared, frozenset({"RS256", "PS256", "ES256"})).algorithms == {"RS256", "PS256"}
    ec_key = load_jwk(keys.ec_jwk, ALGS)
    assert (ec_key.kid, ec_key.algorithms) == ("ec-1", frozenset({"ES256"}))
    assert ec_key.key.public_numbers() == keys.ec.public_key().public_numbers()


def test_ed448_key_without_alg_loads_and_verifies() -> None:
    # Ed448 is an accepted OKP curve; pyjwt only guesses an algorithm for Ed25519, so the loader
    # must name the algorithm itself when the JWK declares none.
    private = ed448.Ed448PrivateKey.generate()
    jwk = {**json.loads(OKPAlgorithm.to_jwk(private.public_key())), "kid": "ed448-1"}
    assert "alg" not in jwk
    loaded = load_jwk(jwk, frozenset({"EdDSA", "RS256"}))
    assert (loaded.kid, loaded.algorithms) == ("ed448-1", frozenset({"EdDSA"}))
    v = JwtVerifier(policy(algorithms=["EdDSA"]), jwks=StaticKeySet({"ed448-1": loaded}))
    token = sign_with({"alg": "EdDSA", "typ": "JWT", "kid": "ed448-1"}, claims(), private)
    assert v.verify(token, now=NOW)["sub"] == "user-1"
    forged = sign_with({"alg": "EdDSA", "typ": "JWT", "kid": "ed448-1"}, claims(),
                       ed448.Ed448PrivateKey.generate())
    with pytest.raises(Unauthorized):
        v.verify(forged, now=NOW)


def test_a_jwk_without_kid_loads_under_the_empty_kid(keys: Keys) -> None:
    # A configured single key may have no kid; load_jwks (a JWKS) refuses that, load_jwk does not.
    jwk = {k: v for k, v in keys.rsa_jwk.items() if k != "kid"}
    assert load_jwk(jwk, ALGS).kid == ""


# --- load_jwks: the document, kids, reuse of unchanged keys, and the log line per skipped key ---


@pytest.mark.parametrize("document", [{"keys": "x"}, {"keys": {}}, {"key": []}, [1], "keys", None])
def test_load_jwks_refuses_a_document_that_is_not_a_key_set(document: Any) -> None:
    with pytest.raises(KeyRejected) as info:
        load_jwks(document, ALGS)
    assert str(info.value) == 'JWKS is not an object with a "keys" list'


def test_load_jwks_skips_keys_without_a_usable_kid_and_logs_why(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    document = doc(
        {**keys.rsa_jwk, "kid": ""},
        {k: v for k, v in keys.rsa_jwk.items() if k != "kid"},
        {**keys.rsa_jwk, "kid": 7},
        {**keys.ec_jwk, "kid": "dup"},
        {**keys.rsa_jwk, "kid": "dup"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        keys.ec_jwk,
    )
    with caplog.at_level(logging.WARNING, logger="gateway.auth.keys"):
        loaded, raw = load_jwks(document, ALGS)
    assert set(loaded) == {"ec-1"} and set(raw) == {"ec-1"}
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.auth.keys"] == [
        "jwks key 0 skipped: missing kid",
        "jwks key 1 skipped: missing kid",
        "jwks key 2 skipped: missing kid",
        "jwks key 3 skipped: duplicate kid 'dup'",
        "jwks key 4 skipped: duplicate kid 'dup'",
        "jwks key 5 skipped: symmetric (oct) keys are never accepted from a key set",
    ]


def test_load_jwks_reloads_an_unchanged_jwk_that_has_no_previous_key(keys: Keys) -> None:
    first, raw = load_jwks(doc(keys.rsa_jwk), ALGS)
    again, _ = load_jwks(doc(keys.rsa_jwk), ALGS, first, raw)
    assert again["rsa-1"] is first["rsa-1"]
    # The raw JWK matches but its key object is gone: load it again, with the same allowlist.
    fresh, _ = load_jwks(doc(keys.rsa_jwk), frozenset({"RS256"}), {}, raw)
    assert isinstance(fresh["rsa-1"], VerifyKey)
    assert (fresh["rsa-1"].kid, fresh["rsa-1"].algorithms) == ("rsa-1", frozenset({"RS256"}))
    assert load_jwks(doc(keys.rsa_jwk), frozenset({"ES256"}), {}, raw)[0] == {}


async def test_static_key_set_never_refreshes(keys: Keys) -> None:
    static = key_set(keys)
    assert static.request_refresh() is False
    assert await static.await_refresh() is False
    v = JwtVerifier(policy(algorithms=["RS256"]), jwks=StaticKeySet({}))
    with pytest.raises(Unauthorized):
        v.verify(rs_token(keys), now=NOW)
    assert await v.await_new_keys() is False


# --- JwksCache: how it fetches, what it reports ---------------------------------------------------


class ChunkedStream(httpx.AsyncByteStream):
    """A response body delivered in several chunks, as a real JWKS host may send it."""

    def __init__(self, body: bytes, size: int) -> None:
        self.chunks = [body[i:i + size] for i in range(0, len(body), size)]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def padded(document: dict[str, Any], total: int) -> bytes:
    body = json.dumps(document).encode()
    return body[:-1] + b" " * (total - len(body)) + b"}"


async def test_redirect_is_not_followed_even_by_a_client_that_would(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    evil = "https://evil.test/jwks.json"
    respx_mock.get(URL).respond(307, headers={"Location": evil})
    elsewhere = respx_mock.get(evil).respond(200, json=doc(keys.rsa_jwk))
    async with httpx.AsyncClient(follow_redirects=True) as client:
        cache = make_cache(client=client)
        await cache.start()
        assert not cache.ready
        assert not elsewhere.called
        assert cache.last_error == "KeyRejected: HTTP 307"


async def test_fetch_asks_for_json_and_counts_fetches(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    route = respx_mock.get(URL).respond(200, json=doc(keys.ec_jwk))
    cache = make_cache()
    assert (cache.fetches, cache.last_error, cache.last_success) == (0, None, None)
    await cache.start()
    assert route.calls.last.request.headers["accept"] == "application/json"
    assert route.calls.last.request.method == "GET"
    assert cache.fetches == 1
    assert await cache.refresh() is True
    assert cache.fetches == 2
    assert cache.last_error is None and isinstance(cache.last_success, float)


async def test_redirect_is_not_followed(respx_mock: respx.MockRouter, keys: Keys, make_cache: Any) -> None:
    evil = "https://evil.test/jwks.json"
    respx_mock.get(URL).respond(302, headers={"Location": evil})
    elsewhere = respx_mock.get(evil).respond(200, json=doc(keys.rsa_jwk))
    cache = make_cache()
    await cache.start()
    assert not cache.ready
    assert not elsewhere.called
    assert cache.last_error == "KeyRejected: HTTP 302"


async def test_failure_is_recorded_and_logged_then_cleared_by_a_success(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any, caplog: pytest.LogCaptureFixture
) -> None:
    route = respx_mock.get(URL).respond(200, json=doc(keys.ec_jwk))
    cache = make_cache()
    await cache.start()
    route.respond(503)
    with caplog.at_level(logging.WARNING, logger="gateway.auth.jwks"):
        assert await cache.refresh() is False
    assert cache.last_error == "KeyRejected: HTTP 503"
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.auth.jwks"] == [
        f"jwks fetch from {URL} failed, keeping 1 keys: KeyRejected: HTTP 503"
    ]
    route.respond(200, json={"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]})
    assert await cache.refresh() is False
    assert cache.last_error == "KeyRejected: no usable key in the set"
    route.respond(200, json=doc(keys.ec_jwk))
    assert await cache.refresh() is True
    assert cache.last_error is None


async def test_body_in_chunks_is_assembled(respx_mock: respx.MockRouter, keys: Keys, make_cache: Any) -> None:
    body = json.dumps(doc(keys.rsa_jwk, keys.ec_jwk)).encode()
    respx_mock.get(URL).mock(return_value=httpx.Response(200, stream=ChunkedStream(body, 64)))
    cache = make_cache()
    await cache.start()
    assert set(cache.keys) == {"rsa-1", "ec-1"}


async def test_size_cap_counts_the_whole_body_not_each_chunk(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    body = padded(doc(keys.ec_jwk), MAX_JWKS_BYTES + 1)
    respx_mock.get(URL).mock(return_value=httpx.Response(200, stream=ChunkedStream(body, 4096)))
    cache = make_cache()
    await cache.start()
    assert not cache.ready
    assert cache.last_error == f"KeyRejected: JWKS larger than {MAX_JWKS_BYTES} bytes"


async def test_body_of_exactly_the_cap_is_accepted(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    body = padded(doc(keys.ec_jwk), MAX_JWKS_BYTES)
    assert len(body) == MAX_JWKS_BYTES
    respx_mock.get(URL).respond(200, content=body)
    cache = make_cache()
    await cache.start()
    assert set(cache.keys) == {"ec-1"}


async def test_unknown_kid_before_any_fetch_schedules_one(
    respx_mock: respx.MockRouter, keys: Keys, make_cache: Any
) -> None:
    route = respx_mock.get(URL).respond(200, json=doc(keys.ec_jwk))
    clock = FakeClock()
    cache = make_cache(clock=clock)
    assert cache.request_refresh() is True
    assert await cache.await_refresh() is True
    assert route.call_count == 1 and set(cache.keys) == {"ec-1"}
    # The finished fetch no longer counts as in flight: after the cool-down another one may run.
    assert not cache._pending
    clock.now += 31
    assert cache.request_refresh() is True
    assert await cache.await_refresh() is False  # same key set
    assert route.call_count == 2


async def test_own_client_has_the_deadline_and_is_closed_a_given_one_is_not(make_cache: Any) -> None:
    own = make_cache(http_timeout=0.5)
    assert own._client.timeout == httpx.Timeout(0.5)
    assert own._client.follow_redirects is False
    await own.close()
    assert own._client.is_closed
    async with httpx.AsyncClient() as client:
        given = make_cache(client=client)
        await given.close()
        assert not client.is_closed
