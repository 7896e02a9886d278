"""The `tenant:` section of a route, validated once at load.

    tenant:
      mode: verify            # verify | require | rewrite
      path: orgId             # path parameter name           (any combination of
      query: orgId            # query parameter name           the three locations,
      body: [orgId, items[*].orgId]   # JSON field paths        at least one)

Names are restricted to a plain character set on purpose: a bound name that itself needs
percent-encoding or quoting would give the attacker a second spelling of it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Mode = Literal["verify", "require", "rewrite"]

# One step of a compiled body path: (field name, whether it names an array whose every element
# is an object to descend into). `items[*].orgId` -> (("items", True), ("orgId", False)).
Step = tuple[str, bool]

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# No ".", "[", "]", "%", "+", ";", "&", "=" or spaces: each is a separator or an escape for some
# query parser, so a name containing one has several readings.
_QUERY_NAME = re.compile(r"[A-Za-z0-9_-]+")
_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)(\[\*\])?")
_EXAMPLES = 'dotted field names such as "orgId", "owner.orgId" or "items[*].orgId"'


def parse_body_path(text: str) -> tuple[Step, ...]:
    """Parse `owner.orgId` / `items[*].orgId` into steps; ValueError names what is wrong."""
    if not text:
        raise ValueError("body path must not be empty")
    steps: list[Step] = []
    for part in text.split("."):
        m = _FIELD.fullmatch(part)
        if m is None:
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*\[[^\]]*\]", part):
                raise ValueError(
                    f'body path "{text}": only "[*]" (every element) may follow an array name, '
                    f'not "{part[part.index("[") :]}"'
                )
            raise ValueError(f'body path "{text}": bad segment "{part}"; expected {_EXAMPLES}')
        steps.append((m.group(1), m.group(2) is not None))
    if steps[-1][1]:
        raise ValueError(f'body path "{text}": must end with a field name, not "[*]"')
    return tuple(steps)


class TenantPolicy(BaseModel):
    """Where a route carries `orgId` and what to do with it (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode
    path: str | None = None
    query: str | None = None
    body: list[str] | str | None = None

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: str | None) -> str | None:
        if v is not None and not _PARAM_NAME.fullmatch(v):
            raise ValueError(f'path parameter name "{v}" must match [A-Za-z_][A-Za-z0-9_]*')
        return v

    @field_validator("query")
    @classmethod
    def _check_query(cls, v: str | None) -> str | None:
        if v is not None and not _QUERY_NAME.fullmatch(v):
            raise ValueError(f'query parameter name "{v}" must match [A-Za-z0-9_-]+')
        return v

    @field_validator("body")
    @classmethod
    def _check_body(cls, v: list[str] | str | None) -> list[str] | None:
        if v is None:
            return None
        paths = [v] if isinstance(v, str) else list(v)
        if not paths:
            raise ValueError("body must list at least one field path (or be omitted)")
        seen: list[tuple[str, tuple[str, ...]]] = []
        for text in paths:
            names = tuple(name for name, _ in parse_body_path(text))
            for other, other_names in seen:
                short, long_ = sorted((names, other_names), key=len)
                # `orgId` + `orgId.x`, or `items[*].orgId` + `items.orgId`: the same field would
                # have to be a string and an object, or a list and an object, at once.
                if long_[: len(short)] == short:
                    raise ValueError(f'body paths "{other}" and "{text}" overlap')
            seen.append((text, names))
        return paths

    @model_validator(mode="after")
    def _some_location(self) -> TenantPolicy:
        # A `tenant:` section that binds nothing would read as protection and give none.
        if self.path is None and self.query is None and self.body is None:
            raise ValueError("tenant binding needs at least one location: path, query or body")
        return self

    def body_paths(self) -> list[str]:
        if self.body is None:
            return []
        return [self.body] if isinstance(self.body, str) else list(self.body)
