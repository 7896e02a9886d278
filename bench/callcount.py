"""Python-level calls per request of the one-worker gateway with Redis-backed limits:
`python -m bench.callcount [--seconds 5] [--top 30]`.

The gateway runs in-process under cProfile twice: once idle (start-up and shutdown only) and once
under wrk (the bench's request, 5,000 users, c=32). The idle counts are subtracted, so what is left
is the load's; divided by the requests wrk completed, it is calls per request. A coroutine counts
one call per resume. Times under cProfile are inflated several times and only ranked, not quoted.
The counts do not depend on the CPU's speed, only a little on how requests batch (Redis flushes
shared by concurrent requests, loop turns): two runs on a busy machine gave 673 and 699 a request.
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

from bench import tokens, wrk
from bench.procs import LOOPBACK, Procs, free_port

ROOT = Path(__file__).resolve().parents[1]
Key = tuple[str, int, str]


def _gateway_env(upstream: int, redis: int, port: int, admin: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({
        "GATEWAY_ENV": "development", "GATEWAY_HOST": LOOPBACK, "GATEWAY_PORT": str(port),
        "GATEWAY_ADMIN_HOST": LOOPBACK, "GATEWAY_ADMIN_PORT": str(admin),
        "GATEWAY_UPSTREAM_URL": f"http://{LOOPBACK}:{upstream}", "GATEWAY_WORKERS": "1",
        "GATEWAY_POLICY_DIR": str(ROOT / "policies"), "GATEWAY_JWT_SECRET": tokens.BENCH_SECRET,
        "GATEWAY_DRAIN_DELAY": "0", "GATEWAY_GRACE_TIMEOUT": "2",
        "GATEWAY_REDIS_URL": f"redis://{LOOPBACK}:{redis}/0", "PYTHONPATH": str(ROOT),
    })
    return env


def _profile(procs: Procs, work: Path, name: str, upstream: int, redis: int,
             seconds: int | None) -> tuple[dict[Key, tuple[int, float]], int]:
    """(function -> (calls, own seconds), requests completed) of one profiled gateway run."""
    port, admin = free_port(), free_port()
    out = work / f"{name}.prof"
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "gateway", "serve"]
    gw = procs.start(f"gateway-{name}", argv, env=_gateway_env(upstream, redis, port, admin), cwd=ROOT,
                     port=port, ready_timeout=60)
    done = 0
    if seconds:
        script, token_file = wrk.write_script(work, tokens.mint(5000))
        url = f"http://{LOOPBACK}:{port}/v1/agents?orgId={tokens.ORG}"
        for duration in (2, seconds):  # the first fills the verified-token cache
            result = wrk.run(url, conns=32, duration=duration, script=script, tokens_file=token_file)
            if result.errors:
                raise SystemExit(f"callcount: {result.errors} failed requests; see {gw.log}")
            done += result.requests
    else:
        time.sleep(2)
    procs.stop(gw, grace=30)  # SIGTERM: the gateway drains and exits, cProfile writes its file
    if not out.exists():
        raise SystemExit(f"callcount: no profile written; see {gw.log}")
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    return {k: (v[1], v[2]) for k, v in stats.items()}, done


def per_request(idle: dict[Key, tuple[int, float]], loaded: dict[Key, tuple[int, float]],
                requests: int) -> dict[Key, tuple[float, float]]:
    """function -> (calls, own µs) per request: the loaded run less the idle one, for the functions
    the load called more often than start-up and shutdown alone did."""
    if requests <= 0:
        raise ValueError("no requests completed")
    per: dict[Key, tuple[float, float]] = {}
    for key, (calls, own) in loaded.items():
        base_calls, base_own = idle.get(key, (0, 0.0))
        if calls > base_calls:
            per[key] = ((calls - base_calls) / requests, (own - base_own) / requests * 1e6)
    return per


def _name(key: Key) -> str:
    path, line, func = key
    for prefix in (str(ROOT) + "/", sys.prefix + "/"):
        path = path.replace(prefix, "")
    return func if path == "~" else f"{path}:{line} {func}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.callcount", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=5, help="measured wrk run (after a 2 s warm-up)")
    p.add_argument("--top", type=int, default=30, help="rows of each table")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="callcount-"))
    procs = Procs(work / "logs")
    try:
        upstream, redis = free_port(), free_port()
        procs.start("upstream", [sys.executable, "-m", "bench.upstream", str(upstream)], cwd=ROOT, port=upstream)
        procs.start("redis", ["redis-server", "--port", str(redis), "--bind", LOOPBACK, "--save", "",
                              "--appendonly", "no"], port=redis)
        idle, _ = _profile(procs, work, "idle", upstream, redis, None)
        loaded, requests = _profile(procs, work, "loaded", upstream, redis, args.seconds)
    finally:
        procs.stop_all()
    per = per_request(idle, loaded, requests)
    total_calls = sum(c for c, _ in per.values())
    total_own = sum(t for _, t in per.values())
    print(f"{requests:,} requests; {total_calls:,.0f} Python-level calls per request "
          f"(a coroutine resume counts as one); {total_own:,.0f} µs per request under cProfile")
    for title, order in (("most calls per request", 0), ("most own time per request (cProfile)", 1)):
        print(f"\n{title}:\n{'calls':>8} {'own µs':>8}  function")
        for key, (each, own_us) in sorted(per.items(), key=lambda kv: -kv[1][order])[:args.top]:
            print(f"{each:8.2f} {own_us:8.2f}  {_name(key)}")
    print(f"\nprofiles and logs: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
