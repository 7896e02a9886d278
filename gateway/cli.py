"""`gateway` command line: serve, check, routes, token, audit verify, explain, test-policy, openapi."""

from __future__ import annotations

import argparse
import json
import os
import sys

from gateway.errors import PolicyError
from gateway.settings import effective_env


def _warn_unknown_variables(policy_dir: str) -> None:
    from gateway.preflight import referenced_variables
    from gateway.settings import unknown_variable_warnings

    for line in unknown_variable_warnings(referenced=referenced_variables(policy_dir)):
        print(f"gateway: warning: {line}", file=sys.stderr)


def _port_problem(host: str, port: int, variable: str) -> str | None:
    """Whether the listener can be bound, asked before anything starts (no OSError traceback)."""
    import errno
    import socket

    if not 0 < port < 65536:
        return f"{variable}: {port} is not a TCP port (1-65535)"
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        why = "already in use by another process" if exc.errno == errno.EADDRINUSE else exc.strerror
        return f"{variable}: cannot listen on {host}:{port}: {why}"
    except (OverflowError, ValueError) as exc:  # e.g. a host that is not an address
        return f"{variable}: cannot listen on {host}:{port}: {exc}"
    return None


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.preflight import SetupError, load_settings, preflight
    from gateway.server import serve

    try:
        settings = load_settings()
        _warn_unknown_variables(settings.policy_dir)
        preflight(settings)
    except SetupError as exc:
        for p in exc.problems:
            print(f"gateway: refusing to start: {p}", file=sys.stderr)
        if exc.policy_errors:
            print(f"gateway: refusing to start: {exc.policy_errors} policy error(s)", file=sys.stderr)
        return 2
    for host, port, variable in ((settings.host, settings.port, "GATEWAY_PORT"),
                                 (settings.admin_host, settings.admin_port, "GATEWAY_ADMIN_PORT")):
        problem = _port_problem(host, port, variable)
        if problem:
            print(f"gateway: refusing to start: {problem}", file=sys.stderr)
            return 2
    if settings.workers > 1 and not settings.redis_url:
        # Not an error (one host, no Redis is a valid setup), but operators must know.
        print(f"gateway: warning: {settings.workers} workers without GATEWAY_REDIS_URL: rate limits, "
              "brute-force counts and webhook replay state are per worker (limits are effectively "
              f"x{settings.workers}); set GATEWAY_REDIS_URL to share them", file=sys.stderr)
    try:
        return serve(settings)
    except OSError as exc:  # the port was taken between the check and the bind
        print(f"gateway: refusing to start: cannot listen on {settings.host}:{settings.port} or admin "
              f"{settings.admin_host}:{settings.admin_port} (GATEWAY_PORT / GATEWAY_ADMIN_PORT): "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2


def _load(args: argparse.Namespace) -> object:
    from gateway.policy.loader import load_policy
    from gateway.preflight import load_settings

    settings = load_settings()
    directory = args.dir or settings.policy_dir
    return load_policy(directory, effective_env(settings), settings.production)


def _cmd_check(args: argparse.Namespace) -> int:
    """Build what `serve` builds from the policy and this environment; print the effective set-up."""
    from gateway.preflight import SetupError, load_settings, preflight

    try:
        settings = load_settings()
        directory = args.dir or settings.policy_dir
        _warn_unknown_variables(directory)
        setup = preflight(settings, directory)
    except SetupError as exc:
        for line in exc.problems:
            print(line)
        print(f"gateway check: {len(exc.problems)} error(s); `serve` would refuse to start", file=sys.stderr)
        return 2
    policy = setup.policy
    print(f"OK: {len(policy.routes)} routes, policy digest {policy.digest}")
    for name, value in setup.describe():
        print(f"  {name:16} {value}")
    return 0


def _cmd_routes(args: argparse.Namespace) -> int:
    try:
        policy = _load(args)
    except PolicyError as exc:
        for line in exc.errors:
            print(line)
        return 2
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
    from gateway.preflight import load_settings

    settings = load_settings()
    if settings.production:
        print("gateway token: refused: development tokens are not minted when GATEWAY_ENV=production",
              file=sys.stderr)
        return 2
    from gateway.auth import mint_dev_token

    secret = settings.effective_jwt_secret()
    if secret is None:
        print("gateway token: no HS256 secret (GATEWAY_JWT_SECRET) to sign with", file=sys.stderr)
        return 2
    import os

    # Claims where the policy reads them (GATEWAY_JWT_ORG_CLAIM, e.g. app_metadata.org_id).
    org_path = os.environ.get("GATEWAY_JWT_ORG_CLAIM") or "org_id"
    role_path = os.environ.get("GATEWAY_JWT_ROLE_CLAIM") or "org_role"
    extra: dict[str, object] = {}
    if org_path != "org_id" or role_path != "org_role":
        _set_path(extra, org_path, args.org)
        _set_path(extra, role_path, args.role)
    print(mint_dev_token(secret, args.sub, args.org, role=args.role, ttl=args.ttl,
                         issuer=settings.jwt_issuer, audience=settings.jwt_audience, extra=extra))
    return 0


def _set_path(claims: dict[str, object], path: str, value: object) -> None:
    node = claims
    *parents, last = path.split(".")
    for name in parents:
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            return
        node = child
    node[last] = value


MAX_DEV_TTL = 7 * 24 * 3600


def _not_blank(text: str) -> str:
    # The gateway reads a blank sub or org claim as missing (claims.claim_text): such a token
    # would be refused on every route, so it is not minted.
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank (the gateway reads a blank claim as missing)")
    return text


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if not 1 <= value <= MAX_DEV_TTL:
        raise argparse.ArgumentTypeError(f"{value} is out of range (1 to {MAX_DEV_TTL} seconds)")
    return value


# Subcommands that parse their own arguments (argparse.REMAINDER would swallow neither a leading
# `--help` nor leading options, so they are dispatched before the top-level parser).
PASSTHROUGH = {"explain": "gateway.explain:explain_main", "test-policy": "gateway.policytest:policytest_main",
               "audit": "gateway.audit:audit_verify_main", "openapi": "gateway.openapi.command:openapi_main"}
PASSTHROUGH["diff"] = "gateway.policydiff:diff_main"


def main(argv: list[str] | None = None) -> int:
    """The `gateway` command. A reader that goes away early (`gateway routes | head`) ends the
    command quietly, with no traceback: output nobody reads is not an error of the user's."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's own last flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        module, func = PASSTHROUGH[argv[0]].split(":")
        result: int = getattr(importlib.import_module(module), func)(argv[1:])
        return result
    parser = argparse.ArgumentParser(prog="gateway", description="security-hardening API gateway")
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("serve", help="run the gateway (default)")
    p = sub.add_parser("check", help="build what `serve` builds from the policy and this environment, print "
                                     "the effective set-up; exit 2 on any problem")
    p.add_argument("dir", nargs="?")
    p = sub.add_parser("routes", help="print the compiled route table")
    p.add_argument("dir", nargs="?")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("token", help="mint a development token (refused in production)")
    p.add_argument("--sub", required=True, type=_not_blank)
    p.add_argument("--org", required=True, type=_not_blank)
    p.add_argument("--role", default="member", choices=["owner", "admin", "member", "viewer"])
    p.add_argument("--ttl", type=_ttl, default=3600, help="lifetime in seconds (1 to 7 days)")
    p = sub.add_parser("audit", help="audit log tools: `gateway audit verify FILE`")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("explain", help="run one request through the pipeline in process and say why it "
                                       "is allowed or denied (`gateway explain --help`)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("diff", help="compare two policies (dirs or git revisions) in security terms; "
                                    "exit 1 if anything weakens (`gateway diff --help`)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("openapi", help="generate or check the public OpenAPI document (`gateway openapi --help`)",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("test-policy", help="run YAML policy tests (default: <policy dir>/tests)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    from gateway.preflight import SetupError

    try:
        return _dispatch(args)
    except SetupError as exc:  # a malformed GATEWAY_* variable, from any command
        for line in exc.problems:
            print(f"gateway: {line}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    handlers = {None: _cmd_serve, "serve": _cmd_serve, "check": _cmd_check, "routes": _cmd_routes,
                "token": _cmd_token}  # audit, explain, test-policy: see PASSTHROUGH
    return handlers[args.cmd](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
