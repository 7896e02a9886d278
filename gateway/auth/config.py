"""The `auth.jwt` section of the policy file, validated once at load.

Threat model for the algorithm allowlist: the token header is attacker-controlled, so the set of
accepted algorithms comes from here and never from the token. `none` is refused in any casing.
The allowlist may name HMAC and asymmetric algorithms together (a migration from a shared secret to
signing keys accepts both for a while): each family is bound to its own key source
(`gateway.auth.sources`), HMAC only to `GATEWAY_JWT_SECRET` and asymmetric algorithms only to keys
of the JWKS, so the classic confusion attack (an HS256 token signed with the RSA/EC *public* key)
finds no key to succeed with.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512"})
OKP_ALGORITHMS = frozenset({"EdDSA"})
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS | EC_ALGORITHMS | OKP_ALGORITHMS
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS

# A claim path is dot-separated names; each name is a JSON object key without dots or spaces.
_CLAIM_PATH = re.compile(r"[A-Za-z0-9_:/\-]+(\.[A-Za-z0-9_:/\-]+)*")


# The shipped allowlist: whatever the configured key sources support (HS256 with the secret;
# RS256 / ES256 / EdDSA with keys of the JWKS). Also the default when a policy omits `algorithms`.
DEFAULT_ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
# Role values of the shipped policy (`auth.jwt.roles`).
DEFAULT_ROLES = ("owner", "admin", "member", "viewer")


class JwtConfigError(ValueError):
    """The verifier was built from inconsistent parts (e.g. HS256 allowed but no secret)."""


class JwtPolicy(BaseModel):
    """Policy for verifying user JWTs (`auth.jwt`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS), min_length=1)
    issuer: str | None = None
    audience: str | list[str] | None = None
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    max_age_seconds: int | None = Field(default=None, ge=1)
    max_token_bytes: int = Field(default=8192, ge=256, le=65536)
    org_claim: str = "org_id"
    role_claim: str = "org_role"
    scope_claim: str = "scope"
    jwks_refresh_seconds: int = Field(default=300, ge=5)
    jwks_cooldown_seconds: int = Field(default=30, ge=1)
    cache_size: int = Field(default=10000, ge=0, le=1_000_000)
    required_claims: list[str] = Field(
        default_factory=lambda: ["exp", "sub"], description="must include `exp` and `sub`")
    # Role values the team uses (default: the four of the token contract). Routes may only name
    # these; a token whose role claim is missing or not one of them is refused with
    # 403 authz.unknown_role on every JWT route.
    roles: list[str] = Field(default_factory=lambda: list(DEFAULT_ROLES))

    @field_validator("algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for alg in value:
            if alg.strip().lower() == "none":
                raise ValueError('"none" is never an acceptable algorithm')
            if alg not in SUPPORTED_ALGORITHMS:
                hint = next((a for a in SUPPORTED_ALGORITHMS if a.lower() == alg.lower()), None)
                extra = f' (did you mean "{hint}"?)' if hint else ""
                raise ValueError(f'unknown algorithm "{alg}"{extra}; allowed: {sorted(SUPPORTED_ALGORITHMS)}')
            if alg not in out:
                out.append(alg)
        return out

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("roles must list at least one role (or be omitted)")
        for role in value:
            if not isinstance(role, str) or not role.strip() or role != role.strip():
                raise ValueError(f"role {role!r} must be a non-empty name without surrounding spaces")
        if len(set(value)) != len(value):
            raise ValueError("roles lists a value twice")
        return value

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else (value or [])
        if value is not None and (not items or any(not a for a in items)):
            raise ValueError("audience must be a non-empty string or a non-empty list of them")
        return value

    @field_validator("org_claim", "role_claim", "scope_claim")
    @classmethod
    def _claim_path(cls, value: str) -> str:
        if not _CLAIM_PATH.fullmatch(value):
            raise ValueError(f'bad claim path "{value}" (expected names separated by dots)')
        return value

    @field_validator("required_claims")
    @classmethod
    def _required(cls, value: list[str]) -> list[str]:
        # `exp` is mandatory: a token without an expiry would be valid forever. `sub` too: the
        # identity sent upstream, per-user rate limits, the access log and the audit all name the
        # caller by it, and a token without one would be a user nobody can name.
        for claim in ("exp", "sub"):
            if claim not in value:
                raise ValueError(f'required_claims must include "{claim}"')
        if any(not c for c in value):
            raise ValueError("required_claims entries must be non-empty")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _cooldown(self) -> JwtPolicy:
        if self.jwks_cooldown_seconds > self.jwks_refresh_seconds:
            raise ValueError("jwks_cooldown_seconds must not exceed jwks_refresh_seconds")
        return self

    @property
    def uses_hmac(self) -> bool:
        return any(a in HMAC_ALGORITHMS for a in self.algorithms)

    @property
    def uses_asymmetric(self) -> bool:
        return any(a in ASYMMETRIC_ALGORITHMS for a in self.algorithms)

    @property
    def audiences(self) -> frozenset[str]:
        if self.audience is None:
            return frozenset()
        return frozenset([self.audience] if isinstance(self.audience, str) else self.audience)
