"""The set-up `serve` builds, built without serving: `gateway check` and `gateway serve` share it.

    load_settings()   the environment as Settings, or SetupError naming each bad GATEWAY_* variable
    preflight()       policy + key sources + verifier + identity signer + Redis URL + audit sink +
                      production rules; SetupError with one line per problem, or a Setup whose
                      `describe()` is the effective set-up `gateway check` prints

Everything `Gateway.__init__` would refuse is refused here first, with the same one-line message,
so a set-up that passes `check` starts, and `serve` never shows a traceback for a problem a user
can fix. Nothing here touches the network.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from gateway.auth.config import JwtConfigError, JwtPolicy
from gateway.auth.identity import IdentitySigner
from gateway.auth.keys import StaticKeySet
from gateway.auth.sources import build_verifier, describe
from gateway.errors import PolicyError
from gateway.policy.compiled import CompiledPolicy
from gateway.settings import Settings, effective_env, guessable_secret, key_sources


class SetupError(Exception):
    """The set-up cannot serve; `problems` are one-line messages naming what to fix."""

    def __init__(self, problems: list[str], policy_errors: int = 0) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.policy_errors = policy_errors


def load_settings() -> Settings:
    """Settings from the environment; a malformed value names its variable (no traceback)."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "GATEWAY_" + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
        raise SetupError(lines) from None


def effective_jwt_policy(policy: CompiledPolicy, settings: Settings) -> JwtPolicy | None:
    """`auth.jwt` of the policy, with the environment's issuer / audience where the policy is silent."""
    auth = policy.sections.get("compiled.auth")
    jwt: JwtPolicy | None = getattr(auth, "jwt", None)
    if jwt is None:
        return None
    updates: dict[str, object] = {}
    if not jwt.issuer:
        updates["issuer"] = settings.jwt_issuer or None
    if not jwt.audience and settings.jwt_audience:
        updates["audience"] = settings.jwt_audience
    return jwt.model_copy(update=updates) if updates else jwt


@dataclass
class Setup:
    """A set-up that passed every check, and what it will do."""

    settings: Settings
    policy: CompiledPolicy
    jwt: JwtPolicy | None
    policy_dir: str
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> list[tuple[str, str]]:
        s, p, jwt = self.settings, self.policy, self.jwt
        kinds: dict[str, int] = {}
        for r in p.routes:
            kinds[r.auth] = kinds.get(r.auth, 0) + 1
        out = [
            ("environment", s.env),
            ("policy", f"{self.policy_dir}: {len(p.routes)} routes ("
                       + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + f"), digest {p.digest}"),
            ("upstream", p.upstream.url),
        ]
        if jwt is not None:
            out.append(("jwt keys", "; ".join(describe(jwt, key_sources(s)))))
            aud = jwt.audience if jwt.audience is not None else "(none)"
            out.append(("jwt issuer", f"{jwt.issuer or '(not checked)'}; audience {aud}"))
            roles = ", ".join(jwt.roles)
            out.append(("claims", f"org {jwt.org_claim}, role {jwt.role_claim} (declared roles: {roles})"))
        else:
            out.append(("jwt", "no auth.jwt section"))
        out.append(("shared state", f"Redis {_redact(s.redis_url)}" if s.redis_url
                    else "in process (one replica: limits and webhook replay state are not shared)"))
        out.append(("audit sink", s.audit_log or "stdout"))
        proxies = [*s.trusted_proxies.replace(",", " ").split(), *p.trusted_proxies]
        out.append(("trusted proxies", ", ".join(proxies) or "none (X-Forwarded-For ignored)"))
        cors = p.sections.get("compiled.cors")
        origins = getattr(cors, "allow_origins", None)
        out.append(("cors origins", ", ".join(origins) if origins else "none"))
        out.append(("listen", f"{s.host}:{s.port} (admin {s.admin_host}:{s.admin_port}), "
                              f"{s.workers} worker(s)"))
        return out


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


_POLICY_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def referenced_variables(policy_dir: str) -> set[str]:
    """Variables the policy files name in `${VAR}` (so setting them is not a typo)."""
    names: set[str] = set()
    d = Path(policy_dir)
    if not d.is_dir():
        return names
    for p in d.iterdir():
        if p.suffix in (".yaml", ".yml") and p.is_file():
            try:
                names.update(_POLICY_VAR.findall(p.read_text(encoding="utf-8", errors="replace")))
            except OSError:
                continue
    return names


def preflight(settings: Settings, policy_dir: str | None = None,
              environ: Mapping[str, str] | None = None) -> Setup:
    """Build and check everything serve would, or raise SetupError listing every problem."""
    directory = policy_dir or settings.policy_dir
    env = effective_env(settings, None if environ is None else dict(environ))
    problems = list(settings.problems())
    for extra in (settings.jwks_problem(), settings.redis_problem(), _audit_problem(settings),
                  _access_log_problem(settings)):
        if extra:
            problems.append(extra)
    policy: CompiledPolicy | None = None
    n_policy = 0
    try:
        policy = _load(directory, env, settings.production)
    except PolicyError as exc:
        problems.extend(exc.errors)
        n_policy = len(exc.errors)
    jwt = None
    if policy is not None:
        jwt = effective_jwt_policy(policy, settings)
        if jwt is not None and not settings.jwks_problem():
            sources = key_sources(settings)
            try:
                build_verifier(jwt, sources, StaticKeySet({}) if sources.jwks_url else None)
            except JwtConfigError as exc:
                problems.append(str(exc))
        if not any(p.startswith("GATEWAY_IDENTITY_SECRET") for p in problems):
            try:
                IdentitySigner(settings.effective_identity_secret(), audience=policy.upstream.name)
            except ValueError as exc:
                problems.append(f"GATEWAY_IDENTITY_SECRET: {exc}")
        if settings.production:
            problems.extend(_webhook_secret_problems(policy, env, settings))
    if problems:
        raise SetupError(problems, n_policy)
    assert policy is not None  # noqa: S101 - for the type checker; problems is empty only with a policy
    return Setup(settings, policy, jwt, directory)


def _load(directory: str, env: Mapping[str, str], production: bool) -> CompiledPolicy:
    from gateway.policy.loader import load_policy

    try:
        return load_policy(directory, env, production)
    except OSError as exc:
        raise PolicyError([f"{exc.filename or directory}: cannot read policy ({exc.strerror})"]) from None


def _log_file_problem(name: str, target: str) -> str | None:
    """A file the gateway appends to: its directory exists and is writable, and the path is not
    a directory itself (that passed `check` and then failed every write)."""
    path = Path(target).expanduser().resolve()
    if path.is_dir():
        return f"{name}: {path} is a directory; name a file in it"
    if not path.parent.is_dir():
        return f"{name}: directory {path.parent} does not exist"
    if not os.access(path.parent, os.W_OK):
        return f"{name}: directory {path.parent} is not writable"
    return None


def _audit_problem(settings: Settings) -> str | None:
    if not settings.audit_log:
        return None
    return (_log_file_problem("GATEWAY_AUDIT_LOG", settings.audit_log)
            or (_log_file_problem("GATEWAY_AUDIT_CHECKPOINTS", settings.audit_checkpoints)
                if settings.audit_checkpoints else None))


def _access_log_problem(settings: Settings) -> str | None:
    target = getattr(settings, "access_log", None)
    if not target or target in ("stdout", "stderr", "off", "-"):
        return None
    return _log_file_problem("GATEWAY_ACCESS_LOG", target)


def _webhook_secret_problems(policy: CompiledPolicy, env: Mapping[str, str], settings: Settings) -> list[str]:
    """Production: webhook secrets must not be guessable, nor reuse the identity / JWT key."""
    out: list[str] = []
    seen: set[str] = set()
    for route in policy.routes:
        names: Any = getattr(route.webhook, "secret_vars", ())
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            value = env.get(name) or ""
            if not value:
                continue  # reported by the webhook compiler
            why = guessable_secret(value)
            if why is not None:
                out.append(f"{name} {why}; refused in production")
            if settings.identity_secret and value == settings.identity_secret:
                out.append(f"GATEWAY_IDENTITY_SECRET equals {name}; each key must be distinct "
                           "(refused in production)")
            if settings.jwt_secret and value == settings.jwt_secret:
                out.append(f"GATEWAY_JWT_SECRET equals {name}; each key must be distinct (refused in production)")
    return out
