"""`gateway explain` on the command line: argument parsing, policy loading and exit codes."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from gateway.errors import PolicyError
from gateway.explain.model import ExplainRequest, UsageError
from gateway.explain.report import format_text
from gateway.explain.runner import run_requests
from gateway.policy.compiled import CompiledPolicy
from gateway.settings import Settings, effective_env


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway explain",
                                description="explain why the policy allows or denies one request")
    p.add_argument("--policy", help="policy directory (default: GATEWAY_POLICY_DIR)")
    p.add_argument("method")
    p.add_argument("url", help="path and query, e.g. '/v1/agents?orgId=org-a'")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--token", help="a bearer token, verified with the configured secret / JWKS")
    who.add_argument("--claims", help="JSON claims minted into a development token (not in production)")
    p.add_argument("--body", help="request body (JSON; Content-Type defaults to application/json)")
    p.add_argument("--origin")
    p.add_argument("--client-ip", default="203.0.113.10")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def request_from_args(args: argparse.Namespace) -> ExplainRequest:
    headers = []
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"-H expects 'Name: value' (got {raw.split(':')[0]!r}...)")
        headers.append((name.strip(), value.strip()))
    claims = None
    if args.claims is not None:
        try:
            claims = json.loads(args.claims)
        except ValueError:
            claims = None
        if not isinstance(claims, dict):
            raise UsageError("--claims must be a JSON object")
    body = None
    if args.body is not None:
        body = args.body.encode("utf-8", "surrogateescape")  # bytes that are not UTF-8 pass as given
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
    try:
        ipaddress.ip_address(args.client_ip)
    except ValueError:
        raise UsageError(f"--client-ip must be an IPv4 or IPv6 address (got {args.client_ip[:60]!r})") from None
    return ExplainRequest(args.method, args.url, headers, body, args.token, claims, args.origin, args.client_ip)


def load_for_cli(policy_dir: str | None) -> tuple[CompiledPolicy, Settings, dict[str, str]]:
    """Settings from the environment and the policy they name (or `policy_dir`); PolicyError on errors."""
    from gateway.policy.loader import load_policy

    settings = Settings()
    env = effective_env(settings)
    return load_policy(policy_dir or settings.policy_dir, env, settings.production), settings, env


def explain_main(argv: list[str]) -> int:
    """`gateway explain ...`: 0 allowed, 1 denied, 2 usage or policy errors."""
    import asyncio

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        req = request_from_args(args)
        policy, settings, env = load_for_cli(args.policy)
        (ex,) = asyncio.run(run_requests(policy, settings, env, [req]))
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"gateway explain: {len(exc.errors)} policy error(s)", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"gateway explain: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(ex.to_dict(), indent=2) if args.json else format_text(ex))
    return 0 if ex.allowed else 1
