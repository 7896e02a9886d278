"""JwksCache against a mocked JWKS host (respx): start-up, refresh on unknown kid, keeping good keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth.jwks import MAX_JWKS_BYTES, JwksCache
from gateway.auth.jwt_verifier import JwtVerifier
from gateway.errors import Unauthorized
from tests.auth.factories import NOW, Keys, policy, rs_token

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
