"""`python -m bench.ab DIR [DIR...]`: the one-worker, Redis-backed gateway of several checkouts,
measured in alternation (A B C, A B C, ...) so that a noisy machine's drift hits every side alike.

For a before/after of a hot-path change: `git worktree add /tmp/before <rev>`, then
`python -m bench.ab /tmp/before .`. Each round starts every checkout's gateway afresh (its own code
and policy, this checkout's Python environment, a private Redis, the nginx upstream of `make bench`),
warms it up, loads it with `wrk -t1 -cC -dD` and reads its CPU (user + system) per request from
/proc: a figure that moves much less with the machine's load than req/s does. The last lines give
the median of each side and each side's ratio to the first. `--env N:NAME=VALUE` sets a variable in
side N's gateway (`--env 2:GATEWAY_ACCESS_LOG=off`), `--env NAME=VALUE` in every side's.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import gwstats, peers, targets, wrk
from bench.procs import StartError
from bench.run import ROOT, prepare, write_tokens

_ENV = re.compile(r"^(?:(\d+):)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


@dataclass
class Sample:
    rps: float
    cpu_us: float
    p99_ms: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("checkouts", nargs="+", type=Path, help="gateway checkouts (a directory with gateway/)")
    p.add_argument("-n", "--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("-d", "--duration", type=int, default=6, help="seconds measured per run (default 6)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of discarded load first (default 2)")
    p.add_argument("-c", "--conns", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--env", action="append", default=[], metavar="[N:]NAME=VALUE",
                   help="extra environment for side N (1-based) or, without N:, for every side")
    p.add_argument("--peers", type=Path, default=ROOT / "bench" / "peer_files")
    args = p.parse_args(argv)
    for d in args.checkouts:
        if not (d / "gateway" / "__main__.py").is_file():
            p.error(f"{d} is not a gateway checkout (no gateway/__main__.py)")
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    args.side_env = [{} for _ in args.checkouts]
    for item in args.env:
        m = _ENV.match(item)
        if m is None:
            p.error(f"--env {item!r}: expected [N:]NAME=VALUE")
        side, name, value = m.group(1), m.group(2), m.group(3)
        if side is not None and not 1 <= int(side) <= len(args.checkouts):
            p.error(f"--env {item!r}: there is no side {side}")
        for i in ([int(side) - 1] if side is not None else range(len(args.checkouts))):
            args.side_env[i][name] = value
    return args


def summary(labels: list[str], samples: list[list[Sample]]) -> list[str]:
    """Median req/s, CPU per request and p99 per side, and each side's ratio to the first."""
    out = []
    base = statistics.median(s.cpu_us for s in samples[0]) if samples[0] else None
    for label, side in zip(labels, samples, strict=True):
        if not side:
            out.append(f"{label}: no run completed")
            continue
        cpu = statistics.median(s.cpu_us for s in side)
        ratio = f"  cpu x {cpu / base:.3f} of the first" if base else ""
        out.append(f"{label}: median {statistics.median(s.rps for s in side):,.0f} req/s, "
                   f"{cpu:.0f} us CPU/req, p99 {statistics.median(s.p99_ms for s in side):.2f} ms "
                   f"over {len(side)} run(s){ratio}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    b = prepare(args.peers)
    if b is None:
        return 2
    procs = b.procs
    labels = [f"{i + 1}:{d}" for i, d in enumerate(args.checkouts)]
    samples: list[list[Sample]] = [[] for _ in args.checkouts]
    try:
        _, script, tokens_file = write_tokens(b, 5000)
        upstream, _ = peers.start_upstream(procs, b.peers_dir, b.work)
        b.upstream_port = upstream.port or 0
        for rnd in range(args.rounds):
            for i, checkout in enumerate(args.checkouts):
                try:
                    launched = targets.gateway(1, with_redis=True, checkout=checkout.resolve(),
                                               extra_env=args.side_env[i])(b)
                except StartError as exc:
                    print(f"round {rnd + 1} {labels[i]}: did not start: {str(exc).splitlines()[0]}", flush=True)
                    continue
                try:
                    if args.warmup > 0:
                        wrk.run(launched.url, conns=args.conns, duration=args.warmup, script=script,
                                tokens_file=tokens_file)
                    pid = launched.cpu_pid or 0
                    before = gwstats.tree_cpu_seconds(pid)
                    res = wrk.run(launched.url, conns=args.conns, duration=args.duration, script=script,
                                  tokens_file=tokens_file)
                    cpu_us = (gwstats.tree_cpu_seconds(pid) - before) / max(res.requests, 1) * 1e6
                    if res.non_2xx:
                        print(f"round {rnd + 1} {labels[i]}: {res.non_2xx} non-2xx answers: not counted", flush=True)
                        continue
                    samples[i].append(Sample(res.rps, cpu_us, res.p99_ms))
                    print(f"round {rnd + 1} {labels[i]}: {res.rps:,.0f} req/s, {cpu_us:.0f} us CPU/req, "
                          f"p99 {res.p99_ms:.2f} ms", flush=True)
                except wrk.WrkError as exc:
                    print(f"round {rnd + 1} {labels[i]}: wrk failed: {exc}", flush=True)
                finally:
                    for proc in launched.procs:
                        procs.stop(proc)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process started", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
    print()
    for line in summary(labels, samples):
        print(line)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average now {load} on {os.cpu_count()} CPUs")
    return 0 if all(samples) else 1


if __name__ == "__main__":
    sys.exit(main())
