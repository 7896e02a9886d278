"""Rate-limit policy validation and compilation (no storage involved)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.ratelimit import (
    BruteForcePolicy,
    RateLimitPolicy,
    RateLimitSettings,
    claim_values,
    compile_policy,
    storage_from_url,
)
from gateway.ratelimit.limiter import identifiers


@pytest.mark.parametrize(
    "fields, message",
    [
        pytest.param({"limits": "ten per second"}, "cannot parse rate limit", id="words"),
        pytest.param({"limits": ""}, "cannot parse rate limit", id="empty"),
        pytest.param({"limits": "10/fortnight"}, "cannot parse rate limit", id="bad_unit"),
        pytest.param({"limits": "10/second, 5"}, "cannot parse rate limit", id="trailing_garbage"),
        pytest.param({"limits": "0/second"}, "denies everything", id="zero"),
        pytest.param({"limits": "1/second", "key": "user"}, "key", id="unknown_key"),
        pytest.param({"limits": "1/second", "key": ["sub", "sub"]}, "duplicates", id="dup_parts"),
        pytest.param({"limits": "1/second", "key": []}, "non-empty", id="empty_parts"),
        pytest.param({"limits": "1/second", "key": ["route", "ip"]}, "on its own", id="route_combo"),
        pytest.param({"limits": "1/second", "key": ["ip", "tenant"]}, "key", id="bad_part"),
        pytest.param({"limits": "1/second", "strategy": "token-bucket"}, "strategy", id="bad_strategy"),
        pytest.param({"limits": "1/second", "enforced": False}, "Extra inputs", id="typo_field"),
    ],
)
def test_policy_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RateLimitPolicy.model_validate(fields)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "fields, message",
    [
        pytest.param({"replicas": 0}, "greater than or equal", id="zero_replicas"),
        pytest.param({"on_storage_error": "ignore"}, "on_storage_error", id="bad_mode"),
        pytest.param({"brute_force": {"window": "1 eon"}}, "not a window", id="bad_bf_window"),
        pytest.param({"brute_force": {"max_failures": 0}}, "greater than or equal", id="zero_failures"),
        pytest.param({"brute_force": {"cooldown": 5}}, "Extra inputs", id="bf_typo"),
        pytest.param({"default": {"limits": "nope"}}, "cannot parse", id="bad_default"),
    ],
)
def test_settings_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RateLimitSettings.model_validate(fields)
    assert message in str(exc.value)


def test_shipped_brute_force_defaults() -> None:
    bf = RateLimitSettings().brute_force
    assert (bf.max_failures, bf.window, bf.cooldown_seconds) == (30, "1 minute", 60)
    item = bf.item()
    assert (item.amount, item.get_expiry()) == (30, 60)
    assert BruteForcePolicy().item(replicas=4).amount == 8  # ceil(30 / 4)


@pytest.mark.parametrize(
    "key, parts",
    [("ip", ("ip",)), ("sub+org", ("sub", "org")), ("ip+sub", ("ip", "sub")), (["org", "ip"], ("org", "ip"))],
)
def test_key_forms(key: Any, parts: tuple[str, ...]) -> None:
    assert RateLimitPolicy(limits="1/second", key=key).key_parts() == parts


def test_compile_headers_and_local_division() -> None:
    policy = RateLimitPolicy(limits="10/second; 300/15 minutes; 1/day")
    compiled = compile_policy(policy, "orders", replicas=3)
    assert (
        compiled.policy_header
        == b'"orders-1s";q=10;w=1, "orders-900s";q=300;w=900, "orders-86400s";q=1;w=86400'
    )
    # ceil(10/3)=4, ceil(300/3)=100, and never below 1
    assert compiled.local_policy_header == (
        b'"orders-1s";q=4;w=1, "orders-900s";q=100;w=900, "orders-86400s";q=1;w=86400'
    )
    single = compile_policy(RateLimitPolicy(limits="5/minute"), "default")
    assert single.policy_header == b'"default";q=5;w=60'
    assert single.local_policy_header == single.policy_header


def test_compile_sanitises_name_for_structured_field() -> None:
    compiled = compile_policy(RateLimitPolicy(limits="5/minute"), 'we"ird\\name\n')
    assert compiled.policy_header == b'"we_ird_name_";q=5;w=60'


def test_identifiers_do_not_collide() -> None:
    a = identifiers("r", "fixed-window", ("sub", "org"), "1.1.1.1", "a/org=b", None)
    b = identifiers("r", "fixed-window", ("sub", "org"), "1.1.1.1", "a", "b")
    assert "/".join(a) != "/".join(b)
    anon = identifiers("r", "fixed-window", ("sub",), "1.1.1.1", None, None)
    assert anon[-1] == "sub@ip=1.1.1.1"
    assert identifiers("r", "moving-window", ("ip",), "1.1.1.1", None, None) != identifiers(
        "r", "fixed-window", ("ip",), "1.1.1.1", None, None
    )


@pytest.mark.parametrize(
    "claims, path, expected",
    [
        pytest.param(None, "org_id", (None, None), id="anonymous"),
        pytest.param({"sub": "u1", "org_id": "o1"}, "org_id", ("u1", "o1"), id="flat"),
        pytest.param(
            {"sub": "u1", "app_metadata": {"org_id": 7}}, "app_metadata.org_id", ("u1", "7"), id="dotted"
        ),
        pytest.param(
            {"sub": "u1", "app_metadata": "x"}, "app_metadata.org_id", ("u1", None), id="not_a_dict"
        ),
        pytest.param({"sub": "", "org_id": ""}, "org_id", (None, None), id="empty_strings"),
    ],
)
def test_claim_values(
    claims: dict[str, Any] | None, path: str, expected: tuple[str | None, str | None]
) -> None:
    assert claim_values(claims, path) == expected


@pytest.mark.parametrize(
    "url, cls_name",
    [
        ("redis://127.0.0.1:1/0", "RedisStorage"),
        ("async+redis://127.0.0.1:1/0", "RedisStorage"),
        ("rediss://127.0.0.1:1/0", "RedisStorage"),
        ("redis+sentinel://127.0.0.1:1/mymaster", "RedisSentinelStorage"),
        ("redis+cluster://127.0.0.1:1,127.0.0.1:2", "RedisClusterStorage"),
        (None, "SweepingMemoryStorage"),
    ],
)
def test_storage_from_url(url: str | None, cls_name: str) -> None:
    assert type(storage_from_url(url)).__name__ == cls_name


@pytest.mark.parametrize("url", ["memcached://127.0.0.1:11211", "mongodb://x", "127.0.0.1:6379"])
def test_storage_from_url_refuses_non_redis(url: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_REDIS_URL"):
        storage_from_url(url)


def test_redis_client_is_pooled_with_small_timeouts() -> None:
    storage = storage_from_url("redis://127.0.0.1:1/3", timeout=0.2)
    pool = storage.bridge.storage.connection_pool  # type: ignore[attr-defined]
    assert type(pool).__name__ == "BlockingConnectionPool"
    assert pool.connection_kwargs["socket_timeout"] == 0.2
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.2
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["retry"].get_retries() == 0


async def test_sweeping_memory_storage_expires_and_sweeps_rarely() -> None:
    """Expired entries stop counting at once (lazy reads) and are freed by a sweep that runs at
    most once per interval, inline (no thread hop per key)."""
    import asyncio

    from gateway.ratelimit.backend import SweepingMemoryStorage

    s = SweepingMemoryStorage()
    # Long enough that the 300 hits below fit in one interval however busy the machine (at 0.2 s
    # a loaded CI run saw two sweeps); the second sweep is then brought forward by hand.
    s.sweep_interval = 60.0
    sweeps = 0
    original = s._MemoryStorage__expire_events  # type: ignore[attr-defined]

    async def counting() -> None:
        nonlocal sweeps
        sweeps += 1
        await original()

    s._MemoryStorage__expire_events = counting  # type: ignore[attr-defined]
    for i in range(300):
        assert await s.acquire_entry(f"k{i % 30}", 100, 1)
        await asyncio.sleep(0)
    assert sweeps == 1
    assert await s.incr("counter", 1) == 1
    await asyncio.sleep(1.1)
    assert await s.get("counter") == 0  # expired on read, before any sweep
    assert (await s.get_moving_window("k1", 100, 1))[1] == 0
    await s.acquire_entry("trigger", 100, 1)  # within the interval: no sweep
    await asyncio.sleep(0.05)
    assert sweeps == 1
    s._next_sweep = 0.0  # the interval has passed
    await s.acquire_entry("trigger", 100, 1)  # schedules one sweep
    for _ in range(500):  # the sweep is a task, and yields between chunks: wait for it to finish
        if sweeps == 2 and "k1" not in s.events and "counter" not in s.storage:
            break
        await asyncio.sleep(0.01)
    assert sweeps == 2
    assert "k1" not in s.events and "counter" not in s.storage
