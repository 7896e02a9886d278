"""`make bench`: the gateway side by side with nginx and the Fastify peer, in one run.

Each target is started, warmed up, measured with `wrk -t1 -cC -dD --latency` and stopped before the
next, so no two proxies share the CPU; only the tiny upstream runs throughout. The gateway
(in-process limits, and with Redis-backed limits as Fastify full has) is also measured across the
concurrency sweep, and so is Fastify full, as the reference for the sweep bars. For every gateway
run the table adds its CPU per request and its event-loop lag. The row `core uvicorn+h1pool`
(`bench/corefloor.py`) is the gateway's server core and upstream pool with no policy; the line
under the table gives what the pipeline adds to it. Then the bars (PASS/FAIL) and, with `--json
FILE`, the raw figures. `--runs N` measures every target N times, round by round (a noisy machine's
drift then hits every target alike), and reports the medians, with each bar's ratio in every run.
Every process started here is stopped on exit, Ctrl-C included. A full run takes about 3 minutes
per round; `--quick` about 1.

The peers (nginx configs, the Fastify peer) are read from bench/peer_files/ unless `--peers DIR`
or BENCH_PEERS names another copy with the same layout (nginx/*.conf, fastify/server.js).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import gwstats, peers, report, targets, tokens, wrk
from bench.procs import Procs, StartError, raise_on_sigterm

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("upstream", "nginx", "floor", "full", "core", "gateway")


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=8, help="seconds per measured run (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of discarded load first (default 2)")
    p.add_argument("-c", "--conns", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--workers", type=_ints, default=[1, 2], help="gateway worker counts (default 1,2)")
    p.add_argument("--sweep", type=_ints, default=[8, 64], help="gateway concurrency sweep (default 8,64)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 s runs, 1 s warm-up")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the raw figures to FILE")
    p.add_argument("--only", type=lambda s: s.split(","), default=list(KINDS),
                   help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--tokens", type=int, default=5000,
                   help="distinct users to cycle through, so per-user rate limits never bind (default 5000)")
    p.add_argument("--variants", type=lambda v: [x for x in v.split(",") if x], default=["redis"],
                   help="extra one-worker gateway runs: redis (Redis-backed limits, the default), "
                        "nocache (no token cache), noaccesslog (GATEWAY_ACCESS_LOG=off: the access "
                        "log's cost), redis-noaccesslog (both), validate (POST /v1/agents with and "
                        "without body validation: its cost); '' for none")
    p.add_argument("--gateway-redis", action="store_true",
                   help="give the gateway a private Redis (GATEWAY_REDIS_URL), as Fastify full has")
    p.add_argument("--peers", type=Path, default=Path(os.environ.get("BENCH_PEERS") or ROOT / "bench" / "peer_files"),
                   help="peer configs: nginx/*.conf and fastify/ (default $BENCH_PEERS, else bench/peer_files)")
    p.add_argument("--baseline", type=lambda v: [Path(x) for x in v.split(",") if x], default=[],
                   metavar="DIR[,DIR...]",
                   help="also run the Redis-backed one-worker gateway from other checkouts (e.g. "
                        "`git worktree add /tmp/base main`): before/after in one run")
    p.add_argument("--runs", type=int, default=1,
                   help="measure every target this many times, round by round, and report the medians "
                        "(default 1)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a bar fails (on the medians)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 2, 1
    for d in args.baseline:
        if not (d / "gateway" / "__main__.py").is_file():
            p.error(f"--baseline: {d} is not a gateway checkout (no gateway/__main__.py)")
    if not args.peers.is_dir():
        p.error(f"--peers: no directory {args.peers} (it holds nginx/*.conf and fastify/server.js)")
    if bad := sorted(set(args.variants) - set(targets.VARIANTS)):
        p.error(f"--variants: unknown {', '.join(bad)} (known: {', '.join(targets.VARIANTS)})")
    unknown = set(args.only) - set(KINDS)
    if unknown:
        p.error(f"--only: unknown target kind(s) {sorted(unknown)}")
    if len(args.sweep) < 2:
        p.error("--sweep needs at least two concurrency levels")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def measure(b: targets.Bench, t: targets.Target, args: argparse.Namespace, script: Path,
            tokens_file: Path, token: str, out: report.Report, run: str = "") -> None:
    levels = [args.conns, *(c for c in args.sweep if c != args.conns)] if t.sweep else [args.conns]
    print(f"== {t.label}" + (f" ({t.method} {len(t.body)}-byte JSON body)" if t.body else "") + run, flush=True)
    body_file = None
    if t.body is not None:
        body_file = script.parent / f"body-{t.kind}.json"
        body_file.write_bytes(t.body)
    try:
        launched = t.start(b)
    except (peers.Unavailable, StartError) as exc:
        print(f"   skipped: {exc}", flush=True)
        out.rows.append(report.Row(t.label, t.kind, args.conns, t.workers,
                                   skipped=str(exc).splitlines()[0]))
        return
    try:
        status, body = targets.probe(launched.url, token, t.method, t.body)
        anon = (targets.probe(launched.url, None, t.method, t.body)[0]
                if t.kind == "full" or report.is_gateway(t.kind) else None)
        print(f"   {launched.url} -> probe HTTP {status}"
              + (f", without a token HTTP {anon}" if anon is not None else ""), flush=True)
        if args.warmup > 0:
            wrk.run(launched.url, conns=args.conns, duration=args.warmup, script=script,
                    tokens_file=tokens_file, method=t.method, body_file=body_file)
        for c in levels:
            pid = launched.cpu_pid
            lag_before = gwstats.scrape_lag(launched.admin_url)
            cpu_before = gwstats.tree_cpu_seconds(pid) if pid else 0.0
            try:
                res = wrk.run(launched.url, conns=c, duration=args.duration, script=script,
                              tokens_file=tokens_file, method=t.method, body_file=body_file)
            except wrk.WrkError as exc:
                print(f"   c={c}: skipped: {exc}", flush=True)
                out.rows.append(report.Row(t.label, t.kind, c, t.workers, skipped=f"wrk failed: {exc}"))
                continue
            cpu_us = ((gwstats.tree_cpu_seconds(pid) - cpu_before) / res.requests * 1e6
                      if pid and res.requests else None)
            lag = gwstats.lag_between(lag_before, gwstats.scrape_lag(launched.admin_url))
            row = report.Row(t.label, t.kind, c, t.workers, res, status, body, anon, cpu_us=cpu_us, lag=lag)
            out.rows.append(row)
            flag = "  <-- ERRORS" if row.flagged else ""
            extra = f"  cpu {cpu_us:,.0f} us/req" if cpu_us is not None else ""
            if lag is not None:
                extra += f"  loop lag p99 {lag.p99_ms:.1f} ms p99.9 {lag.p999_ms:.1f} ms"
            print(f"   c={c}: {res.rps:,.0f} req/s  p50 {res.p50_ms:.2f} p90 {res.p90_ms:.2f} "
                  f"p99 {res.p99_ms:.2f} p99.9 {res.p999_ms:.2f} ms  non-2xx {res.non_2xx}{extra}{flag}",
                  flush=True)
    except wrk.WrkError as exc:
        print(f"   skipped: warm-up failed: {exc}", flush=True)
        out.rows.append(report.Row(t.label, t.kind, args.conns, t.workers, skipped=f"wrk failed: {exc}"))
    finally:
        for proc in launched.procs:
            b.procs.stop(proc)


def in_process_validation_cost() -> str:
    """The same body's parse and validation timed in one process (`tests/openapi/bench_validate.py`):
    ~1 % of a request's CPU, below what one end-to-end pair can resolve on a shared machine."""
    python = ROOT / ".venv" / "bin" / "python"
    argv = [str(python if python.exists() else sys.executable), "-m", "tests.openapi.bench_validate"]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return "in process: python -m tests.openapi.bench_validate did not finish in 120 s"
    if done.returncode != 0:
        return f"in process: python -m tests.openapi.bench_validate failed: {done.stderr.strip()[-300:]}"
    keep = [line for line in done.stdout.splitlines()
            if line.startswith(("body:", "strict parse", "jsonschema-rs valid", "parse + validate"))]
    head = "in process (python -m tests.openapi.bench_validate: an agent body of the same shape, same schema):"
    return "\n".join([head, *(f"  {line}" for line in keep)])


def prepare(peers_dir: Path, gateway_redis: bool = False) -> targets.Bench | None:
    """What every bench run sets up first: wrk present (else None, after saying why), the work
    directory `.bench/` with its process registry (all stopped on SIGTERM), the shared Bench."""
    if reason := peers.missing("wrk"):
        print(f"skipped: {reason}; nothing can be measured", file=sys.stderr)
        return None
    work = ROOT / ".bench"
    procs = Procs(work / "logs")
    raise_on_sigterm()
    return targets.Bench(procs, ROOT, peers_dir.resolve(), work, tokens.BENCH_SECRET, gateway_redis=gateway_redis)


def write_tokens(b: targets.Bench, count: int) -> tuple[list[str], Path, Path]:
    """`count` users' tokens, and the wrk script and tokens file that cycle through them."""
    minted = tokens.mint(count)
    script, tokens_file = wrk.write_script(b.work, minted)
    return minted, script, tokens_file


def main(argv: list[str] | None = None) -> int:
    began = time.monotonic()
    args = parse_args(argv)
    b = prepare(args.peers, args.gateway_redis)
    if b is None:
        return 2
    work, procs = b.work, b.procs
    rounds: list[report.Report] = []
    try:
        minted, script, tokens_file = write_tokens(b, args.tokens)
        if {"floor", "full"} & set(args.only):
            try:
                b.fastify_dir = peers.prepare_fastify(b.peers_dir, work)
            except peers.Unavailable as exc:
                b.fastify_skip = str(exc)
        upstream, comparable = peers.start_upstream(procs, b.peers_dir, work)
        b.upstream_port = upstream.port or 0
        print(f"upstream: {'nginx' if comparable else 'PYTHON FALLBACK (nginx absent)'} on port "
              f"{b.upstream_port}; wrk -t1 -c{args.conns} -d{args.duration}s, warm-up {args.warmup}s, "
              f"{args.tokens} users; logs in {procs.log_dir}", flush=True)
        for n in range(1, args.runs + 1):
            rounds.append(report.Report(args.conns, args.duration, comparable))
            run = f"  (run {n} of {args.runs})" if args.runs > 1 else ""
            for t in targets.all_targets(args.workers, args.gateway_redis, comparable, args.variants,
                                         [d.resolve() for d in args.baseline]):
                if t.kind.split("-")[0] in args.only:
                    measure(b, t, args, script, tokens_file, minted[0], rounds[-1], run)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process started", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
    out = report.median_report(rounds)
    print()
    print(out.table(args.sweep))
    for line in (out.pipeline_cost(), out.cpu_versus_peer()):
        if line is not None:
            print(line)
    if (cost := out.validation_cost()) is not None:
        print(cost)
        print(in_process_validation_cost())
    print()
    bars = out.bars(args.sweep)
    for bar in bars:
        print(f"{bar.verdict:4}  {bar.name}: {bar.detail}")
    if len(rounds) > 1:
        print(f"\neach bar in each run (run 1 | ... | run {len(rounds)}):")
        print("\n".join(report.bars_by_run(rounds, args.sweep)))
    if args.json:
        out.write_json(args.json, args.sweep, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                                                "argv": sys.argv[1:]},
                       [[r.to_json() for r in rep.rows] for rep in rounds] if len(rounds) > 1 else None)
        print(f"\nraw figures: {args.json}")
    print(f"\nbench wall time: {time.monotonic() - began:.0f} s; load average now "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
          "(figures from a busy machine are not comparable)")
    return 1 if args.strict and any(bar.verdict == "FAIL" for bar in bars) else 0


if __name__ == "__main__":
    sys.exit(main())
