"""`gateway` command line: serve, check, routes, token, audit verify, explain, test-policy, openapi."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.errors import PolicyError
from gateway.settings import Settings, effective_env


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    settings = Settings()
    problems = settings.problems()
    if problems:
        for p in problems:
            print(f"gateway: refusing to start: {p}", file=sys.stderr)
        return 2
    try:
        from gateway.policy.loader import load_policy

        load_policy(settings.policy_dir, effective_env(settings), settings.production)
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"gateway: refusing to start: {len(exc.errors)} policy error(s)", file=sys.stderr)
        return 2
    if settings.workers > 1 and not settings.redis_url:
        # Not an error (one host, no Redis is a valid setup), but operators must know.
        print(f"gateway: warning: {settings.workers} workers without GATEWAY_REDIS_URL: rate limits, "
              "brute-force counts and webhook replay state are per worker (limits are effectively "
              f"x{settings.workers}); set GATEWAY_REDIS_URL to share them", file=sys.stderr)
    return serve(settings)


def _load(args: argparse.Namespace) -> object:
    from gateway.policy.loader import load_policy

    settings = Settings()
    directory = args.dir or settings.policy_dir
    return load_policy(directory, effective_env(settings), settings.production)


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        policy = _load(args)
    except PolicyError as exc:
        for line in exc.errors:
            print(line)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    print(f"OK: {len(policy.routes)} routes, policy digest {policy.digest}")  # type: ignore[attr-defined]
    return 0


def _cmd_routes(args: argparse.Namespace) -> int:
    try:
        policy = _load(args)
    except PolicyError as exc:
        for line in exc.errors:
            print(line)
        return 1
    rows = [r.describe() for r in policy.routes]  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':28} {'METHODS':18} {'PATH':44} {'UPSTREAM':34} AUTH     TENANT")
    for r in rows:
        tenant = r["tenant"] if isinstance(r["tenant"], str) else ("yes" if r["tenant"] else "-")
        print(f"{r['id']:28} {','.join(m for m in r['methods'] if m != 'HEAD'):18} {r['path']:44} "
              f"{r['upstream']:34} {r['auth']:8} {tenant}")
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    settings = Settings()
    if settings.production:
        print("gateway token: refused: development tokens are not minted when GATEWAY_ENV=production",
              file=sys.stderr)
        return 2
    from gateway.auth import mint_dev_token

    secret = settings.effective_jwt_secret()
    if secret is None:
        print("gateway token: no HS256 secret (GATEWAY_JWT_SECRET) to sign with", file=sys.stderr)
        return 2
    print(mint_dev_token(secret, args.sub, args.org, role=args.role, ttl=args.ttl,
                         issuer=settings.jwt_issuer, audience=settings.jwt_audience))
    return 0


# Subcommands that parse their own arguments (argparse.REMAINDER would swallow neither a leading
# `--help` nor leading options, so they are dispatched before the top-level parser).
PASSTHROUGH = {"explain": "gateway.explain:explain_main", "test-policy": "gateway.policytest:policytest_main",
               "audit": "gateway.audit:audit_verify_main", "openapi": "gateway.openapi.command:openapi_main"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        module, func = PASSTHROUGH[argv[0]].split(":")
        result: int = getattr(importlib.import_module(module), func)(argv[1:])
        return result
    parser = argparse.ArgumentParser(prog="gateway", description="security-hardening API gateway")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("serve", help="run the gateway (default)")
    p = sub.add_parser("check", help="validate a policy directory; exit 1 on any error")
    p.add_argument("dir", nargs="?")
    p = sub.add_parser("routes", help="print the compiled route table")
    p.add_argument("dir", nargs="?")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("token", help="mint a development token (refused in production)")
    p.add_argument("--sub", required=True)
    p.add_argument("--org", required=True)
    p.add_argument("--role", default="member", choices=["owner", "admin", "member", "viewer"])
    p.add_argument("--ttl", type=int, default=3600)
    p = sub.add_parser("audit", help="audit log tools: `gateway audit verify FILE`")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("explain", help="run one request through the pipeline in process and say why it "
                                       "is allowed or denied (`gateway explain --help`)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("openapi", help="generate or check the public OpenAPI document (`gateway openapi --help`)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("test-policy", help="run YAML policy tests (default: <policy dir>/tests)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    handlers = {None: _cmd_serve, "serve": _cmd_serve, "check": _cmd_check, "routes": _cmd_routes,
                "token": _cmd_token}  # audit, explain, test-policy: see PASSTHROUGH
    return handlers[args.cmd](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
