"""Child process of `test_memory_bound`: N distinct client addresses through the in-process
limiter path and the brute-force tables; prints one JSON line with the RSS growth.

Run alone: `python -m tests.ratelimit.memory_probe 1000000 100000` (keys, max_tracked_keys).
A fresh process, so the RSS growth is this work's and nothing else's.
"""

from __future__ import annotations

import json
import sys
import time

from gateway.ratelimit import RateLimiter, RateLimitPolicy, RateLimitSettings
from gateway.ratelimit.limiter import _fixed_window_memory, identifiers
from gateway.ratelimit.memory import BoundedMemoryStorage


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main(n: int, cap: int) -> dict[str, object]:
    evicted: dict[str, int] = {}
    limiter = RateLimiter.from_settings(RateLimitSettings(max_tracked_keys=cap), None)
    limiter.on_evict = lambda store, k: evicted.__setitem__(store, evicted.get(store, 0) + k)
    policy = limiter.compile(RateLimitPolicy(limits="10/minute", key="ip", strategy="fixed-window"), "r")
    storage = limiter.backend.shared.storage
    assert isinstance(storage, BoundedMemoryStorage)
    guard = limiter.brute_force
    base = rss()
    started = time.perf_counter()
    for i in range(n):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        # What RateLimiter.hit does per request for an in-process fixed window, minus the awaits.
        _fixed_window_memory(storage, policy.items, identifiers("r", "fixed-window", policy.key, ip, None, None))
        storage.make_room()
        # What the brute-force guard keeps per address (every table is the same BoundedMap).
        guard._blocks.set(ip, 1.0)
    return {
        "keys": n, "max_tracked_keys": cap, "seconds": round(time.perf_counter() - started, 1),
        "rss_growth_bytes": rss() - base, "counters": len(storage),
        "guard_entries": len(guard._blocks),
        "evicted": evicted,
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
