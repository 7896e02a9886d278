"""The compiled tenant binding of one route, and the org claim lookup.

`compile_tenant(policy)` runs once at policy load; the request path only calls the binder's
methods, which raise typed errors (gateway.errors) to deny:

    TenantMismatch (403 tenant.mismatch)      the client named another org, or omitted a required one
    TenantMissingClaim (403 tenant.missing_claim)  the token carries no usable org claim
    Ambiguous (400 request.ambiguous)         the request has more than one reading
    BadRequest (400 request.bad_json), UnsupportedMediaType (415)   body not strict UTF-8 JSON

A bound JSON value that is not a string (`null`, `42`, `{}`) is a mismatch, not an ambiguity:
it is one reading, and it does not name the caller's org (`null` often means "all orgs").

The `rewritten` flag the bind methods return means "the client sent a different value and it
was replaced" (rewrite mode only): the stage audits it as `tenant.rewritten`. Injecting an
absent value is not a rewrite. Body paths are checked in policy order; the first refusal wins.
An absent array, or an absent object above one (`owner` of `owner.items[*].orgId`), has no
elements naming any org: nothing to bind in any mode, and the body is forwarded as it came.
"""

from __future__ import annotations

from typing import Any

from gateway.auth.claims import claim_text
from gateway.errors import Ambiguous, TenantMismatch, TenantMissingClaim
from gateway.tenant.body import dump, load_object
from gateway.tenant.policy import Mode, Step, TenantPolicy, parse_body_path
from gateway.tenant.query import QueryBinding, fold_name

_MISSING = object()


def org_from_claims(claims: dict[str, Any], dotted_path: str) -> str:
    """The org named by the verified claims at `dotted_path` (`org_id`, `app_metadata.org_id`),
    read by `gateway.auth.claims.claim_text` like every other stage."""
    org = claim_text(claims, dotted_path)
    if org is None:
        raise TenantMissingClaim(detail="the token carries no organisation")
    return org


class TenantBinder:
    """One route's tenant binding, compiled: path / query / body checks against the caller's org."""

    __slots__ = ("mode", "route_id", "path_param", "_query", "_body_paths", "_body_texts")

    def __init__(self, policy: TenantPolicy, route_id: str | None = None) -> None:
        self.mode: Mode = policy.mode
        self.route_id = route_id
        self.path_param = policy.path
        self._query = QueryBinding(policy.query, policy.mode, route_id) if policy.query else None
        self._body_texts = policy.body_paths()
        self._body_paths: tuple[tuple[Step, ...], ...] = tuple(parse_body_path(p) for p in self._body_texts)

    @property
    def needs_body(self) -> bool:
        """Whether the stage must buffer the request body and call `bind_body`."""
        return bool(self._body_paths)

    @property
    def binds_query(self) -> bool:
        return self._query is not None

    @property
    def binds_path(self) -> bool:
        return self.path_param is not None

    def check_path(self, path_params: dict[str, str], org: str) -> None:
        """A path can't be rewritten or injected, so every mode means "must equal"."""
        if self.path_param is None:
            return
        if path_params.get(self.path_param) != org:
            raise TenantMismatch(
                detail=f'path parameter "{self.path_param}" does not match your organisation',
                route_id=self.route_id,
            )

    def bind_query(self, query_string: bytes, org: str) -> tuple[bytes, bool]:
        """(raw query string to forward, whether a differing client value was rewritten)."""
        if self._query is None:
            return query_string, False
        return self._query.bind(query_string, org)

    def bind_body(self, body: bytes, content_type: bytes | None, org: str,
                  root: dict[str, Any] | None = None) -> tuple[bytes | None, bool]:
        """(new body, or None to forward the original bytes untouched; whether a value was rewritten).

        `root`, when given, is the body already parsed strictly (it is bound in place, so the
        caller's parsed copy stays the one forwarded)."""
        if not self._body_paths:
            return None, False
        if root is None:
            root = load_object(body, content_type, self.route_id)
        changed = rewritten = False
        for text, steps in zip(self._body_texts, self._body_paths, strict=True):
            c, r = self._bind(root, steps, 0, text, org)
            changed, rewritten = changed or c, rewritten or r
        return (dump(root) if changed else None), rewritten

    def _bind(
        self, obj: dict[str, Any], steps: tuple[Step, ...], i: int, text: str, org: str
    ) -> tuple[bool, bool]:
        name, is_array = steps[i]
        self._no_case_variant(obj, name, text)
        value = obj.get(name, _MISSING)
        last = i == len(steps) - 1
        if last:
            if isinstance(value, str) and value == org:
                return False, False
            if value is _MISSING:
                if self.mode == "require":
                    raise TenantMismatch(detail=f'body field "{text}" is required', route_id=self.route_id)
                obj[name] = org
                return True, False
            if self.mode != "rewrite":
                raise TenantMismatch(
                    detail=f'body field "{text}" does not match your organisation', route_id=self.route_id
                )
            obj[name] = org
            return True, True
        if is_array:
            # No array means no elements naming any org: nothing to bind, in every mode.
            if value is _MISSING:
                return False, False
            if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
                raise Ambiguous(
                    detail=f'body field "{text}": "{name}" must be a list of objects', route_id=self.route_id
                )
            changed = rewritten = False
            for element in value:
                c, r = self._bind(element, steps, i + 1, text, org)
                changed, rewritten = changed or c, rewritten or r
            return changed, rewritten
        if value is _MISSING:
            if any(array for _, array in steps[i + 1 :]):
                # An array below an absent object is absent too: no elements, nothing to bind, in
                # every mode (as for an absent array), and no empty parent added to the body.
                return False, False
            if self.mode == "require":
                raise TenantMismatch(detail=f'body field "{text}" is required', route_id=self.route_id)
            value = obj[name] = {}
            c, r = self._bind(value, steps, i + 1, text, org)
            return True, r
        if not isinstance(value, dict):
            # `"owner": null` or a string: not an object we can check or safely replace.
            raise Ambiguous(detail=f'body field "{text}": "{name}" must be an object', route_id=self.route_id)
        return self._bind(value, steps, i + 1, text, org)

    def _no_case_variant(self, obj: dict[str, Any], name: str, text: str) -> None:
        # `{"orgId": "a", "OrgId": "b"}`: a case-insensitive upstream binder may read the other one.
        folded = name.casefold()
        for key in obj:
            if key != name and not (key.isascii() and len(key) < len(name)) and fold_name(key) == folded:
                raise Ambiguous(
                    detail=f'body field "{text}": "{key}" is a variant of "{name}"', route_id=self.route_id
                )


def compile_tenant(policy: TenantPolicy, route_id: str | None = None) -> TenantBinder:
    """Build the binder once, at policy load (body paths parsed into step tuples here)."""
    return TenantBinder(policy, route_id)
