"""Rate limits shared across replicas, end to end: three real gateway processes, one real Redis.

What a multi-replica deployment relies on (issue 4): a burst spread over the replicas lets
through exactly the limit, no more; Redis dying mid-burst costs no 5xx in `local` mode and each
replica keeps limiting with its share (limit / replicas); Redis coming back restores the shared
budget by itself; `closed` and `open` do what they say; failed verifications from one address
block its failing tokens on every replica (valid ones are still served); `enforce: false` never denies.

Client addresses come from `X-Forwarded-For` (the policy trusts 127.0.0.1 as a proxy), so every
test gets fresh `ip` keys; `sub`/`org` keys are fresh per test through unique subjects. Limits
are per day: the fixed-window and sliding-window-counter strategies allow more just after a window
boundary, and a burst on a busy machine can take seconds, so a per-minute limit would make an exact
count depend on the clock.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.auth import mint_dev_token
from tests.support.gateway_proc import (
    TEST_JWT_SECRET,
    Proc,
    echo_upstream,
    start_gateways,
    wait_until,
    write_policy,
)
from tests.support.procs import RedisServer, free_port, redis_server

LIMIT = 30
REPLICAS = 3
BURST = 90

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    trusted_proxies: ["127.0.0.1/32"]
    auth:
      jwt: {algorithms: [HS256]}
    rate_limits:
      on_storage_error: %(mode)s
      replicas: %(replicas)d
      brute_force: {max_failures: 30, window: "1 minute", cooldown_seconds: 60}
    routes:
      - id: burst.moving
        path: /v1/burst/moving
        methods: [GET]
        auth: jwt
        upstream_path: /burst
        rate_limit: {limits: "%(limit)d/day", key: sub, strategy: moving-window}
      - id: burst.sliding
        path: /v1/burst/sliding
        methods: [GET]
        auth: jwt
        upstream_path: /burst
        rate_limit: {limits: "%(limit)d/day", key: sub, strategy: sliding-window-counter}
      - id: burst.fixed
        path: /v1/burst/fixed
        methods: [GET]
        auth: jwt
        upstream_path: /burst
        rate_limit: {limits: "%(limit)d/day", key: sub, strategy: fixed-window}
      - id: by.ip
        path: /v1/by-ip
        methods: [GET]
        auth: none
        upstream_path: /by-ip
        rate_limit: {limits: "5/day", key: ip}
      - id: by.sub
        path: /v1/by-sub
        methods: [GET]
        auth: jwt
        upstream_path: /by-sub
        rate_limit: {limits: "5/day", key: sub}
      - id: by.org
        path: /v1/by-org
        methods: [GET]
        auth: jwt
        upstream_path: /by-org
        rate_limit: {limits: "5/day", key: org}
      - id: shadow
        path: /v1/shadow
        methods: [GET]
        auth: jwt
        upstream_path: /shadow
        rate_limit: {limits: "3/day", key: sub, enforce: false}
      - id: login
        path: /v1/login
        methods: [GET]
        auth: jwt
        upstream_path: /login
"""


def policy_dir(root: Path, mode: str = "local", replicas: int = REPLICAS, limit: int = LIMIT) -> str:
    return str(write_policy(root, gateway=POLICY % {"mode": mode, "replicas": replicas, "limit": limit}))


def start_many(n: int, directory: str, upstream_url: str, redis_url: str) -> list[Proc]:
    return start_gateways(n, directory, upstream_url, {"GATEWAY_REDIS_URL": redis_url})


def token(sub: str | None = None, org: str = "org-a") -> str:
    return mint_dev_token(TEST_JWT_SECRET, sub or f"user-{uuid.uuid4().hex[:8]}", org,
                          audience="authenticated")


def fresh_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"198.51.{raw[0]}.{raw[1] or 1}"


def reason(resp: httpx.Response) -> str | None:
    if not resp.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    return str(resp.json().get("reason"))


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=64)) as c:
        yield c


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    with echo_upstream() as up:
        yield up


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory, upstream: Proc,
         shared_redis: RedisServer) -> Iterator[list[Proc]]:
    """Three replicas, `replicas: 3`, `on_storage_error: local`, one shared Redis."""
    directory = policy_dir(tmp_path_factory.mktemp("rl-trio"))
    procs = start_many(REPLICAS, directory, upstream.url, shared_redis.url)
    yield procs
    for p in procs:
        p.stop()




def burst(client: httpx.Client, gws: list[Proc], path: str, n: int = BURST,
          headers: dict[str, str] | None = None,
          on_done: Callable[[int], None] | None = None) -> list[tuple[int, httpx.Response]]:
    """`n` concurrent GETs, round-robin over `gws`; returns (replica index, response) in send order."""
    done = 0
    lock = threading.Lock()

    def one(i: int) -> tuple[int, httpx.Response]:
        nonlocal done
        r = client.get(gws[i % len(gws)].url + path, headers=headers)
        with lock:
            done += 1
            count = done
        if on_done is not None:
            on_done(count)
        return i % len(gws), r

    with ThreadPoolExecutor(max_workers=12) as pool:
        return list(pool.map(one, range(n)))


def check_denial(r: httpx.Response, quota: int) -> None:
    assert r.status_code == 429, r.text
    assert reason(r) == "ratelimit.exceeded"
    assert int(r.headers["retry-after"]) >= 1
    assert f"q={quota};w=86400" in r.headers["ratelimit-policy"]
    assert ";r=0;" in r.headers["ratelimit"]


# --- shared limiting across three replicas ---------------------------------------------------------


@pytest.mark.parametrize("strategy", ["moving", "sliding", "fixed"])
def test_burst_over_three_replicas_lets_through_exactly_the_limit(
    client: httpx.Client, trio: list[Proc], strategy: str
) -> None:
    auth = {"Authorization": f"Bearer {token()}"}
    results = burst(client, trio, f"/v1/burst/{strategy}", headers=auth)

    statuses = Counter(r.status_code for _, r in results)
    assert statuses == {200: LIMIT, 429: BURST - LIMIT}, statuses
    # every replica took part in the burst, and the shared budget was spent across them
    assert {i for i, r in results if r.status_code == 200} == set(range(REPLICAS))
    for _, r in results:
        if r.status_code == 200:
            assert f'"burst.{strategy}";q={LIMIT};w=86400' == r.headers["ratelimit-policy"]
            assert r.headers["ratelimit"].startswith(f'"burst.{strategy}";r=')
        else:
            check_denial(r, LIMIT)


def test_ip_key_is_shared_across_replicas_and_separate_per_address(
    client: httpx.Client, trio: list[Proc]
) -> None:
    a, b = fresh_ip(), fresh_ip()
    first = [client.get(trio[i % 3].url + "/v1/by-ip", headers={"X-Forwarded-For": a}) for i in range(7)]
    assert [r.status_code for r in first] == [200] * 5 + [429] * 2
    check = client.get(trio[2].url + "/v1/by-ip", headers={"X-Forwarded-For": b})
    assert check.status_code == 200


def test_different_subs_do_not_share_a_budget_with_key_sub(client: httpx.Client, trio: list[Proc]) -> None:
    alice, bob = token(org="org-same"), token(org="org-same")
    got = [client.get(trio[i % 3].url + "/v1/by-sub", headers={"Authorization": f"Bearer {alice}"}).status_code
           for i in range(6)]
    assert got == [200] * 5 + [429]
    # same org, other user: a budget of its own
    got = [client.get(trio[i % 3].url + "/v1/by-sub", headers={"Authorization": f"Bearer {bob}"}).status_code
           for i in range(6)]
    assert got == [200] * 5 + [429]


def test_same_org_shares_a_budget_with_key_org(client: httpx.Client, trio: list[Proc]) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    users = [token(org=org) for _ in range(3)]
    # 5 requests from three different users of one org, spread over the replicas
    got = [client.get(trio[i % 3].url + "/v1/by-org", headers={"Authorization": f"Bearer {users[i % 3]}"})
           for i in range(5)]
    assert [r.status_code for r in got] == [200] * 5
    denied = client.get(trio[1].url + "/v1/by-org", headers={"Authorization": f"Bearer {token(org=org)}"})
    check = denied.status_code, reason(denied)
    assert check == (429, "ratelimit.exceeded")
    other = client.get(trio[1].url + "/v1/by-org",
                       headers={"Authorization": f"Bearer {token(org=org + '-other')}"})
    assert other.status_code == 200


def test_shadow_mode_never_denies(client: httpx.Client, trio: list[Proc]) -> None:
    auth = {"Authorization": f"Bearer {token()}"}
    results = burst(client, trio, "/v1/shadow", n=20, headers=auth)
    assert Counter(r.status_code for _, r in results) == {200: 20}
    # a shadow limit is invisible to clients
    assert all("ratelimit" not in r.headers for _, r in results)


def test_brute_force_blocks_failing_tokens_but_serves_valid_ones_on_every_replica(
    client: httpx.Client, trio: list[Proc]
) -> None:
    attacker = fresh_ip()
    bad = {"Authorization": "Bearer not.a.jwt", "X-Forwarded-For": attacker}
    # 30 failures from one address, spread over the replicas: the count is shared through Redis
    fails = [client.get(trio[i % 3].url + "/v1/login", headers=bad) for i in range(30)]
    assert all(r.status_code == 401 and str(reason(r)).startswith("auth.") for r in fails), \
        [(r.status_code, reason(r)) for r in fails]

    # the block is shared: a further failing token is refused on every replica
    for gw in trio:
        r = client.get(gw.url + "/v1/login", headers=bad)
        assert (r.status_code, reason(r)) == (429, "auth.too_many_failures"), r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60
    # a valid token from the same (shared) address is still verified and served everywhere
    good = {"Authorization": f"Bearer {token()}", "X-Forwarded-For": attacker}
    for gw in trio:
        r = client.get(gw.url + "/v1/login", headers=good)
        assert r.status_code == 200, r.text
    # requests without any token never counted, and are answered 401 as usual
    r = client.get(trio[0].url + "/v1/login", headers={"X-Forwarded-For": attacker})
    assert (r.status_code, reason(r)) == (401, "auth.missing_token")


# --- Redis trouble -------------------------------------------------------------------------------


def policy_quota(r: httpx.Response) -> int | None:
    value = r.headers.get("ratelimit-policy", "")
    for part in value.split(";"):
        if part.startswith("q="):
            return int(part[2:])
    return None


def test_redis_killed_mid_burst_local_fallback_then_shared_again(
    tmp_path: Path, client: httpx.Client, upstream: Proc
) -> None:
    redis = RedisServer().start()
    procs = start_many(REPLICAS, policy_dir(tmp_path), upstream.url, redis.url)
    try:
        path = "/v1/burst/moving"
        per_replica = math.ceil(LIMIT / REPLICAS)

        # 1. Redis dies while a burst is in flight: nobody sees a 5xx.
        killed = threading.Event()

        def kill_after(count: int) -> None:
            if count == 20 and not killed.is_set():
                killed.set()
                redis.kill()

        auth = {"Authorization": f"Bearer {token()}"}
        results = burst(client, procs, path, headers=auth, on_done=kill_after)
        assert killed.is_set()
        statuses = Counter(r.status_code for _, r in results)
        assert set(statuses) <= {200, 429}, statuses
        # shared budget before the kill + at most each replica's share after it
        assert LIMIT // 2 <= statuses[200] <= LIMIT + REPLICAS * per_replica, statuses

        # 2. Redis down, fresh key: each replica limits on its own, with limit / replicas.
        auth = {"Authorization": f"Bearer {token()}"}
        results = burst(client, procs, path, headers=auth)
        assert all(r.status_code in (200, 429) for _, r in results)
        allowed = Counter(i for i, r in results if r.status_code == 200)
        assert sum(allowed.values()) <= REPLICAS * per_replica, allowed
        assert allowed == {i: per_replica for i in range(REPLICAS)}, allowed
        for _, r in results:
            if r.status_code == 429:
                check_denial(r, per_replica)
            assert policy_quota(r) == per_replica

        # 3. Redis back on the same address: every replica returns to the shared budget by itself.
        redis = RedisServer(port=redis.port).start()

        def all_shared() -> bool:
            probe = {"Authorization": f"Bearer {token()}"}
            return all(policy_quota(client.get(p.url + path, headers=probe)) == LIMIT for p in procs)

        assert wait_until(all_shared, timeout=10, interval=0.3), "replicas did not leave degraded mode"
        auth = {"Authorization": f"Bearer {token()}"}
        results = burst(client, procs, path, headers=auth)
        statuses = Counter(r.status_code for _, r in results)
        # (replica, RateLimit-Policy quota, status): a quota of limit/replicas means that replica
        # fell back to its local store again although Redis is up
        quotas = Counter((i, policy_quota(r), r.status_code) for i, r in results)
        assert statuses == {200: LIMIT, 429: BURST - LIMIT}, (statuses, quotas)
    finally:
        for p in procs:
            p.stop()
        redis.stop()


@pytest.fixture(scope="module")
def dead_redis_url() -> str:
    # a port nobody listens on: connection refused, as after a Redis crash
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        pytest.param("closed", (503, "ratelimit.unavailable"), id="closed"),
        pytest.param("open", (200, None), id="open"),
    ],
)
def test_storage_error_policy_with_redis_down(
    tmp_path: Path, client: httpx.Client, upstream: Proc, dead_redis_url: str,
    mode: str, expected: tuple[int, str | None],
) -> None:
    (gw,) = start_many(1, policy_dir(tmp_path, mode=mode), upstream.url, dead_redis_url)
    try:
        seen_before = httpx.get(upstream.url + "/count").json()["seen"].get("/by-ip", 0)
        got = [client.get(gw.url + "/v1/by-ip", headers={"X-Forwarded-For": fresh_ip()}) for _ in range(3)]
        assert {(r.status_code, reason(r)) for r in got} == {expected}
        # `open` allows without counting: past the limit of 5 and still served
        if mode == "open":
            ip = {"X-Forwarded-For": fresh_ip()}
            assert {client.get(gw.url + "/v1/by-ip", headers=ip).status_code for _ in range(8)} == {200}
        seen = httpx.get(upstream.url + "/count").json()["seen"].get("/by-ip", 0) - seen_before
        assert seen == (0 if mode == "closed" else 11)
    finally:
        gw.stop()


# --- a Redis that stalls (DEBUG SLEEP) under three replicas ---------------------------------------

STALL_POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    trusted_proxies: ["127.0.0.1/32"]
    auth:
      jwt: {algorithms: [HS256]}
    rate_limits:
      on_storage_error: local
      replicas: 3
      brute_force: {max_failures: 10, window: "1 minute", cooldown_seconds: 60}
    routes:
      - id: stall.moving
        path: /v1/stall/moving
        methods: [GET]
        auth: none
        upstream_path: /stall
        rate_limit: {limits: "10/day", key: ip, strategy: moving-window}
      - id: stall.sliding
        path: /v1/stall/sliding
        methods: [GET]
        auth: none
        upstream_path: /stall
        rate_limit: {limits: "10/day", key: ip, strategy: sliding-window-counter}
      - id: login
        path: /v1/login
        methods: [GET]
        auth: jwt
        upstream_path: /login
"""


def test_stalled_redis_hands_out_no_fresh_allowance_on_three_replicas(
    tmp_path: Path, client: httpx.Client, upstream: Proc
) -> None:
    from tests.support.stall import StallableRedis

    redis = StallableRedis().start()
    procs = start_many(REPLICAS, str(write_policy(tmp_path, gateway=STALL_POLICY)), upstream.url, redis.url)
    try:
        client_ip, attacker = fresh_ip(), fresh_ip()
        for route in ("moving", "sliding"):
            got = [client.get(procs[i % 3].url + f"/v1/stall/{route}", headers={"X-Forwarded-For": client_ip})
                   for i in range(10)]
            assert [r.status_code for r in got] == [200] * 10, route
        bad = {"Authorization": "Bearer not.a.jwt", "X-Forwarded-For": attacker}
        fails = [client.get(procs[i % 3].url + "/v1/login", headers=bad) for i in range(10)]
        assert [r.status_code for r in fails] == [401] * 10
        for gw in procs:  # the attacker goes on: every replica refuses, and knows the block
            assert reason(client.get(gw.url + "/v1/login", headers=bad)) == "auth.too_many_failures"

        sleeper = redis.stall(3)
        jobs = [(f"/v1/stall/{route}", {"X-Forwarded-For": client_ip}) for route in ("moving", "sliding")
                for _ in range(40)] + [("/v1/login", bad)] * 40
        with ThreadPoolExecutor(max_workers=24) as pool:
            during = list(pool.map(lambda ij: client.get(procs[ij[0] % 3].url + ij[1][0], headers=ij[1][1]),
                                   enumerate(jobs)))
            valid = client.get(procs[0].url + "/v1/login",
                               headers={"Authorization": f"Bearer {token()}", "X-Forwarded-For": attacker})
        stalled_through = sleeper.is_alive()
        outcome = Counter((path, r.status_code, reason(r)) for (path, _), r in zip(jobs, during, strict=True))
        assert outcome == {
            ("/v1/stall/moving", 429, "ratelimit.exceeded"): 40,
            ("/v1/stall/sliding", 429, "ratelimit.exceeded"): 40,
            ("/v1/login", 429, "auth.too_many_failures"): 40,
        }, outcome
        # a valid token from the blocked address is served even with Redis frozen
        assert valid.status_code == 200, valid.text
        assert stalled_through or sleeper.join(10) is None
        sleeper.join(10)
    finally:
        for p in procs:
            p.stop()
        redis.cleanup()
