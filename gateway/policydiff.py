"""`gateway diff OLD NEW`: what a policy change does to security, route by route, for reviewers.

OLD and NEW are policy directories, or git revisions (`main`, `HEAD~1`, `origin/main:policies`;
the path defaults to the policy directory inside the repository). Both are loaded and validated
with the same environment, then compared by meaning, not by text: comments, key order, route order
and quoting are not changes. Each finding is

    weakened    more is allowed than before (exit code 1): a route added without authentication,
                `auth` dropped, methods added, tenant binding removed or loosened, roles widened,
                scopes dropped, rate limits raised or removed, body caps raised, timeouts lengthened,
                CORS origins / credentials / methods added, trusted proxies added, webhook
                verification changed or source addresses widened, algorithms added, issuer or
                required claims dropped, leeway raised ...
    tightened   less is allowed than before
    changed     different in a way that needs a reviewer's eyes but is neither (a path renamed,
                a claim path, the upstream URL)

Exit code 0: nothing weakened; 1: something weakened; 2: a side could not be read or is invalid.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from limits import parse_many

from gateway.auth.config import DEFAULT_ROLES
from gateway.errors import PolicyError

WEAKENED, TIGHTENED, CHANGED = "weakened", "tightened", "changed"
INF = float("inf")


@dataclass(frozen=True)
class Change:
    """One finding: where (route id or None for gateway-wide), what, how it moved."""

    severity: str
    route: str | None
    field: str
    message: str
    old: Any = None
    new: Any = None


class DiffError(Exception):
    """A side that cannot be compared (unreadable, unknown revision, invalid policy)."""


# --- reading a side -----------------------------------------------------------------------------


@contextmanager
def policy_dir(spec: str, default_path: str) -> Iterator[Path]:
    """A directory holding the policy named by `spec` (a directory, or `REV[:PATH]` in git)."""
    if Path(spec).is_dir():
        yield Path(spec)
        return
    rev, _, path = spec.partition(":")
    top = _git(["rev-parse", "--show-toplevel"], f"{spec!r} is neither a directory nor a git revision")
    root = Path(top.decode().strip())
    if not path:
        rel = Path(default_path).resolve()
        try:
            path = str(rel.relative_to(root))
        except ValueError:
            path = default_path
    _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], f"{rev!r}: unknown git revision", cwd=root)
    data = _git(["archive", "--format=tar", rev, path], f"{rev}:{path}: not found in that revision", cwd=root)
    with tempfile.TemporaryDirectory(prefix="gateway-diff-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp) / path


def _git(args: list[str], error: str, cwd: Path | None = None) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiffError(f"{error} (git: {exc})") from None
    if done.returncode != 0:
        raise DiffError(error)
    return done.stdout


@dataclass
class Side:
    """A loaded policy: the compiled routes and the raw (env-expanded) sections and route specs."""

    compiled: Any
    sections: dict[str, Any]
    routes: dict[str, dict[str, Any]]


def load_side(directory: Path, env: Mapping[str, str]) -> Side:
    from gateway.policy.loader import load_policy, read_sources

    try:
        compiled = load_policy(directory, env, production=False, earlier_rules=True)
    except PolicyError as exc:
        raise DiffError(f"{directory}: invalid policy ({len(exc.errors)} error(s)); first: {exc.errors[0]}") from None
    except OSError as exc:
        raise DiffError(f"{directory}: cannot read policy ({exc.strerror})") from None
    sections: dict[str, Any] = {}
    routes: dict[str, dict[str, Any]] = {}
    for src, _text in read_sources(directory, env, []):
        data = src.data if isinstance(src.data, dict) else {}
        for name, value in data.items():
            if name == "routes":
                for raw in value or []:
                    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                        routes[raw["id"]] = raw
            else:
                sections[name] = value
    return Side(compiled, sections, routes)


# --- comparing ------------------------------------------------------------------------------


class Differ:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def add(self, severity: str, route: str | None, field: str, message: str, old: Any = None,
            new: Any = None) -> None:
        self.changes.append(Change(severity, route, field, message, _plain(old), _plain(new)))

    def sets(self, route: str | None, field: str, old: Any, new: Any, more: str = WEAKENED,
             what: str = "") -> None:
        """Set-valued field: additions move one way, removals the other."""
        o, n = set(_list(old)), set(_list(new))
        less = TIGHTENED if more == WEAKENED else WEAKENED
        label = what or field
        if n - o:
            self.add(more, route, field, f"{label}: added {', '.join(sorted(map(str, n - o)))}", old, new)
        if o - n:
            self.add(less, route, field, f"{label}: removed {', '.join(sorted(map(str, o - n)))}", old, new)

    def number(self, route: str | None, field: str, old: Any, new: Any, higher: str = WEAKENED,
               what: str = "") -> None:
        """Numeric field (None = unlimited)."""
        o = INF if old is None else float(old)
        n = INF if new is None else float(new)
        if o == n:
            return
        lower = TIGHTENED if higher == WEAKENED else WEAKENED
        verb = "raised" if n > o else "lowered"
        self.add(higher if n > o else lower, route, field,
                 f"{what or field} {verb}: {_show(old)} -> {_show(new)}", old, new)

    def value(self, route: str | None, field: str, old: Any, new: Any, severity: str = CHANGED,
              what: str = "") -> None:
        if _plain(old) != _plain(new):
            self.add(severity, route, field, f"{what or field}: {_show(old)} -> {_show(new)}", old, new)


def _plain(v: Any) -> Any:
    if isinstance(v, frozenset | set):
        return sorted(v)
    if hasattr(v, "model_dump"):
        return v.model_dump()
    return v


def _list(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return list(v)


def _show(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, list | tuple | set | frozenset):
        return "[" + ", ".join(map(str, sorted(v, key=str))) + "]"
    return str(v)


def _windows(limits: Any) -> dict[int, int]:
    """`"20/second; 600/minute"` -> {1: 20, 60: 600} (window seconds -> amount)."""
    if not isinstance(limits, str):
        return {}
    out: dict[int, int] = {}
    for item in parse_many(limits):
        seconds = item.get_expiry()
        out[seconds] = min(out.get(seconds, item.amount), item.amount)
    return out


AUTH_RANK = {"jwt": 2, "webhook": 1, "none": 0}
TENANT_RANK = {"require": 2, "verify": 1, "rewrite": 1}


def diff(old: Side, new: Side) -> list[Change]:
    d = Differ()
    _gateway_wide(d, old, new)
    old_routes = {r.id: r for r in old.compiled.routes}
    new_routes = {r.id: r for r in new.compiled.routes}
    for rid in sorted(new_routes.keys() - old_routes.keys()):
        r = new_routes[rid]
        where = f"{','.join(sorted(r.methods - {'HEAD'}))} {r.template.text}"
        if r.auth == "none":
            d.add(WEAKENED, rid, "route", f"new public route (auth: none): {where}")
        else:
            d.add(CHANGED, rid, "route", f"new route (auth: {r.auth}): {where}")
    for rid in sorted(old_routes.keys() - new_routes.keys()):
        r = old_routes[rid]
        d.add(TIGHTENED, rid, "route", f"route removed: {','.join(sorted(r.methods - {'HEAD'}))} {r.template.text}")
    for rid in sorted(old_routes.keys() & new_routes.keys()):
        _route(d, rid, old_routes[rid], new_routes[rid], old, new)
    order = {WEAKENED: 0, CHANGED: 1, TIGHTENED: 2}
    return sorted(d.changes, key=lambda c: (c.route is not None, c.route or "", order[c.severity]))


def _route(d: Differ, rid: str, o: Any, n: Any, old: Side, new: Side) -> None:
    ro, rn = old.routes.get(rid, {}), new.routes.get(rid, {})
    if o.auth != n.auth:
        sev = WEAKENED if AUTH_RANK[n.auth] < AUTH_RANK[o.auth] or n.auth == "none" else (
            TIGHTENED if AUTH_RANK[n.auth] > AUTH_RANK[o.auth] else CHANGED)
        d.add(sev, rid, "auth", f"auth: {o.auth} -> {n.auth}", o.auth, n.auth)
    d.sets(rid, "methods", o.methods - {"HEAD"}, n.methods - {"HEAD"})
    d.value(rid, "path", o.template.text, n.template.text)
    d.value(rid, "upstream_path", o.upstream_template.text, n.upstream_template.text)
    _tenant(d, rid, ro.get("tenant"), rn.get("tenant"))
    _roles(d, rid, o.roles, n.roles)
    if o.scopes != n.scopes:
        d.sets(rid, "scopes", o.scopes, n.scopes, more=TIGHTENED, what="required scopes")
    _rate(d, rid, _effective_rate(ro, old), _effective_rate(rn, new))
    d.number(rid, "max_body_bytes", o.max_body_bytes, n.max_body_bytes, what="body cap")
    for name in ("connect_timeout", "total_timeout", "body_read_timeout"):
        d.number(rid, name, getattr(o, name), getattr(n, name), what=name.replace("_", " "))
    if o.forward_token != n.forward_token:
        d.add(WEAKENED if n.forward_token else TIGHTENED, rid, "forward_token",
              f"forward_token: {o.forward_token} -> {n.forward_token} (the client's token "
              f"{'is' if n.forward_token else 'is no longer'} sent upstream)")
    co, cn = ro.get("cors") or {}, rn.get("cors") or {}
    d.sets(rid, "cors.allow_origins", co.get("allow_origins"), cn.get("allow_origins"), what="CORS origins")
    _webhook(d, rid, ro.get("webhook"), rn.get("webhook"))


def _tenant(d: Differ, rid: str, o: Any, n: Any) -> None:
    if o == n:
        return
    if not n:
        d.add(WEAKENED, rid, "tenant", "tenant binding removed", o, n)
        return
    if not o:
        d.add(TIGHTENED, rid, "tenant", "tenant binding added", o, n)
        return
    for loc in ("path", "query"):
        if o.get(loc) != n.get(loc):
            if o.get(loc) and not n.get(loc):
                d.add(WEAKENED, rid, f"tenant.{loc}", f"tenant binding of the {loc} ({o[loc]}) removed", o, n)
            elif n.get(loc) and not o.get(loc):
                d.add(TIGHTENED, rid, f"tenant.{loc}", f"tenant binding of the {loc} ({n[loc]}) added", o, n)
            else:
                d.value(rid, f"tenant.{loc}", o.get(loc), n.get(loc), what=f"tenant {loc} parameter")
    d.sets(rid, "tenant.body", o.get("body"), n.get("body"), more=TIGHTENED, what="tenant-bound body fields")
    mo, mn = o.get("mode"), n.get("mode")
    if mo != mn:
        ro, rn = TENANT_RANK.get(mo, 0), TENANT_RANK.get(mn, 0)
        sev = WEAKENED if rn < ro else TIGHTENED if rn > ro else CHANGED
        d.add(sev, rid, "tenant.mode", f"tenant mode: {mo} -> {mn}" + (" (loosened)" if sev == WEAKENED else ""),
              mo, mn)


def _roles(d: Differ, rid: str, o: Any, n: Any) -> None:
    if o == n:
        return
    if n is None:
        d.add(WEAKENED, rid, "roles", f"roles widened: {_show(o)} -> any role", o, n)
    elif o is None:
        d.add(TIGHTENED, rid, "roles", f"roles required: {_show(n)}", o, n)
    elif n - o:
        d.add(WEAKENED, rid, "roles", f"roles widened: {_show(o)} -> {_show(n)}", o, n)
    else:
        d.add(TIGHTENED, rid, "roles", f"roles narrowed: {_show(o)} -> {_show(n)}", o, n)


def _effective_rate(raw_route: Mapping[str, Any], side: Side) -> dict[str, Any] | None:
    rule = raw_route.get("rate_limit")
    if rule is None:
        rule = (side.sections.get("rate_limits") or {}).get("default")
    return rule if isinstance(rule, dict) else None


def _rate(d: Differ, rid: str, o: dict[str, Any] | None, n: dict[str, Any] | None) -> None:
    if o == n:
        return
    if n is None:
        d.add(WEAKENED, rid, "rate_limit", f"rate limit removed (was {o.get('limits') if o else None})", o, n)
        return
    if o is None:
        d.add(TIGHTENED, rid, "rate_limit", f"rate limit added: {n.get('limits')}", o, n)
        return
    wo, wn = _windows(o.get("limits")), _windows(n.get("limits"))
    for seconds in sorted(wo.keys() | wn.keys()):
        d.number(rid, "rate_limit.limits", wo.get(seconds), wn.get(seconds),
                 what=f"rate limit per {seconds} s")
    d.value(rid, "rate_limit.key", o.get("key", "ip"), n.get("key", "ip"), what="rate-limit key")
    d.value(rid, "rate_limit.strategy", o.get("strategy"), n.get("strategy"), what="rate-limit strategy")


def _webhook(d: Differ, rid: str, o: Any, n: Any) -> None:
    if o == n or not (o or n):
        return
    if not (o and n):
        d.add(WEAKENED if o else TIGHTENED, rid, "webhook", "webhook verification " + ("removed" if o else "added"))
        return
    if o.get("type") != n.get("type"):
        d.add(WEAKENED, rid, "webhook.type", f"webhook verification changed: {o.get('type')} -> {n.get('type')}",
              o.get("type"), n.get("type"))
    so, sn = o.get("source_ips"), n.get("source_ips")
    if so != sn:
        if sn == "any":
            d.add(WEAKENED, rid, "webhook.source_ips", f"webhook source addresses: {_show(so)} -> any", so, sn)
        elif so == "any":
            d.add(TIGHTENED, rid, "webhook.source_ips", f"webhook source addresses: any -> {_show(sn)}", so, sn)
        else:
            d.sets(rid, "webhook.source_ips", so, sn, what="webhook source addresses")
    if o.get("dedupe", {}) is not False and n.get("dedupe", {}) is False:
        d.add(WEAKENED, rid, "webhook.dedupe", "webhook replay protection (dedupe) turned off")
    elif o.get("dedupe", {}) is False and n.get("dedupe", {}) is not False:
        d.add(TIGHTENED, rid, "webhook.dedupe", "webhook replay protection (dedupe) turned on")
    for key in sorted((o.keys() | n.keys()) - {"type", "source_ips", "dedupe"}):
        if key in ("tolerance_seconds", "max_body_bytes"):
            d.number(rid, f"webhook.{key}", o.get(key), n.get(key), what=f"webhook {key}")
        else:
            d.value(rid, f"webhook.{key}", o.get(key), n.get(key), severity=WEAKENED, what=f"webhook {key}")


def _gateway_wide(d: Differ, old: Side, new: Side) -> None:
    jo = ((old.sections.get("auth") or {}).get("jwt")) or {}
    jn = ((new.sections.get("auth") or {}).get("jwt")) or {}
    d.sets(None, "auth.jwt.algorithms", jo.get("algorithms"), jn.get("algorithms"), what="JWT algorithms")
    for key in ("issuer", "audience"):
        if jo.get(key) != jn.get(key):
            sev = WEAKENED if not jn.get(key) else CHANGED
            d.value(None, f"auth.jwt.{key}", jo.get(key), jn.get(key), severity=sev, what=f"JWT {key}")
    d.number(None, "auth.jwt.leeway_seconds", jo.get("leeway_seconds", 30), jn.get("leeway_seconds", 30),
             what="JWT clock leeway")
    d.number(None, "auth.jwt.max_age_seconds", jo.get("max_age_seconds"), jn.get("max_age_seconds"),
             what="JWT maximum age")
    d.number(None, "auth.jwt.max_token_bytes", jo.get("max_token_bytes", 8192), jn.get("max_token_bytes", 8192),
             what="JWT size cap")
    d.sets(None, "auth.jwt.required_claims", jo.get("required_claims", ["exp", "sub"]),
           jn.get("required_claims", ["exp", "sub"]), more=TIGHTENED, what="required claims")
    d.sets(None, "auth.jwt.roles", jo.get("roles") or DEFAULT_ROLES, jn.get("roles") or DEFAULT_ROLES,
           what="declared roles")
    for key, default in (("org_claim", "org_id"), ("role_claim", "org_role"), ("scope_claim", "scope")):
        d.value(None, f"auth.jwt.{key}", jo.get(key, default), jn.get(key, default), what=f"JWT {key}")
    co, cn = old.sections.get("cors") or {}, new.sections.get("cors") or {}
    d.sets(None, "cors.allow_origins", co.get("allow_origins"), cn.get("allow_origins"), what="CORS origins")
    if bool(co.get("allow_credentials")) != bool(cn.get("allow_credentials")):
        d.add(WEAKENED if cn.get("allow_credentials") else TIGHTENED, None, "cors.allow_credentials",
              f"CORS credentials: {bool(co.get('allow_credentials'))} -> {bool(cn.get('allow_credentials'))}")
    for key in ("allow_methods", "allow_headers", "expose_headers"):
        d.sets(None, f"cors.{key}", co.get(key), cn.get(key), what=f"CORS {key}")
    d.sets(None, "trusted_proxies", old.compiled.trusted_proxies, new.compiled.trusted_proxies,
           what="trusted proxies")
    lo, ln = old.compiled.limits, new.compiled.limits
    for key in type(lo).model_fields:
        d.number(None, f"limits.{key}", getattr(lo, key), getattr(ln, key), what=f"limits.{key}")
    d.value(None, "upstream.url", old.compiled.upstream.url, new.compiled.upstream.url, what="upstream URL")
    ao, an = old.sections.get("audit") or {}, new.sections.get("audit") or {}
    if ao.get("on_failure", "continue") != an.get("on_failure", "continue"):
        d.add(WEAKENED if an.get("on_failure", "continue") == "continue" else TIGHTENED, None, "audit.on_failure",
              f"audit on_failure: {ao.get('on_failure', 'continue')} -> {an.get('on_failure', 'continue')}")
    ro, rn = old.sections.get("rate_limits") or {}, new.sections.get("rate_limits") or {}
    for key in sorted((ro.keys() | rn.keys()) - {"default"}):
        d.value(None, f"rate_limits.{key}", ro.get(key), rn.get(key), what=f"rate_limits.{key}")


# --- command ------------------------------------------------------------------------------------


def render(changes: list[Change], old: str, new: str) -> str:
    counts = {s: sum(c.severity == s for c in changes) for s in (WEAKENED, TIGHTENED, CHANGED)}
    lines = [f"policy diff {old} -> {new}: {counts[WEAKENED]} weakened, {counts[TIGHTENED]} tightened, "
             f"{counts[CHANGED]} changed"]
    current: object = object()
    for c in changes:
        if c.route != current:
            current = c.route
            lines.append("")
            lines.append("gateway-wide" if c.route is None else f"route {c.route}")
        lines.append(f"  {c.severity.upper():10} {c.message}")
    if not changes:
        lines.append("no security-relevant change")
    return "\n".join(lines)


def diff_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gateway diff", description="Compare two policies in security terms (directories or git "
        "revisions such as main, HEAD~1, origin/main:policies). Exit 1 if anything is weakened.")
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--json", action="store_true", help="machine-readable output for CI bots")
    args = parser.parse_args(argv)
    from gateway.settings import effective_env, load_settings_quietly

    settings = load_settings_quietly()
    env = effective_env(settings) if settings is not None else dict(os.environ)
    default_path = settings.policy_dir if settings is not None else "./policies"
    try:
        with policy_dir(args.old, default_path) as od:
            old = load_side(od, env)
        with policy_dir(args.new, default_path) as nd:
            new = load_side(nd, env)
    except DiffError as exc:
        print(f"gateway diff: {exc}", file=sys.stderr)
        return 2
    changes = diff(old, new)
    weakened = any(c.severity == WEAKENED for c in changes)
    if args.json:
        print(json.dumps({"old": args.old, "new": args.new, "weakened": weakened,
                          "summary": {s: sum(c.severity == s for c in changes) for s in (WEAKENED, TIGHTENED, CHANGED)},
                          "changes": [asdict(c) for c in changes]}, indent=2, default=str))
    else:
        print(render(changes, args.old, args.new))
    return 1 if weakened else 0
