"""One trusted-proxy model, over the wire (issue 5 §4).

Threat: a client writes its own `X-Forwarded-For` to pass a webhook's `source_ips`, to pick a
fresh rate-limit bucket, or to put someone else's address in the audit log. Two real gateways on
the same policy: one with no trusted proxies (the header is ignored), one trusting 127.0.0.1 (the
test client plays the load balancer). The upstream must see the computed address, never the chain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import ROOT, Proc, echo_upstream, gateway, write_policy
from tests.support.procs import free_port

HOOK_TOKEN = "trusted-proxy-test-token-0123456789"
FORM = "application/x-www-form-urlencoded"

POLICY = """
    upstream: {url: "${GATEWAY_UPSTREAM_URL}"}
    routes:
      - id: hooks.partner
        path: "/v1/hooks/partner/{token}"
        methods: [POST]
        upstream_path: /hooks/partner
        auth: webhook
        webhook:
          type: url_token
          secret_env: TEST_PARTNER_TOKEN
          param: token
          source_ips: [203.0.113.0/24]
          dedupe: false
      - {id: echo, path: /v1/echo, methods: [GET], auth: none, upstream_path: /echo}
      - id: limited
        path: /v1/limited
        methods: [GET]
        auth: none
        upstream_path: /limited
        rate_limit: {limits: "3/day", key: ip, strategy: fixed-window}
"""
ENV = {"TEST_PARTNER_TOKEN": HOOK_TOKEN}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Proc]:
    with echo_upstream() as up:
        yield up


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policy(tmp_path_factory.mktemp("tp-policy"), gateway=POLICY)


@pytest.fixture(scope="module")
def direct(upstream: Proc, policy: Path) -> Iterator[Proc]:
    """No trusted proxies: every client talks to the gateway directly."""
    with gateway(policy, upstream.url, ENV) as g:
        yield g


@pytest.fixture(scope="module")
def behind_lb(upstream: Proc, policy: Path) -> Iterator[Proc]:
    """127.0.0.1 is a trusted proxy (the test client plays the load balancer)."""
    with gateway(policy, upstream.url, {**ENV, "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"}) as g:
        yield g


def seen(upstream: Proc, path: str) -> int:
    return int(httpx.get(f"{upstream.url}/count").json()["seen"].get(path, 0))


def post_hook(g: Proc, xff: str | None) -> httpx.Response:
    headers = {"content-type": FORM}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    return httpx.post(f"{g.url}/v1/hooks/partner/{HOOK_TOKEN}", content=b"event=ping", headers=headers)


def received_xff(r: httpx.Response) -> list[str]:
    return [v for k, v in r.json()["headers"] if k == "x-forwarded-for"]


# --- source_ips ------------------------------------------------------------------------------


@pytest.mark.parametrize("xff", [
    pytest.param(None, id="no_header"),
    pytest.param("203.0.113.7", id="spoofed_allowed_address"),
    pytest.param("6.6.6.6, 203.0.113.7", id="spoofed_chain"),
])
def test_untrusted_peer_cannot_spoof_past_source_ips(direct: Proc, upstream: Proc, xff: str | None) -> None:
    before = seen(upstream, "/hooks/partner")
    r = post_hook(direct, xff)
    assert r.status_code == 403, r.text
    assert r.json()["reason"] == "webhook.source_denied"
    assert seen(upstream, "/hooks/partner") == before


@pytest.mark.parametrize("xff", [
    pytest.param("203.0.113.7", id="one_hop"),
    pytest.param("6.6.6.6, 203.0.113.7", id="client_planted_left_entry"),
    pytest.param("203.0.113.7, 127.0.0.1", id="through_two_trusted_proxies"),
])
def test_trusted_proxy_header_passes_source_ips(behind_lb: Proc, xff: str) -> None:
    r = post_hook(behind_lb, xff)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/hooks/partner"
    # The upstream gets the gateway's computed client address, not the chain it was handed.
    assert received_xff(r) == ["203.0.113.7"]


@pytest.mark.parametrize("xff", [
    pytest.param("203.0.113.7, 6.6.6.6", id="rightmost_untrusted_is_client"),
    pytest.param("6.6.6.6", id="outside_allowlist"),
    pytest.param("203.0.113.7, not-an-ip", id="garbage_hop"),
])
def test_trusted_proxy_header_outside_allowlist_denied(behind_lb: Proc, upstream: Proc, xff: str) -> None:
    before = seen(upstream, "/hooks/partner")
    r = post_hook(behind_lb, xff)
    assert r.status_code == 403, r.text
    assert r.json()["reason"] == "webhook.source_denied"
    assert seen(upstream, "/hooks/partner") == before


def test_upstream_sees_peer_address_when_header_untrusted(direct: Proc) -> None:
    r = httpx.get(f"{direct.url}/v1/echo", headers={"X-Forwarded-For": "203.0.113.7, 6.6.6.6"})
    assert r.status_code == 200, r.text
    assert received_xff(r) == ["127.0.0.1"]


# --- rate-limit keys use the same address ----------------------------------------------------


def _hit(g: Proc, xff: str) -> int:
    return httpx.get(f"{g.url}/v1/limited", headers={"X-Forwarded-For": xff}).status_code


def _fresh_net() -> str:
    # A prefix of our own per run, so a re-run against a long-lived gateway starts from zero.
    return f"198.18.{uuid.uuid4().int % 250}."


def test_rate_limit_keys_on_forwarded_client_behind_trusted_proxy(behind_lb: Proc) -> None:
    net = _fresh_net()
    first, second = net + "1", net + "2"
    assert [_hit(behind_lb, first) for _ in range(3)] == [200, 200, 200]
    r = httpx.get(f"{behind_lb.url}/v1/limited", headers={"X-Forwarded-For": first})
    assert r.status_code == 429, r.text
    assert r.json()["reason"] == "ratelimit.exceeded"
    # Another client behind the same proxy has a budget of its own.
    assert [_hit(behind_lb, second) for _ in range(3)] == [200, 200, 200]
    assert _hit(behind_lb, second) == 429


def test_spoofed_header_shares_the_peer_budget_when_untrusted(direct: Proc) -> None:
    # Each request claims another client address; all of them are the one loopback peer.
    codes = [_hit(direct, f"198.51.100.{i}") for i in range(1, 6)]
    assert codes[:3] == [200, 200, 200]
    assert codes[3:] == [429, 429]


# --- malformed trusted proxies refuse to start -----------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_", "UPSTREAM_"))}
    env.update({"PYTHONPATH": str(ROOT), "GATEWAY_PORT": str(free_port()), "GATEWAY_ADMIN_PORT": str(free_port()),
                "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9", "GATEWAY_DRAIN_DELAY": "0", **ENV, **extra})
    return env


MALFORMED = [
    pytest.param("10.0.0.0/33", "10.0.0.0/33", id="prefix_too_long"),
    pytest.param("not-an-ip", "not-an-ip", id="not_an_ip"),
    pytest.param("10.0.0.0/8, 300.1.1.1", "300.1.1.1", id="second_entry_bad"),
    pytest.param("10.0.0.1/8", "10.0.0.1/8", id="host_bits_set"),
]


def run_to_exit(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run a command in its own session; (exit code, or None if still running at `timeout`; output).

    On timeout the whole session is killed: a supervisor's forked workers must not outlive the test.
    """
    with subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out


@pytest.mark.parametrize(("value", "entry"), MALFORMED)
def test_malformed_env_trusted_proxies_refuse_start(policy: Path, value: str, entry: str) -> None:
    env = _env(GATEWAY_POLICY_DIR=str(policy), GATEWAY_TRUSTED_PROXIES=value)
    rc, out = run_to_exit([sys.executable, "-m", "gateway", "serve"], env, timeout=60)
    assert rc is not None, f"still running with GATEWAY_TRUSTED_PROXIES={value!r}:\n{out[-2000:]}"
    assert rc != 0, out
    assert entry in out, out


def test_malformed_env_trusted_proxies_refuse_start_with_workers(policy: Path) -> None:
    # Under the multi-worker supervisor the refusal must stop the supervisor too, not become a
    # crash-and-respawn loop that holds the port while serving nothing.
    env = _env(GATEWAY_POLICY_DIR=str(policy), GATEWAY_TRUSTED_PROXIES="not-an-ip", GATEWAY_WORKERS="2")
    # Generous: the refusal comes before any worker exists; a busy machine may take seconds to import.
    rc, out = run_to_exit([sys.executable, "-m", "gateway", "serve"], env, timeout=40)
    assert rc is not None, f"supervisor still running 40 s after start; {out.count('Traceback')} tracebacks:\n" \
                           f"{out[-1500:]}"
    assert rc != 0, out
    assert "not-an-ip" in out, out


@pytest.mark.parametrize(("value", "entry"), MALFORMED)
def test_malformed_policy_trusted_proxies_refused_by_check(tmp_path: Path, value: str, entry: str) -> None:
    entries = ", ".join(f'"{e.strip()}"' for e in value.split(","))
    d = write_policy(tmp_path, gateway=POLICY + f"    trusted_proxies: [{entries}]\n")
    done = subprocess.run([sys.executable, "-m", "gateway", "check", str(d)], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert entry in out and "trusted_proxies" in out, out
