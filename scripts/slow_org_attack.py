"""The capacity-isolation attack, measured: one org trickles N slow request bodies, another org asks.

    .venv/bin/python scripts/slow_org_attack.py [N] [--mode trickle|stream]

Starts the bundled upstream and the gateway with the shipped policy (one worker) on free ports.
Org A opens N connections, each a PATCH /v1/agents/x declaring a 1000-byte body and sending one
byte a second (`trickle`), or N Server-Sent-Event streams on GET /v1/jobs/x/events (`stream`).
While they hold on, org B makes 10 requests; the script prints their latencies and the gateway
worker's resident memory. Figures, not assertions: the pass/fail version is tests/core/test_fairness.py.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.auth import mint_dev_token  # noqa: E402
from tests.support.gateway_proc import ROOT, TEST_JWT_SECRET, bundled_upstream, gateway  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=300)
    ap.add_argument("--mode", choices=["trickle", "stream"], default="trickle")
    args = ap.parse_args()
    b_token = mint_dev_token(TEST_JWT_SECRET, "bob", "org-b", role="admin")
    with bundled_upstream() as up, gateway(ROOT / "policies", up.url) as gw:
        pid = gw.proc.pid
        hb = {"Authorization": f"Bearer {b_token}"}
        r = httpx.get(f"{gw.url}/v1/agents?orgId=org-b", headers=hb, timeout=30)
        print(f"warm-up: {r.status_code}; gateway RSS idle {rss_mb(pid):.1f} MB")
        socks = []
        for i in range(args.n):
            tok = mint_dev_token(TEST_JWT_SECRET, f"attacker-{i}", "org-a", role="admin")
            s = socket.create_connection(("127.0.0.1", gw.port))
            if args.mode == "trickle":
                s.sendall((f"PATCH /v1/agents/agt_x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tok}\r\n"
                           "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode())
            else:
                s.sendall((f"GET /v1/jobs/job_x/events HTTP/1.1\r\nHost: gw\r\n"
                           f"Authorization: Bearer {tok}\r\nAccept: text/event-stream\r\n\r\n").encode())
            socks.append(s)
        time.sleep(3)
        lat = []
        statuses = []
        for _ in range(10):
            if args.mode == "trickle":
                for s in socks:
                    try:
                        s.send(b" ")
                    except OSError:
                        pass
            t = time.perf_counter()
            try:
                r = httpx.get(f"{gw.url}/v1/agents?orgId=org-b", headers=hb, timeout=30)
                statuses.append(r.status_code if r.status_code == 200 else f"{r.status_code} {r.json().get('reason')}")
            except httpx.HTTPError as exc:
                statuses.append(type(exc).__name__)
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.5)
        print(f"mode={args.mode} n={args.n}: org B statuses {statuses}")
        print(f"org B latency ms: median {statistics.median(lat):.1f}, max {max(lat):.1f}")
        print(f"gateway RSS under attack {rss_mb(pid):.1f} MB")
        for s in socks:
            s.close()
        time.sleep(3)  # the worker lets go of the attack's connections and buffers
        print(f"gateway RSS 3 s after the attack {rss_mb(pid):.1f} MB")


if __name__ == "__main__":
    main()
