"""Request body validation against the operation's schema, compiled once at policy load.

Validator chosen by measurement (`tests/openapi/bench_validate.py`, a typical 200-byte agent body):
jsonschema-rs (Rust) ~2 µs valid / ~3 µs collecting errors, fastjsonschema ~8 µs (and it stops at
the first error, so it cannot name every failing field), jsonschema ~70 µs. Messages are built
from the error kind, never from the value: a refused field may be a credential.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema_rs

MAX_ERRORS = 10
_NAME_MAX = 64


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= _NAME_MAX else text[:_NAME_MAX] + "..."


def schema_message(kind: Any) -> str:
    name = kind.name
    info = kind.as_dict()
    limit = info.get("limit")
    if name == "type":
        return "must be of type " + " or ".join(info.get("types") or ["?"])
    if name == "required":
        return "is required"
    if name == "additionalProperties":
        return "unexpected property " + ", ".join(repr(_short(u)) for u in (info.get("unexpected") or [])[:3])
    if name == "minLength":
        return f"must be at least {limit} characters"
    if name == "maxLength":
        return f"must be at most {limit} characters"
    if name == "pattern":
        return f"must match the pattern {info.get('pattern')}"
    if name == "enum":
        return "must be one of " + ", ".join(_short(o) for o in (info.get("options") or []))
    if name == "const":
        return f"must be {_short(info.get('expected_value'))!s}"
    if name in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        word = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[name]
        return f"must be {word} {limit}"
    if name in ("minItems", "maxItems", "minProperties", "maxProperties"):
        word = "at least" if name.startswith("min") else "at most"
        what = "items" if name.endswith("Items") else "properties"
        return f"must have {word} {limit} {what}"
    if name in ("anyOf", "oneOfNotValid"):
        return "does not match any of the allowed shapes"
    return f"fails the schema's {name} rule"


@dataclass(slots=True)
class BodyRule:
    """What one route checks about its JSON body."""

    validator: Any | None     # compiled jsonschema_rs validator; None: the body is not validated
    required: bool            # the operation requires a body
    json_only: bool           # the operation reads JSON only: any other media type is 415

    def errors(self, value: Any) -> list[dict[str, str]]:
        """At most MAX_ERRORS `{pointer, detail}` entries; empty when the value is valid."""
        if self.validator is None or self.validator.is_valid(value):
            return []
        out = []
        for err in self.validator.iter_errors(value):
            parts = list(err.instance_path)
            if err.kind.name == "required":
                parts.append(err.kind.as_dict().get("property", ""))
            out.append({"pointer": _pointer(parts), "detail": schema_message(err.kind)})
            if len(out) >= MAX_ERRORS:
                break
        return out


def compile_body_rule(schema: dict[str, Any] | None, required: bool, json_only: bool,
                      validate: bool) -> BodyRule:
    """Compile once; raises ValueError naming the problem when the schema itself is invalid."""
    validator = None
    if schema is not None and validate:
        try:
            validator = jsonschema_rs.validator_for(schema, validate_formats=False)
        except (ValueError, jsonschema_rs.ValidationError) as exc:  # invalid schema or bad $ref
            raise ValueError(f"the operation's request body schema does not compile: {exc}") from None
    return BodyRule(validator, required, json_only)
