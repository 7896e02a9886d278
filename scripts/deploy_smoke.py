"""Smoke test of the compose stack, through its load balancer only (run by scripts/deploy-test.sh).

Each step names what it proves; the first failure prints `FAILED step: <name>: <why>`, writes the
step name to --failed-step-file and exits 1. Steps, in order:

  token            a token minted with the deployment's JWT secret is accepted; a forged one is not
  create           an agent is created in org A and read back
  cross-org        org B cannot read org A's agent, nor list org A (tenant binding)
  database         on PostgreSQL: the agent is in the database, and the app role with no org set
                   sees no rows (row-level security forced); on SQLite this step says so and passes
  client-address   the gateways audit the client's address, not the load balancer's (trusted proxy)
  rate-limit       a 2/minute limit holds exactly across both replicas (shared Redis counters)
  webhook          a signed Kommo Chats webhook is accepted; its replays are acknowledged as
                   duplicates and never forwarded again, whichever replica gets them; a bad
                   signature is refused
  prometheus       Prometheus scraped both replicas, and both served the rate-limited burst
  replica-stop     gateway-1 stopped (SIGTERM, drain) under light load: zero failed requests, it
                   exits 0, the other replica carries on
  audit-verify     `gateway audit verify` is clean on both replicas' audit volumes

Only 127.0.0.1 is contacted (the published ports); containers are driven with docker compose.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.auth import mint_dev_token

LB_ADDRESS = "172.28.0.10"  # deploy/compose.yaml networks.edge: the LB's fixed address


class StepFailed(Exception):
    pass


def check(cond: object, why: str) -> None:
    if not cond:
        raise StepFailed(why)


def rid() -> str:
    return "smoke-" + uuid.uuid4().hex[:20]


def problem_reason(r: httpx.Response) -> str | None:
    if not r.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    return str(r.json().get("reason"))


def brief(r: httpx.Response) -> str:
    return f"{r.status_code} {r.text[:200]!r}"


class Smoke:
    def __init__(self, args: argparse.Namespace) -> None:
        self.lb = args.lb.rstrip("/")
        self.prom = args.prometheus.rstrip("/")
        self.env = dict(line.split("=", 1) for line in Path(args.env_file).read_text().splitlines()
                        if "=" in line and not line.startswith("#"))
        self.compose = [part for part in os.environ["DEPLOY_COMPOSE"].splitlines() if part]
        self.project = args.project
        self.http = httpx.Client(base_url=self.lb, timeout=30)
        self.org_a, self.org_b = f"org-a-{uuid.uuid4().hex[:8]}", f"org-b-{uuid.uuid4().hex[:8]}"
        self.ids: dict[str, str] = {}
        self.sent_ids: list[str] = []

    # --- helpers ---------------------------------------------------------------------------------

    def token(self, org: str, role: str = "admin", sub: str | None = None) -> str:
        return mint_dev_token(self.env["GATEWAY_JWT_SECRET"], sub or f"smoke-{org}-{role}", org, role=role,
                              audience="authenticated")

    def req(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        headers.setdefault("X-Request-ID", rid())
        self.sent_ids.append(headers["X-Request-ID"])
        return self.http.request(method, path, headers=headers, **kw)

    def dc(self, *args: str, timeout: float = 180, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.compose, *args], capture_output=True, text=True, timeout=timeout)
        if check_rc and proc.returncode != 0:
            raise StepFailed(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc

    def audit_records(self, service: str) -> list[dict[str, Any]]:
        out = self.dc("exec", "-T", service, "cat", "/var/log/gateway/audit.log").stdout
        records = []
        for line in out.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line being written right now
        return records

    def prom_query(self, query: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prom}/api/v1/query", params={"query": query}, timeout=10)
        r.raise_for_status()
        body = r.json()
        check(body.get("status") == "success", f"Prometheus query failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    # --- steps -----------------------------------------------------------------------------------

    def step_token(self) -> None:
        # The gateway's own decision only (reason `auth.*`); what the upstream then says is `create`'s.
        good = self.token(self.org_a)
        r = self.req("GET", "/v1/agents", good, params={"orgId": self.org_a})
        check(not (problem_reason(r) or "").startswith("auth."),
              f"valid token refused by the gateway (JWT secret?): {brief(r)}")
        forged = mint_dev_token("x" * 48, "mallory", self.org_a, role="owner", audience="authenticated")
        r = self.req("GET", "/v1/agents", forged, params={"orgId": self.org_a})
        check(r.status_code == 401 and (problem_reason(r) or "").startswith("auth."),
              f"forged token not refused with 401 auth.*: {brief(r)}")
        r = self.req("GET", "/v1/agents", None, params={"orgId": self.org_a})
        check(r.status_code == 401 and (problem_reason(r) or "").startswith("auth."),
              f"missing token not refused with 401 auth.*: {brief(r)}")

    def step_create(self) -> None:
        tok = self.token(self.org_a)
        r = self.req("GET", "/v1/agents", tok, params={"orgId": self.org_a})
        check(r.status_code == 200, f"list through the gateway to the upstream failed: {brief(r)}")
        r = self.req("POST", "/v1/agents", tok, json={"orgId": self.org_a, "name": "smoke agent", "model": "gpt-x"})
        check(r.status_code == 201, f"create refused: {brief(r)}")
        agent = r.json()
        check(agent.get("orgId") == self.org_a and agent.get("id"), f"unexpected agent: {agent}")
        self.ids["agent"] = agent["id"]
        r = self.req("GET", f"/v1/agents/{agent['id']}", tok)
        check(r.status_code == 200 and r.json().get("name") == "smoke agent", f"read back failed: {brief(r)}")

    def step_cross_org(self) -> None:
        other = self.token(self.org_b)
        r = self.req("GET", f"/v1/agents/{self.ids['agent']}", other)
        check(r.status_code == 404, f"org B read org A's agent: {brief(r)}")
        r = self.req("GET", "/v1/agents", other, params={"orgId": self.org_a})
        check(r.status_code == 403 and problem_reason(r), f"org B listed org A: {brief(r)}")
        r = self.req("PATCH", f"/v1/agents/{self.ids['agent']}", other, json={"name": "pwned"})
        check(r.status_code == 404, f"org B patched org A's agent: {brief(r)}")

    def step_database(self) -> None:
        if "postgres" not in self.dc("ps", "--services").stdout.split():
            print("    upstream store: SQLite (no postgres service in this stack)")
            return
        agent = self.ids["agent"]
        check(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", agent), f"unexpected agent id {agent!r}")

        def psql(user: str, password: str, sql: str) -> str:
            return self.dc("exec", "-T", "-e", f"PGPASSWORD={password}", "postgres", "psql", "-h", "127.0.0.1",
                           "-U", user, "-d", "upstream", "-tAc", sql).stdout.strip()

        sql = f"SELECT count(*) FROM agents WHERE id = '{agent}'"  # noqa: S608 (id checked above)
        found = psql("postgres", self.env["POSTGRES_PASSWORD"], sql)
        check(found == "1", f"the agent created through the gateway is not in PostgreSQL (count {found!r})")
        # The app role with no org set sees no tenant rows at all: row-level security is forced.
        seen = psql("upstream_app", self.env["UPSTREAM_DB_APP_PASSWORD"], "SELECT count(*) FROM agents")
        check(seen == "0", f"the app role reads {seen} agent rows without an org: RLS not enforced")
        print("    upstream store: PostgreSQL; the app role without an org sees 0 rows (RLS forced)")

    def step_client_address(self) -> None:
        ours = set(self.sent_ids)
        seen: Counter[str] = Counter()
        for service in ("gateway-1", "gateway-2"):
            for rec in self.audit_records(service):
                if rec.get("request_id") in ours:
                    seen[str(rec.get("client_ip"))] += 1
        check(seen, "no audit record of our requests on either replica")
        check(LB_ADDRESS not in seen,
              f"the gateways recorded the load balancer ({LB_ADDRESS}) as the client: X-Forwarded-For from the LB "
              f"is not trusted (GATEWAY_TRUSTED_PROXIES); addresses seen: {dict(seen)}")
        check(len(seen) == 1, f"one client, several addresses: {dict(seen)}")
        print(f"    client address as the gateways see it: {next(iter(seen))} ({sum(seen.values())} records)")

    def step_rate_limit(self) -> None:
        org = f"org-rl-{uuid.uuid4().hex[:8]}"
        tok = self.token(org)
        codes = []
        for _ in range(12):  # round-robin over 2 replicas: 6 each; per-replica counters would pass 4
            r = self.req("POST", f"/v1/crm/connections/conn-{uuid.uuid4().hex[:8]}/sync", tok)
            if r.status_code == 429:
                check(problem_reason(r) == "ratelimit.exceeded" and r.headers.get("retry-after"),
                      f"429 without reason/Retry-After: {brief(r)}")
            codes.append(r.status_code)
        passed = [c for c in codes if c != 429]
        check(len(passed) == 2, f"2/minute let {len(passed)} of 12 through: {codes}")
        check(all(c < 500 for c in codes), f"server errors: {codes}")

    def step_webhook(self) -> None:
        secret = self.env["KOMMO_CHANNEL_SECRET"].encode()
        body = json.dumps({"account_id": f"smoke-{uuid.uuid4().hex[:12]}", "message": {"text": "hi"}}).encode()
        sig = hmac.new(secret, body, hashlib.sha1).hexdigest()
        headers = {"Content-Type": "application/json", "X-Signature": sig}
        r = self.req("POST", "/v1/webhooks/kommo-chat", headers=headers, content=body)
        check(r.status_code == 200 and "duplicate" not in r.text, f"signed webhook not accepted: {brief(r)}")
        for i in range(4):  # alternates replicas: the dedupe store is shared
            r = self.replay(headers, body)
            check(r.status_code == 200 and r.json().get("reason") == "webhook.duplicate",
                  f"replay {i + 1} not acknowledged as a duplicate: {brief(r)}")
        bad = dict(headers, **{"X-Signature": "0" * 40})
        r = self.req("POST", "/v1/webhooks/kommo-chat", headers=bad, content=body + b" ")
        check(r.status_code in (401, 403) and problem_reason(r), f"bad signature not refused: {brief(r)}")

    def replay(self, headers: dict[str, str], body: bytes) -> httpx.Response:
        """Send a delivery again as a sender does: a 409 `webhook.in_progress` (the first attempt is
        still being recorded as done) is retried after its Retry-After, up to 15 s."""
        deadline = time.monotonic() + 15
        while True:
            r = self.req("POST", "/v1/webhooks/kommo-chat", headers=headers, content=body)
            if r.status_code != 409 or problem_reason(r) != "webhook.in_progress" or time.monotonic() > deadline:
                return r
            check(r.headers.get("retry-after"), f"409 without Retry-After: {brief(r)}")
            time.sleep(min(float(r.headers["retry-after"]), 1.0))

    def step_prometheus(self) -> None:
        deadline = time.monotonic() + 120
        last: Any = None
        while time.monotonic() < deadline:
            try:
                up = self.prom_query('up{job="gateway"}')
                burst = self.prom_query('sum by (instance) (gateway_ratelimit_total{route="crm.connections.sync"})')
                hooks = self.prom_query('sum by (instance) (gateway_webhook_total)')
            except (httpx.HTTPError, StepFailed) as exc:
                last = exc
                time.sleep(3)
                continue
            healthy = {s["metric"]["instance"] for s in up if s["value"][1] == "1"}
            served = {s["metric"]["instance"] for s in burst if float(s["value"][1]) > 0}
            hooked = {s["metric"]["instance"] for s in hooks if float(s["value"][1]) > 0}
            last = {"up": sorted(healthy), "rate-limit burst served by": sorted(served),
                    "webhooks seen by": sorted(hooked)}
            if healthy == served == hooked == {"gateway-1:9090", "gateway-2:9090"}:
                print(f"    {last}")
                return
            time.sleep(3)
        raise StepFailed(f"Prometheus did not see both replicas scraped and serving within 120 s: {last}")

    def step_replica_stop(self) -> None:
        tokens = [self.token(self.org_a, role="member", sub=f"smoke-load-{i}") for i in range(4)]
        results: list[tuple[float, int | str]] = []
        stop = threading.Event()

        def load() -> None:
            n = 0
            with httpx.Client(base_url=self.lb, timeout=30) as client:
                while not stop.is_set():
                    t = time.monotonic()
                    try:
                        r = client.get("/v1/agents", params={"orgId": self.org_a},
                                       headers={"Authorization": f"Bearer {tokens[n % len(tokens)]}"})
                        results.append((t, r.status_code))
                    except httpx.HTTPError as exc:
                        results.append((t, type(exc).__name__))
                    n += 1
                    time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))  # ~10 requests a second

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        time.sleep(3)
        t_stop = time.monotonic()
        self.dc("stop", "-t", "50", "gateway-1", timeout=120)
        t_stopped = time.monotonic()
        time.sleep(4)
        stop.set()
        worker.join(timeout=60)
        cid = self.dc("ps", "-q", "gateway-1").stdout.strip()
        code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", cid],
                              capture_output=True, text=True).stdout.strip() if cid else "?"
        failed = [res for _, res in results if res != 200]
        during = sum(1 for t, _ in results if t_stop <= t <= t_stopped)
        after = sum(1 for t, res in results if t > t_stopped and res == 200)
        print(f"    {len(results)} requests, {during} while gateway-1 drained ({t_stopped - t_stop:.1f} s), "
              f"{after} after it exited; failures: {len(failed)}; gateway-1 exit code {code}")
        check(not failed, f"{len(failed)} failed requests while a replica stopped: {Counter(failed)}")
        check(during >= 5 and after >= 5, "too few requests to tell (the load generator stalled)")
        check(code == "0", f"gateway-1 did not exit cleanly on SIGTERM (exit code {code})")

    def step_audit_verify(self) -> None:
        self.dc("stop", "-t", "50", "gateway-2", timeout=120)  # a quiescent file: nothing half-written
        for service in ("gateway-1", "gateway-2"):
            proc = self.dc("run", "--rm", "--no-deps", "-T", service,
                           "gateway", "audit", "verify", "/var/log/gateway/audit.log", check_rc=False)
            out = (proc.stdout + proc.stderr).strip()
            check(proc.returncode == 0, f"{service}: audit verify exited {proc.returncode}: {out[-600:]}")
            said = proc.stdout.strip().splitlines()
            print(f"    {service}: {said[-1] if said else 'exit 0'}")


STEPS: list[tuple[str, Callable[[Smoke], None]]] = [
    ("token", Smoke.step_token),
    ("create", Smoke.step_create),
    ("cross-org", Smoke.step_cross_org),
    ("database", Smoke.step_database),
    ("client-address", Smoke.step_client_address),
    ("rate-limit", Smoke.step_rate_limit),
    ("webhook", Smoke.step_webhook),
    ("prometheus", Smoke.step_prometheus),
    ("replica-stop", Smoke.step_replica_stop),
    ("audit-verify", Smoke.step_audit_verify),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lb", required=True)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--env-file", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--failed-step-file")
    args = parser.parse_args()
    smoke = Smoke(args)
    for name, run in STEPS:
        t0 = time.monotonic()
        try:
            run(smoke)
        except (StepFailed, httpx.HTTPError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
            print(f"FAILED step: {name}: {type(exc).__name__ if not isinstance(exc, StepFailed) else ''}{exc}",
                  flush=True)
            if args.failed_step_file:
                Path(args.failed_step_file).write_text(name)
            return 1
        print(f"  ok  {name} ({time.monotonic() - t0:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
