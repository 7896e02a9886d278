"""`gateway diff OLD NEW`: security-relevant changes per route, weakening edits exit 1, comments and
reordering are not changes, git revisions and --json work."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.policydiff import TIGHTENED, WEAKENED, Change, diff, load_side
from gateway.settings import Settings, effective_env

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "policies"
ENV = effective_env(Settings())


def copy(tmp: Path, name: str) -> Path:
    d = tmp / name
    # Without the API document: these edits change routes, which openapi.yaml would (rightly)
    # have to follow; the diff itself does not depend on it.
    shutil.copytree(SHIPPED, d, ignore=shutil.ignore_patterns("tests", "openapi.yaml"))
    g = d / "gateway.yaml"
    g.write_text(re.sub(r"\napi:\n(  .*\n)+", "\n", g.read_text()))
    return d


def replace(file: str, old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        text = (d / file).read_text()
        assert old in text, old
        (d / file).write_text(text.replace(old, new, count))
    return apply


def changes_for(tmp_path: Path, edit: Callable[[Path], None]) -> list[Change]:
    old, new = copy(tmp_path, "old"), copy(tmp_path, "new")
    edit(new)
    return diff(load_side(old, ENV), load_side(new, ENV))


R, G = "routes.yaml", "gateway.yaml"
DELETE_ROUTE = "  - id: agents.delete\n    path: /v1/agents/{agentId}\n    methods: [DELETE]\n    auth: jwt\n"

WEAKENING: list[Any] = [
    pytest.param(replace(R, "    auth: jwt                         # the upstream", "    auth: none  # the upstream"),
                 "agents.read", "auth: jwt -> none", id="auth_dropped"),
    pytest.param(replace(R, "    auth: jwt\n    tenant: {mode: verify, query: orgId}\n", "    auth: jwt\n"),
                 "agents.list", "tenant binding removed", id="tenant_removed"),
    pytest.param(replace(R, "    roles: [admin, owner]\n", "    roles: [admin, owner, member]\n"),
                 "agents.delete", "roles widened: [admin, owner] -> [admin, member, owner]", id="roles_widened"),
    pytest.param(replace(R, DELETE_ROUTE + "    roles: [admin, owner]\n", DELETE_ROUTE),
                 "agents.delete", "roles widened: [admin, owner] -> any role", id="roles_removed"),
    pytest.param(replace(R, 'rate_limit: {limits: "2/minute", key: org, strategy: fixed-window}',
                         'rate_limit: {limits: "20/minute", key: org, strategy: fixed-window}'),
                 "crm.connections.sync", "rate limit per 60 s raised: 2 -> 20", id="limit_raised"),
    pytest.param(replace(G, 'default: {limits: "20/second; 600/minute"', 'default: {limits: "20/second; 6000/minute"'),
                 "agents.list", "rate limit per 60 s raised: 600 -> 6000", id="default_limit_raised"),
    pytest.param(replace(R, '    rate_limit: {limits: "10/minute", key: ip}\n', ""),
                 "kommo.oauth.callback", "rate limit per 60 s raised: 10 -> 600", id="route_limit_removed"),
    pytest.param(replace(R, "    max_body_bytes: 65536\n", "    max_body_bytes: 655360\n"),
                 "agents.create", "body cap raised: 65536 -> 655360", id="body_cap_raised"),
    pytest.param(replace(G, "timeouts: {connect: 2, total: 30, body_read: 15,",
                         "timeouts: {connect: 2, total: 300, body_read: 15,"),
                 "agents.list", "total timeout raised: 30.0 -> 300.0", id="timeout_lengthened"),
    pytest.param(replace(G, "https://app.example.com,https://admin.example.com",
                         "https://app.example.com,https://admin.example.com,https://evil.example.net"),
                 None, "CORS origins: added https://evil.example.net", id="cors_origin_added"),
    pytest.param(replace(G, "trusted_proxies: []", "trusted_proxies: [10.0.0.0/8]"),
                 None, "trusted proxies: added 10.0.0.0/8", id="trusted_proxy_added"),
    pytest.param(replace(R, "      source_ips: any\n      dedupe: false", "      source_ips: any"),
                 "webhooks.kommo_revoked", "dedupe) turned on", id="dedupe_on_is_tightening_control"),
    pytest.param(replace(R, "      algorithm: sha1\n", "      algorithm: sha256\n"),
                 "webhooks.kommo_chat", "webhook algorithm: sha1 -> sha256", id="webhook_algorithm"),
    pytest.param(replace(R, "    methods: [GET]\n    auth: jwt\n    tenant: {mode: verify, query: orgId}\n",
                         "    methods: [GET, DELETE]\n    auth: jwt\n    tenant: {mode: verify, query: orgId}\n"),
                 "agents.list", "methods: added DELETE", id="method_added"),
    pytest.param(replace(R, "routes:\n", "routes:\n  - {id: debug.dump, path: /v1/debug, methods: [GET], auth: none}\n"),
                 "debug.dump", "new public route (auth: none): GET /v1/debug", id="public_route_added"),
    pytest.param(replace(G, "algorithms: [HS256, RS256, ES256, EdDSA]", "algorithms: [HS256, RS256, ES256, EdDSA, PS256]"),
                 None, "JWT algorithms: added PS256", id="algorithm_added"),
    pytest.param(replace(G, "    leeway_seconds: 30\n", "    leeway_seconds: 300\n"),
                 None, "JWT clock leeway raised: 30 -> 300", id="leeway_raised"),
    pytest.param(replace(G, "    roles: [owner, admin, member, viewer]\n", "    roles: [owner, admin, member, viewer, guest]\n"),
                 None, "declared roles: added guest", id="declared_role_added"),
    pytest.param(replace(G, "  max_header_bytes: 16384", "  max_header_bytes: 65536"),
                 None, "limits.max_header_bytes raised: 16384 -> 65536", id="header_cap_raised"),
]


@pytest.mark.parametrize("edit,route,needle", WEAKENING)
def test_weakening_edits_are_reported(tmp_path: Path, edit: Callable[[Path], None], route: str | None,
                                      needle: str) -> None:
    changes = changes_for(tmp_path, edit)
    hits = [c for c in changes if needle in c.message and (route is None or c.route == route)]
    assert hits, [(c.route, c.severity, c.message) for c in changes]
    if "tightening_control" not in needle and "turned on" not in needle:
        assert any(c.severity == WEAKENED for c in hits)


@pytest.mark.parametrize("old_tenant,new_tenant,needle", [
    pytest.param("{mode: require, query: orgId}", "{mode: verify, query: orgId}", "tenant mode: require -> verify (loosened)",
                 id="mode_loosened"),
    pytest.param("{mode: verify, query: orgId, body: orgId}", "{mode: verify, body: orgId}",
                 "tenant binding of the query (orgId) removed", id="location_removed"),
])
def test_tenant_binding_loosened(tmp_path: Path, old_tenant: str, new_tenant: str, needle: str) -> None:
    old, new = copy(tmp_path, "old"), copy(tmp_path, "new")
    replace(R, "    tenant: {mode: verify, query: orgId}\n", f"    tenant: {old_tenant}\n")(old)
    replace(R, "    tenant: {mode: verify, query: orgId}\n", f"    tenant: {new_tenant}\n")(new)
    changes = diff(load_side(old, ENV), load_side(new, ENV))
    assert any(c.route == "agents.list" and c.severity == WEAKENED and needle in c.message for c in changes), changes


def test_webhook_source_addresses_widened(tmp_path: Path) -> None:
    old = copy(tmp_path, "old")
    replace(R, "      param: token\n      source_ips: any", "      param: token\n      source_ips: [203.0.113.0/24]")(old)
    new = copy(tmp_path, "new")
    changes = diff(load_side(old, ENV), load_side(new, ENV))
    assert any(c.route == "webhooks.kommo" and c.severity == WEAKENED and
               "webhook source addresses: [203.0.113.0/24] -> any" in c.message for c in changes), changes
    back = diff(load_side(new, ENV), load_side(old, ENV))
    assert [c.severity for c in back if c.route == "webhooks.kommo"] == [TIGHTENED]


def test_comments_reordering_and_quoting_are_not_changes(tmp_path: Path) -> None:
    def cosmetic(d: Path) -> None:
        text = (d / R).read_text()
        head, _, body = text.partition("routes:\n")
        blocks = body.split("\n\n")
        blocks.reverse()  # route order
        body = "\n\n".join(b.strip("\n") for b in blocks) + "\n"
        body = body.replace("methods: [GET]\n    auth: jwt", "auth: jwt    # reordered keys\n    methods: [GET]")
        body = body.replace("path: /v1/agents\n", 'path: "/v1/agents"   # quoted\n')
        (d / R).write_text("# a new comment\n" + head + "routes:\n" + body)
        g = (d / G).read_text().replace("  pool_size: 256\n", "  pool_size: 256   # a comment\n")
        (d / G).write_text(g)
    assert changes_for(tmp_path, cosmetic) == []


@pytest.mark.parametrize("edit,needle", [
    pytest.param(replace(R, "    roles: [admin, owner]\n", "    roles: [owner]\n"), "roles narrowed", id="roles_narrowed"),
    pytest.param(replace(R, "    max_body_bytes: 65536\n", "    max_body_bytes: 1024\n"), "body cap lowered",
                 id="body_cap_lowered"),
    pytest.param(replace(R, 'limits: "10/minute", key: ip', 'limits: "5/minute", key: ip'),
                 "rate limit per 60 s lowered: 10 -> 5", id="limit_lowered"),
    pytest.param(replace(R, "  - id: kommo.oauth.callback\n    path: /v1/kommo/oauth/callback\n    methods: [GET]\n"
                         "    auth: none                        # the browser returns from Kommo; the signed `state` "
                         "carries the org\n    rate_limit: {limits: \"10/minute\", key: ip}\n", ""),
                 "route removed", id="route_removed"),
])
def test_tightening_edits_do_not_count_as_weakening(tmp_path: Path, edit: Callable[[Path], None], needle: str) -> None:
    changes = changes_for(tmp_path, edit)
    assert changes and all(c.severity != WEAKENED for c in changes), changes
    assert any(needle in c.message and c.severity == TIGHTENED for c in changes), changes


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "gateway", "diff", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    old, new = copy(tmp_path, "old"), copy(tmp_path, "new")
    same = run(str(old), str(new))
    assert same.returncode == 0 and "no security-relevant change" in same.stdout, same.stdout + same.stderr
    replace(R, "    auth: jwt                         # the upstream", "    auth: none  # the upstream")(new)
    weaker = run(str(old), str(new), "--json")
    assert weaker.returncode == 1, weaker.stderr
    doc = json.loads(weaker.stdout)
    assert doc["weakened"] is True and doc["summary"]["weakened"] == 1
    assert doc["changes"] == [{"severity": "weakened", "route": "agents.read", "field": "auth",
                               "message": "auth: jwt -> none", "old": "jwt", "new": "none"}]
    stronger = run(str(new), str(old))
    assert stronger.returncode == 0 and "TIGHTENED" in stronger.stdout


def test_git_revisions(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy(repo, "policies")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=repo, check=True)
    replace(R, "    roles: [admin, owner]\n", "    roles: [admin, owner, member]\n")(repo / "policies")
    subprocess.run([*git, "commit", "-qam", "two"], cwd=repo, check=True)
    done = run("HEAD~1", "HEAD", cwd=repo)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "route agents.delete" in done.stdout and "roles widened" in done.stdout
    mixed = run("HEAD~1:policies", str(repo / "policies"), cwd=repo)
    assert mixed.returncode == 1
    bad = run("no-such-rev", "HEAD", cwd=repo)
    assert bad.returncode == 2 and "unknown git revision" in bad.stderr and "Traceback" not in bad.stderr


def test_invalid_side_is_a_clean_error(tmp_path: Path) -> None:
    old, new = copy(tmp_path, "old"), copy(tmp_path, "new")
    (new / "zz.yaml").write_text("routes: [\n")
    done = run(str(old), str(new))
    assert done.returncode == 2 and "invalid policy" in done.stderr and "Traceback" not in done.stderr
