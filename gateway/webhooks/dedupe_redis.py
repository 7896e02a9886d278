"""Redis backend of the webhook dedupe store: shared by all replicas (see dedupe.py for states).

Three small Lua scripts make each transition atomic and token-checked; Redis errors and timeouts
become `DedupeStoreUnavailable` (503) at this one boundary.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from redis.retry import Retry

from gateway.webhooks.dedupe import State, TokenHoldings, new_lock_token
from gateway.webhooks.errors import DedupeStoreUnavailable

# SET NX, and on failure read the value, atomically. A value equal to our own token means a
# retried call whose first reply was lost: that acquisition is ours.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'acquired' end
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return 'acquired' end
if v == 'done' then return 'done' end
return 'in_progress'
"""
_COMPLETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


class RedisDedupeStore:
    """Store shared by all replicas; keys are `gw:wh:<route>:...`; pooled, with short timeouts."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gw:wh:",
        timeout: float = 0.5,
        max_connections: int = 64,
    ) -> None:
        # Short socket timeouts and a single immediate retry: Kommo waits 2 s for an answer, so
        # a Redis that does not reply must become a quick 503, never a hang (redis-py's default
        # is 10 retries with backoff).
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._redis = Redis.from_pool(pool)
        self._prefix = prefix
        self._held = TokenHoldings()
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._complete = self._redis.register_script(_COMPLETE)
        self._release = self._redis.register_script(_RELEASE)

    async def acquire(self, key: str, in_progress_ttl: float) -> State:
        token = new_lock_token()
        try:
            state = await self._acquire(keys=[self._prefix + key], args=[token, _ms(in_progress_ttl)])
        except (RedisError, OSError):
            raise DedupeStoreUnavailable() from None
        result = state.decode() if isinstance(state, bytes) else str(state)
        if result == "acquired":
            self._held.put(key, token, in_progress_ttl)
            return "acquired"
        return "done" if result == "done" else "in_progress"

    async def complete(self, key: str, window_seconds: float) -> bool:
        return await self._if_mine(self._complete, key, [_ms(window_seconds)])

    async def release(self, key: str) -> bool:
        return await self._if_mine(self._release, key, [])

    async def ping(self) -> None:
        """For readiness checks."""
        try:
            await self._redis.ping()
        except (RedisError, OSError):
            raise DedupeStoreUnavailable() from None

    async def close(self) -> None:
        await self._redis.aclose()

    async def _if_mine(self, script: AsyncScript, key: str, extra: list[int]) -> bool:
        token = self._held.take(key)
        if token is None:
            return False
        try:
            done = await script(keys=[self._prefix + key], args=[token, *extra])
        except (RedisError, OSError):
            raise DedupeStoreUnavailable() from None
        return bool(done)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
