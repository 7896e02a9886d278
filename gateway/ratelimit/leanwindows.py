"""Moving-window and sliding-window counters on Redis in ONE round trip, over the lean RESP client.

`limits`' own strategies do a hit in two round trips through redis-py (~100 µs of client CPU
each): one script to acquire an entry, a second to read the window for the RateLimit headers.
`LeanWindows` runs both steps in one server-side script, called with EVALSHA (EVAL once when
Redis answers NOSCRIPT, e.g. after a restart), and remembers what the script returned for the
read that the strategy makes right after the hit. It is a `limits` async Storage, so the unchanged
`MovingWindowRateLimiter` / `SlidingWindowCounterRateLimiter` do the arithmetic on top of it:
same keys (with the `LIMITS:` prefix), same Redis types, same scripts, same semantics.

The remembered read is valid only until the caller yields to the event loop: it is consumed by
a read of the same key in the same synchronous step (as `hit` then `get_window_stats` run) and
dropped by a `call_soon` callback otherwise, so no other request can see it.

Counters other than windows (`incr`, `get`, `get_expiry`, ...) go to the redis-py storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from limits.aio.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage

from gateway.ratelimit.resp import RespClient, RespConnectionError, RespError

# limits' acquire_moving_window.lua, then moving_window.lua (binary search for the oldest entry
# inside the window), in one script. ARGV: timestamp, limit, expiry, amount (0: read only).
MOVING_WINDOW = """
local key = KEYS[1]
local timestamp = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local expiry = tonumber(ARGV[3])
local amount = tonumber(ARGV[4])

local function acquire()
    if amount > limit then
        return false
    end
    local entry = redis.call('lindex', key, limit - amount)
    if entry and tonumber(entry) >= timestamp - expiry then
        return false
    end
    local entries = {}
    for i = 1, amount do
        entries[i] = timestamp
    end
    for i = 1, #entries, 5000 do
        redis.call('lpush', key, unpack(entries, i, math.min(i + 4999, #entries)))
    end
    redis.call('ltrim', key, 0, limit - 1)
    redis.call('expire', key, expiry)
    return true
end

local acquired = 0
if amount > 0 and acquire() then
    acquired = 1
end

local target = timestamp - expiry
local low, high, index = 0, limit - 1, nil
while low <= high do
    local mid = math.floor((low + high) / 2)
    local val = tonumber(redis.call('lindex', key, mid))
    if val and val >= target then
        index = mid
        low = mid + 1
    else
        high = mid - 1
    end
end
if index then
    return {acquired, tostring(tonumber(redis.call('lindex', key, index))), index + 1}
end
return {acquired}
"""

# limits' acquire_sliding_window.lua, then sliding_window.lua, in one script (milliseconds).
# KEYS: previous window, current window. ARGV: limit, expiry (s), amount (0: read only).
SLIDING_WINDOW = """
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2]) * 1000
local amount = tonumber(ARGV[3])

local function acquire()
    if amount > limit then
        return false
    end
    local current_ttl = tonumber(redis.call('pttl', KEYS[2]))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', KEYS[2], KEYS[1])
        redis.call('set', KEYS[2], 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', KEYS[1])) or 0
    local previous_ttl = tonumber(redis.call('pttl', KEYS[1])) or 0
    local current_count = tonumber(redis.call('get', KEYS[2])) or 0
    current_ttl = tonumber(redis.call('pttl', KEYS[2])) or 0
    if previous_ttl <= 0 then
        previous_ttl = 0
    end
    if current_ttl <= 0 then
        current_ttl = 0
    end
    local weighted_count = math.floor(previous_count * previous_ttl / expiry) + current_count
    if (weighted_count + amount) > limit then
        return false
    end
    if redis.call('exists', KEYS[2]) == 1 then
        redis.call('incrby', KEYS[2], amount)
    else
        redis.call('set', KEYS[2], amount, 'PX', expiry * 2)
    end
    return true
end

local acquired = 0
if amount > 0 and acquire() then
    acquired = 1
end

local previous_count = redis.call('get', KEYS[1])
local previous_ttl = redis.call('pttl', KEYS[1])
local current_count = redis.call('get', KEYS[2])
local current_ttl = redis.call('pttl', KEYS[2])
if current_ttl > 0 and current_ttl < expiry then
    redis.call('rename', KEYS[2], KEYS[1])
    redis.call('set', KEYS[2], 0, 'PX', current_ttl + expiry)
    previous_count = redis.call('get', KEYS[1])
    previous_ttl = redis.call('pttl', KEYS[1])
    current_count = redis.call('get', KEYS[2])
    current_ttl = redis.call('pttl', KEYS[2])
end
return {acquired, previous_count, previous_ttl, current_count, current_ttl}
"""


class Script:
    """A Lua script run with EVALSHA, falling back to EVAL (which caches it) on NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()

    async def __call__(self, client: RespClient, keys: list[bytes], args: list[bytes | int]) -> Any:
        tail = (len(keys), *keys, *args)
        reply = (await client.execute([(b"EVALSHA", self.sha, *tail)], transaction=False))[0]
        if isinstance(reply, RespError) and str(reply).startswith("NOSCRIPT"):
            reply = (await client.execute([(b"EVAL", self.source, *tail)], transaction=False))[0]
        if isinstance(reply, RespError):
            raise reply
        return reply


_MOVING, _SLIDING = Script(MOVING_WINDOW), Script(SLIDING_WINDOW)
SlidingStats = tuple[int, float, int, float]  # previous count, its TTL (s), current count, its TTL


def _float(value: float) -> bytes:
    return repr(value).encode()  # as redis-py encodes a float argument


class LeanWindows(Storage, MovingWindowSupport, SlidingWindowCounterSupport):
    """`limits` Storage whose window operations take one lean round trip; see the module docstring."""

    STORAGE_SCHEME = None  # not selectable by URI: built by the backend next to a RedisStorage

    def __init__(self, client: RespClient, redis: Any) -> None:
        super().__init__(wrap_exceptions=True)
        self.client = client
        self.redis = redis  # limits' RedisStorage: prefix, and everything that is not a window
        self._prefix = redis.bridge.prefixed_key
        self._memo: tuple[tuple[Any, ...], Any] | None = None

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (RespError, RespConnectionError, TimeoutError, *_as_tuple(self.redis.base_exceptions))

    # -- the remembered read (valid within one synchronous step of the caller) --

    def _remember(self, key: tuple[Any, ...], value: Any) -> None:
        memo = self._memo = (key, value)
        asyncio.get_running_loop().call_soon(self._forget, memo)

    def _forget(self, memo: tuple[tuple[Any, ...], Any]) -> None:
        if self._memo is memo:
            self._memo = None

    def _recall(self, key: tuple[Any, ...]) -> Any:
        memo, self._memo = self._memo, None
        return memo[1] if memo is not None and memo[0] == key else None

    # -- moving window --

    async def _moving(self, key: str, limit: int, expiry: int, amount: int) -> tuple[bool, tuple[float, int]]:
        now = time.time()
        reply = await _MOVING(self.client, [self._prefix(key).encode()],
                              [_float(now), limit, expiry, amount])
        window = (float(reply[1]), int(reply[2])) if len(reply) == 3 else (now, 0)
        return bool(reply[0]), window

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        acquired, window = await self._moving(key, limit, expiry, amount)
        self._remember(("moving", key, limit, expiry), window)
        return acquired

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        window = self._recall(("moving", key, limit, expiry))
        if window is None:
            window = (await self._moving(key, limit, expiry, 0))[1]
        return window  # type: ignore[no-any-return]

    # -- sliding window counter --

    async def _sliding(self, key: str, limit: int, expiry: int, amount: int) -> tuple[bool, SlidingStats]:
        current = self.redis._current_window_key(key)
        previous = self.redis._previous_window_key(key)
        reply = await _SLIDING(self.client, [self._prefix(previous).encode(), self._prefix(current).encode()],
                               [limit, expiry, amount])
        _, prev_count, prev_ttl, cur_count, cur_ttl = reply
        cur_ttl = max(0, float(cur_ttl or 0))
        if cur_ttl and cur_ttl % (expiry * 1000) == 0:
            # Read in the millisecond the window's key was made (Redis freezes its clock for a
            # script, so a burst of hits in one ms all see it): `limits` computes the reset as
            # now + ttl % expiry, i.e. *now*, and a spent limit would look reset to the local
            # fallback's seeding (tests/ratelimit/test_stalled_redis.py). One ms less is the truth.
            cur_ttl -= 1
        window = (int(prev_count or 0), max(0, float(prev_ttl or 0)) / 1000, int(cur_count or 0), cur_ttl / 1000)
        return bool(reply[0]), window

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        acquired, window = await self._sliding(key, limit, expiry, amount)
        self._remember(("sliding", key, expiry), window)
        return acquired

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        window = self._recall(("sliding", key, expiry))
        if window is None:
            # limit only matters to acquire; 0 entries are acquired here
            window = (await self._sliding(key, 0, expiry, 0))[1]
        return window  # type: ignore[no-any-return]

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        await self.redis.clear_sliding_window(key, expiry)

    # -- everything else: the redis-py storage --

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return await self.redis.incr(key, expiry, amount)  # type: ignore[no-any-return]

    async def get(self, key: str) -> int:
        return await self.redis.get(key)  # type: ignore[no-any-return]

    async def get_expiry(self, key: str) -> float:
        return await self.redis.get_expiry(key)  # type: ignore[no-any-return]

    async def check(self) -> bool:
        return await self.redis.check() and await self.client.ping()  # type: ignore[no-any-return]

    async def reset(self) -> int | None:
        return await self.redis.reset()  # type: ignore[no-any-return]

    async def clear(self, key: str) -> None:
        await self.redis.clear(key)


def _as_tuple(exc: type[Exception] | tuple[type[Exception], ...]) -> tuple[type[Exception], ...]:
    return exc if isinstance(exc, tuple) else (exc,)
