"""Policy reload under load: a valid change takes effect without dropping a request; an invalid
change is refused (audited) and traffic continues on the old policy."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.support.gateway_proc import echo_upstream, gateway, wait_until, write_policy

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    routes:
      - {id: echo.get, path: /v1/echo, methods: [GET], auth: none}
"""
EXTRA_ROUTE = "  - {id: extra.get, path: /v1/extra, methods: [GET], auth: none, upstream_path: /echo}\n"


class Load:
    """A few client threads hammering one route; every answer is recorded."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.results: list[int | str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    code: int | str = client.get(self.url).status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                with self.lock:
                    self.results.append(code)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_reload_under_load(tmp_path: Path) -> None:
    policy_dir = write_policy(tmp_path / "pol", gateway=POLICY)
    audit = tmp_path / "audit.log"
    with echo_upstream() as up, gateway(policy_dir, up.url, {"GATEWAY_AUDIT_LOG": str(audit)}) as gw:
        assert httpx.get(f"{gw.url}/v1/extra").status_code == 404
        with Load(f"{gw.url}/v1/echo") as load:
            time.sleep(0.5)
            # 1. A valid change (file edit): the new route appears, nothing is dropped.
            path = policy_dir / "gateway.yaml"
            path.write_text(path.read_text() + EXTRA_ROUTE)
            assert wait_until(lambda: httpx.get(f"{gw.url}/v1/extra").status_code == 200, timeout=15)
            # 2. An invalid change: refused, the old (last good) policy keeps serving.
            good = path.read_text()
            path.write_text(good + "  - {id: broken, path: nope, methods: [GET]}\n")
            time.sleep(2.5)
            gw.signal(signal.SIGHUP)
            time.sleep(1.0)
            assert httpx.get(f"{gw.url}/v1/extra").status_code == 200
            time.sleep(0.5)
        results = load.results
        assert len(results) > 50
        assert set(results) == {200}, f"dropped or failed during reload: {sorted(set(map(str, results)))}"
        log = gw.log()
    assert "policy reload refused" in log
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    reloads = [r for r in records if r.get("event") == "policy.reload"]
    ok = [r for r in reloads if r["result"] == "ok"]
    failed = [r for r in reloads if r["result"] == "failed"]
    assert ok and ok[0]["routes_added"] == ["extra.get"] and ok[0]["policy_before"] != ok[0]["policy_after"]
    assert failed and any("routes[" in e for e in failed[0]["errors"])


def test_a_file_that_is_not_utf8_is_a_refused_reload_and_the_watcher_lives_on(tmp_path: Path) -> None:
    """A policy file saved in another encoding raised UnicodeDecodeError in the reload: the file
    watcher stopped ('policy watcher stopped') and nothing was audited. Now it is a refused reload
    like any other invalid change, and the next good edit is still picked up."""
    policy_dir = write_policy(tmp_path / "pol", gateway=POLICY)
    audit = tmp_path / "audit.log"

    def reloads(result: str) -> list[dict]:
        records = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
        return [r for r in records if r.get("event") == "policy.reload" and r["result"] == result]

    with echo_upstream() as up, gateway(policy_dir, up.url, {"GATEWAY_AUDIT_LOG": str(audit)}) as gw:
        bad = policy_dir / "zz.yaml"
        bad.write_bytes(b"routes:\n  - id: caf\xe9\n")  # latin-1
        assert wait_until(lambda: reloads("failed"), timeout=20), gw.log()[-2000:]
        assert any("zz.yaml: not UTF-8 text" in e for e in reloads("failed")[0]["errors"])
        assert httpx.get(f"{gw.url}/v1/echo").status_code == 200  # the last good policy serves
        bad.unlink()
        path = policy_dir / "gateway.yaml"
        path.write_text(path.read_text() + EXTRA_ROUTE)
        assert wait_until(lambda: httpx.get(f"{gw.url}/v1/extra").status_code == 200, timeout=20), gw.log()[-2000:]
        log = gw.log()
    assert "policy watcher stopped" not in log and "Traceback" not in log
