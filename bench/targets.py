"""What is measured: each target knows how to start its server(s) and which URL to load.

All targets get the same request shape, `GET /v1/agents?orgId=org-1` with a bearer token (the
upstream direct gets the unversioned path the gateway forwards to). Only Fastify full and the
gateway check the token; the others just carry the same bytes. The exception is the `validate`
variant pair: `POST /v1/agents` with a typical agent-create body (AGENT_BODY), once with the
shipped policy and once with a copy whose `agents.create` route says `validate: false`; the
difference of their CPU per request is what edge body validation costs. The bench upstream
answers every request with the same static JSON and stores nothing, so a few hundred thousand
creates leave no state behind (the bundled upstream_stub would keep every agent in its database).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import peers, tokens
from bench.procs import LOOPBACK, Proc, Procs, free_port

PUBLIC_PATH = "/v1/agents?orgId=org-1"
UPSTREAM_PATH = "/agents?orgId=org-1"
POST_PATH = "/v1/agents"
POST_ROUTE = "agents.create"
VALIDATE_ROUNDS = 3     # --variants validate: with/without pairs (ABBA order); the cost uses medians
# A typical agent (valid for the AgentCreate schema of policies/openapi.yaml, ~200 bytes, the body
# of tests/openapi/bench_validate.py); orgId is the tokens' org, as the route's tenant rule requires.
AGENT_BODY = json.dumps({"orgId": tokens.ORG, "name": "Support bot",
                         "description": "Answers tickets in English and Spanish", "model": "gpt-4o-mini",
                         "config": {"temperature": 0.2, "tools": ["search", "crm.lookup"], "maxTokens": 800}},
                        separators=(",", ":")).encode()


@dataclass
class Bench:
    """Everything the targets share during one run."""

    procs: Procs
    root: Path                  # the gateway checkout (holds policies/ and .venv)
    peers_dir: Path             # bench/peer_files or --peers (read-only)
    work: Path                  # .bench/ (gitignored): configs, logs, node_modules
    secret: str
    upstream_port: int = 0
    gateway_redis: bool = False
    fastify_dir: Path | None = None
    fastify_skip: str | None = None


@dataclass
class Launched:
    url: str
    procs: list[Proc] = field(default_factory=list)
    cpu_pid: int | None = None          # the process (tree) under test: CPU per request
    admin_url: str | None = None        # its /metrics: event-loop lag


@dataclass(frozen=True)
class Target:
    """One row family of the table: `kind` is upstream | nginx | floor | full | core | gateway, or a
    one-worker gateway variant: gateway-redis | gateway-nocache | gateway-noaccesslog |
    gateway-redis-noaccesslog |
    gateway-validate | gateway-novalidate (POST `body` as application/json)."""

    label: str
    kind: str
    start: Callable[[Bench], Launched]
    workers: int | None = None
    sweep: bool = False
    method: str = "GET"
    body: bytes | None = None           # sent as application/json


def _url(port: int, path: str = PUBLIC_PATH) -> str:
    return f"http://{LOOPBACK}:{port}{path}"


def upstream_direct(b: Bench) -> Launched:
    return Launched(_url(b.upstream_port, UPSTREAM_PATH))  # started once for the whole run


def nginx_proxy(b: Bench) -> Launched:
    if reason := peers.missing("nginx"):
        raise peers.Unavailable(reason)
    proc = peers.start_nginx_proxy(b.procs, b.peers_dir, b.work, b.upstream_port)
    return Launched(_url(proc.port or 0), [proc])


def _fastify(b: Bench, variant: str, extra_env: dict[str, str]) -> Proc:
    if b.fastify_dir is None:
        raise peers.Unavailable(b.fastify_skip or "Fastify peer not prepared")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "UPSTREAM": f"http://{LOOPBACK}:{b.upstream_port}",
           "NODE_ENV": "production", **extra_env}
    return b.procs.start(f"fastify-{variant}", ["node", "server.js", variant], env=env,
                         cwd=b.fastify_dir, port=port)


def core_floor(b: Bench) -> Launched:
    """`bench/corefloor.py`: uvicorn and the gateway's upstream pool with no policy, one worker."""
    port = free_port()
    python = b.root / ".venv" / "bin" / "python"
    argv = [str(python if python.exists() else sys.executable), "-m", "uvicorn", "bench.corefloor:app",
            "--host", LOOPBACK, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning", "--lifespan", "on"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["BENCH_UPSTREAM"] = f"http://{LOOPBACK}:{b.upstream_port}"
    proc = b.procs.start("core-floor", argv, env=env, cwd=b.root, port=port)
    return Launched(_url(proc.port or 0), [proc], cpu_pid=proc.popen.pid)


def fastify_floor(b: Bench) -> Launched:
    proc = _fastify(b, "floor", {})
    return Launched(_url(proc.port or 0), [proc], cpu_pid=proc.popen.pid)


def fastify_full(b: Bench) -> Launched:
    if b.fastify_dir is None:
        raise peers.Unavailable(b.fastify_skip or "Fastify peer not prepared")
    redis, redis_url = peers.start_redis(b.procs, b.work, "redis-fastify")
    try:
        proc = _fastify(b, "full", {"REDIS_URL": redis_url, "JWT_SECRET": b.secret})
    except BaseException:
        b.procs.stop(redis)
        raise
    return Launched(_url(proc.port or 0), [proc, redis], cpu_pid=proc.popen.pid)


def policy_copy(src: Path, dest: Path, *, cache_size: int | None = None,
                no_validate: tuple[str, ...] = ()) -> Path:
    """A copy of the policy directory `src` at `dest` (replaced), with the bench's edits:
    `cache_size` sets `auth.jwt.cache_size` (0: the verified-token cache off), `no_validate` names
    routes that get `validate: false`. Only the files edited are rewritten (comments dropped);
    the shipped policy is never touched. An unknown route id is an error, not a silent no-op."""
    import yaml

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    if cache_size is not None:
        doc = yaml.safe_load((dest / "gateway.yaml").read_text())
        doc["auth"]["jwt"]["cache_size"] = cache_size
        (dest / "gateway.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    if no_validate:
        routes = yaml.safe_load((dest / "routes.yaml").read_text())
        found = set()
        for route in routes["routes"]:
            if route.get("id") in no_validate:
                route["validate"] = False
                found.add(route["id"])
        if missing := sorted(set(no_validate) - found):
            raise ValueError(f"{src / 'routes.yaml'} has no route {', '.join(missing)}")
        (dest / "routes.yaml").write_text(yaml.safe_dump(routes, sort_keys=False))
    return dest


def gateway(workers: int, with_redis: bool | None = None, token_cache: bool = True,
            checkout: Path | None = None, access_log: str | None = None, validate: bool = True,
            path: str = PUBLIC_PATH, extra_env: dict[str, str] | None = None) -> Callable[[Bench], Launched]:
    """`checkout`: run the gateway code of another checkout (a before/after in one run), with
    this checkout's Python environment and that checkout's own policy. `validate=False`: the
    POST route's body validation off (`validate: false` in a policy copy). `path`: what to load.
    `extra_env`: set in the gateway's environment after everything else."""

    def policy_dir(b: Bench) -> Path:
        # Another checkout runs with its own policy: an older gateway refuses keys it does not know.
        if checkout is not None:
            return checkout / "policies"
        if token_cache and validate:
            return b.root / "policies"
        name = "policies-" + "-".join(x for x, on in (("nocache", not token_cache), ("novalidate", not validate)) if on)
        return policy_copy(b.root / "policies", b.work / name, cache_size=None if token_cache else 0,
                           no_validate=() if validate else (POST_ROUTE,))

    def start(b: Bench) -> Launched:
        started: list[Proc] = []
        # A clean GATEWAY_* environment: nothing inherited from the caller's shell changes the run.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        port, admin_port = free_port(), free_port()
        env.update({
            "GATEWAY_ENV": "development", "GATEWAY_HOST": LOOPBACK, "GATEWAY_PORT": str(port),
            "GATEWAY_ADMIN_HOST": LOOPBACK, "GATEWAY_ADMIN_PORT": str(admin_port),
            "GATEWAY_UPSTREAM_URL": f"http://{LOOPBACK}:{b.upstream_port}",
            "GATEWAY_WORKERS": str(workers),
            "GATEWAY_POLICY_DIR": str(policy_dir(b)),
            "GATEWAY_JWT_SECRET": b.secret, "GATEWAY_DRAIN_DELAY": "0", "GATEWAY_GRACE_TIMEOUT": "2",
        })
        if access_log is not None:
            env["GATEWAY_ACCESS_LOG"] = access_log
        env.update(extra_env or {})  # bench.ab --env: set last, so it can change any of the above
        if b.gateway_redis if with_redis is None else with_redis:
            redis, redis_url = peers.start_redis(b.procs, b.work, f"redis-gateway-w{workers}")
            started.append(redis)
            env["GATEWAY_REDIS_URL"] = redis_url
        python = b.root / ".venv" / "bin" / "python"
        argv = [str(python if python.exists() else sys.executable), "-m", "gateway", "serve"]
        if checkout is not None:
            # `-m gateway` from the other checkout's directory, first on the path: its code.
            env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
        try:
            proc = b.procs.start(f"gateway-w{workers}", argv, env=env, cwd=checkout or b.root, port=port)
        except BaseException:
            for p in started:
                b.procs.stop(p)
            raise
        return Launched(_url(port, path), [proc, *started], cpu_pid=proc.popen.pid,
                        admin_url=f"http://{LOOPBACK}:{admin_port}/metrics")

    return start


def _validate_pair() -> tuple[Target, Target]:
    return (Target("gateway w1 POST val", "gateway-validate", gateway(1, path=POST_PATH), workers=1,
                   method="POST", body=AGENT_BODY),
            Target("gateway w1 POST noval", "gateway-novalidate", gateway(1, validate=False, path=POST_PATH),
                   workers=1, method="POST", body=AGENT_BODY))


VARIANTS = ("redis", "nocache", "noaccesslog", "redis-noaccesslog", "validate")


def all_targets(workers: list[int], gateway_redis: bool, nginx_upstream: bool,
                variants: list[str] | None = None, baselines: list[Path] | None = None) -> list[Target]:
    suffix = " +redis" if gateway_redis else ""
    upstream = "upstream direct" if nginx_upstream else "upstream (PY FALLBACK)"
    return [
        Target(upstream, "upstream", upstream_direct),
        Target("nginx proxy_pass", "nginx", nginx_proxy),
        Target("fastify floor", "floor", fastify_floor),
        # Swept too, as the reference for the gateway's c=8/c=64 bars (a closed loop at saturation
        # puts any server's c=64 latency near 8 x its c=8 one: Little's law).
        Target("fastify full", "full", fastify_full, sweep=True),
        # The gateway's server core and upstream pool with no policy (bench/corefloor.py): the
        # distance from here to the gateway rows is what the pipeline costs.
        Target("core uvicorn+h1pool", "core", core_floor, workers=1),
        *(Target(f"gateway w{w}{suffix}", "gateway", gateway(w), workers=w, sweep=True) for w in workers),
        # One-worker variants that isolate one cost each: Redis-backed rate limits and webhook
        # state (the fair comparison with Fastify full, which limits through Redis too), and the
        # verified-token cache switched off.
        *(Target("gateway w1 +redis", "gateway-redis", gateway(1, with_redis=True), workers=1, sweep=True)
          for v in variants or [] if v == "redis"),
        *(Target("gateway w1 nocache", "gateway-nocache", gateway(1, token_cache=False), workers=1)
          for v in variants or [] if v == "nocache"),
        # The access log's cost: the same one-worker run with GATEWAY_ACCESS_LOG=off (the rows
        # above log every request to stdout, the default).
        *(Target("gateway w1 noaccesslog", "gateway-noaccesslog", gateway(1, access_log="off"), workers=1)
          for v in variants or [] if v == "noaccesslog"),
        # Both: the Redis-backed row without the access log, comparable with a --baseline checkout
        # from before the access log existed.
        *(Target("gateway w1 +redis noaccesslog", "gateway-redis-noaccesslog",
                 gateway(1, with_redis=True, access_log="off"), workers=1)
          for v in variants or [] if v == "redis-noaccesslog"),
        # Edge body validation's cost: POST /v1/agents with a typical body, with the shipped policy
        # and with `validate: false` on that route, VALIDATE_ROUNDS pairs in A-B, B-A, A-B order
        # (the difference is well under 1 % of the CPU per request; one pair on a busy machine is
        # noise, and a fixed order adds the machine's drift to one side).
        *(t for v in variants or [] if v == "validate" for i in range(VALIDATE_ROUNDS)
          for t in (_validate_pair() if i % 2 == 0 else _validate_pair()[::-1])),
        # --baseline DIR[,DIR...]: the same Redis-backed run with other checkouts' code (before/after),
        # each labelled with its directory's name.
        *(Target(f"base {d.name} w1 +redis" if len(baselines or []) > 1 else "baseline w1 +redis",
                 "gateway-baseline" + (f"-{i}" if i else ""), gateway(1, with_redis=True, checkout=d),
                 workers=1, sweep=True)
          for i, d in enumerate(baselines or [])),
    ]


def probe(url: str, token: str | None, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    """One request before the load, to show *why* a target answers non-2xx (e.g. 401 vs 429).

    With `token=None` it shows whether the target enforces authentication at all: a 2xx there
    means the figures are of a proxy that is not yet doing the policy's work.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    # The URL is built in this module from LOOPBACK and a port: no file:// or foreign host.
    req = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return resp.status, resp.read(200).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(300).decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)
