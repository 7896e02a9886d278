"""Throughput of the bundled upstream on its two stores: SQLite file vs PostgreSQL with row-level security.

    .venv/bin/python -m bench.upstream_store [--seconds 10] [--connections 16] [--orgs 8]

For each backend it starts one real `python -m upstream_stub` process (worker off), seeds 20 agents
per org, then drives it with wrk directly (no gateway in front: this measures the store) for
`GET /agents?limit=20` (list) and `POST /agents` (create), cycling through `--orgs` orgs with a
signed identity each. PostgreSQL runs in a database and two roles created for the run (owner +
application role, migrated by the real `migrate` step) and dropped afterwards; `PG_ADMIN_URL`
(default postgresql://postgres@127.0.0.1:5432/postgres) is the superuser connection for that.
One run, on whatever else the machine is doing: compare the two columns, not with other machines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import jwt

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-identity-secret-0123456789abcdef-0123456789abcdef"
ADMIN_URL = os.environ.get("PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

LUA = """\
-- bench/upstream_store.py: cycle through pre-built requests (file: METHOD \\t PATH \\t TOKEN \\t BODY)
local reqs, n, i = {}, 0, 0
function init(args)
  for line in io.lines(args[1]) do
    local m, p, t, b = line:match("^(%S+)\\t(%S+)\\t(%S+)\\t(.*)$")
    if m then
      n = n + 1
      local h = {["X-Gateway-Identity"] = t, ["Content-Type"] = "application/json"}
      reqs[n] = wrk.format(m, p, h, (#b > 0) and b or nil)
    end
  end
end
function request()
  i = i % n + 1
  return reqs[i]
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mint(org: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": "edge-gateway", "aud": "upstream", "iat": now, "exp": now + 60, "rid": uuid.uuid4().hex,
                       "kind": "user", "sub": f"user_{org}", "org_id": org, "org_role": "owner"}, SECRET)


def requests_file(kind: str, orgs: list[str], path: Path) -> Path:
    lines = []
    for org in orgs:
        token = mint(org)
        if kind == "list":
            lines.append(f"GET\t/agents?orgId={org}&limit=20\t{token}\t")
        else:
            body = json.dumps({"orgId": org, "name": "bench", "model": "gpt-4o-mini"}, separators=(",", ":"))
            lines.append(f"POST\t/agents\t{token}\t{body}")
    path.write_text("\n".join(lines) + "\n")
    return path


def wrk(port: int, reqs: Path, lua: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua),
                          f"http://127.0.0.1:{port}", "--", str(reqs)], capture_output=True, text=True, check=True)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out.stdout)
    lat = dict(re.findall(r"^\s*(50|99)%\s+(\S+)", out.stdout, re.M))
    return {"rps": rps, "non2xx": int(non2xx.group(1)) if non2xx else 0, "p50": lat.get("50"),  # type: ignore[dict-item]
            "p99": lat.get("99")}  # type: ignore[dict-item]


class PgRun:
    """A database + owner + app role for this run; migrated; dropped on close."""

    def __init__(self) -> None:
        import psycopg
        from psycopg import sql

        tag = f"bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.db, self.owner, self.app = f"{tag}_db", f"{tag}_owner", f"{tag}_app"
        info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
        self.base = f"{info.get('host', '127.0.0.1')}:{info.get('port', '5432')}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            for role in (self.owner, self.app):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(sql.Identifier(role)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(self.db),
                                                                      sql.Identifier(self.owner)))
        from upstream_stub.migrations import migrate

        migrate(self.url(self.owner), self.url(self.app))

    def url(self, role: str) -> str:
        return f"postgresql://{role}@{self.base}/{self.db}"

    def close(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.db)))
            for role in (self.app, self.owner):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def run_backend(name: str, store_env: dict[str, str], args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "GATEWAY_", "KOMMO_"))}
    env.update(PYTHONPATH=str(ROOT), UPSTREAM_PORT=str(port), GATEWAY_IDENTITY_SECRET=SECRET,
               UPSTREAM_WORKER_ENABLED="false", UPSTREAM_LOG_LEVEL="warning", **store_env)
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "upstream_stub"], env=env, cwd=tmp, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} upstream did not start: {(tmp / f'{name}.log').read_text()}")
            time.sleep(0.1)
        orgs = [f"org_bench_{i}" for i in range(args.orgs)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for org in orgs:
                for _ in range(20):
                    r = client.post("/agents", headers={"X-Gateway-Identity": mint(org)},
                                    json={"orgId": org, "name": "seed", "model": "gpt-4o-mini"})
                    r.raise_for_status()
        lua = tmp / "reqs.lua"
        lua.write_text(LUA)
        result: dict[str, object] = {}
        for kind in ("list", "create"):
            reqs = requests_file(kind, orgs, tmp / f"{name}-{kind}.txt")  # fresh 60 s identities
            result[kind] = wrk(port, reqs, lua, args.seconds, args.connections)
        return result
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--orgs", type=int, default=8)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-upstream-store-"))
    results = {"sqlite": run_backend("sqlite", {"UPSTREAM_DB": str(tmp / "upstream.db")}, args, tmp)}
    pg = PgRun()
    try:
        results["postgresql"] = run_backend("postgresql", {"UPSTREAM_DATABASE_URL": pg.url(pg.app)}, args, tmp)
    finally:
        pg.close()
    print(f"upstream store throughput: wrk -t1 -c{args.connections} -d{args.seconds}s, {args.orgs} orgs,"
          " one upstream process, worker off")
    print(f"{'backend':<12}{'list req/s':>12}{'p50':>10}{'p99':>10}{'create req/s':>14}{'p50':>10}{'p99':>10}")
    for name, r in results.items():
        lst, cre = r["list"], r["create"]
        assert isinstance(lst, dict) and isinstance(cre, dict)
        print(f"{name:<12}{lst['rps']:>12.0f}{lst['p50']:>10}{lst['p99']:>10}{cre['rps']:>14.0f}{cre['p50']:>10}"
              f"{cre['p99']:>10}")
        if lst["non2xx"] or cre["non2xx"]:
            print(f"  {name}: non-2xx responses: list {lst['non2xx']}, create {cre['non2xx']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
