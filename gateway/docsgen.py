"""Generated documentation: the policy reference (from the pydantic schema) and the reason catalogue.

    python -m gateway.docsgen          # rewrites docs/policy-reference.md and docs/reasons.md

`tests/test_docsgen.py` fails when either file is out of date, so the reference cannot drift from
the schema the loader enforces.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from gateway.policy.parts import AuthSection
from gateway.policy.schema import PolicyFile, RouteSpec
from gateway.reasons import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent


def _section_models() -> dict[tuple[type[BaseModel], str], Any]:
    """Sections and route keys typed `Any` in the file schema, with the model that validates them."""
    from gateway.cors import CorsOverride, CorsPolicy
    from gateway.ratelimit import RateLimitPolicy, RateLimitSettings
    from gateway.tenant import TenantPolicy
    from gateway.webhooks.config import HmacWebhook, KommoRevokedWebhook, StandardWebhooksWebhook, UrlTokenWebhook

    return {
        (PolicyFile, "auth"): AuthSection, (PolicyFile, "cors"): CorsPolicy,
        (PolicyFile, "rate_limits"): RateLimitSettings, (RouteSpec, "tenant"): TenantPolicy,
        (RouteSpec, "rate_limit"): RateLimitPolicy, (RouteSpec, "cors"): CorsOverride,
        (RouteSpec, "webhook"): Union[UrlTokenWebhook, HmacWebhook, StandardWebhooksWebhook,  # noqa: UP007
                                      KommoRevokedWebhook],
    }


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    out: list[type[BaseModel]] = []
    for arg in get_args(tp):
        out += _models_in(arg)
    return out


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is Any:
        return "any"
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " (optional)" \
            if type(None) in get_args(tp) else " \\| ".join(_type_name(a) for a in get_args(tp))
    if origin is typing.Annotated:
        return _type_name(get_args(tp)[0])
    if origin in (list, tuple, set, frozenset):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(tp, type):
        if issubclass(tp, BaseModel):
            return f"[{tp.__name__}](#{tp.__name__.lower()})"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def _constraints(field: Any) -> str:
    out = []
    for m in field.metadata:
        for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length"),
                           ("max_length", "max length"), ("pattern", "pattern")):
            value = getattr(m, attr, None)
            if value is not None:
                out.append(f"{word} `{value}`")
    if field.description:  # a rule a validator enforces, stated where the key is
        out.append(field.description)
    return ", ".join(out)


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        # What the factory makes is the default a policy gets (`required_claims: [exp, sub]`),
        # not "(empty)": the reference must say what a key left out means.
        value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined or value is None:
        return "—"
    if isinstance(value, BaseModel):
        # A section's own default may differ from its model's (webhook_brute_force: 20 failures).
        changed = [f"`{k}: {v}`" for k, v in value if v != type(value).model_fields[k].get_default(
            call_default_factory=True)]
        return "(see below)" + (", with " + ", ".join(changed) if changed else "")
    if isinstance(value, list | tuple | dict | set | frozenset) and not value:
        return "(empty)"
    if isinstance(value, list | tuple):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"


def _model_table(model: type[BaseModel], overrides: dict[tuple[type[BaseModel], str], Any],
                 queue: list[type[BaseModel]]) -> list[str]:
    doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())  # one line, single spaces
    lines = [f"### {model.__name__}", ""]
    if doc and not doc.startswith("Usage docs") and "A base class" not in doc:
        lines += [doc, ""]
    lines += ["| key | type | default | constraints |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        tp = overrides.get((model, name), field.annotation)
        for m in _models_in(tp):
            if m not in queue:
                queue.append(m)
        lines.append(f"| `{key}` | {_type_name(tp)} | {_default(field)} | {_constraints(field)} |")
    return [*lines, ""]


def policy_reference() -> str:
    overrides = _section_models()
    queue: list[type[BaseModel]] = [PolicyFile]
    out = ["# Policy reference", "",
           "Generated from the pydantic schema the loader enforces (`python -m gateway.docsgen`); do not edit.",
           "Every mapping refuses unknown keys. Values may use `${VAR}` and `${VAR:-default}` from the",
           "environment. `routes:` lists from all files are concatenated; every other section may appear in",
           "one file only. `openapi.yaml` in the policy directory is the API document, not a policy file.", ""]
    i = 0
    while i < len(queue):
        out += _model_table(queue[i], overrides, queue)
        i += 1
    return "\n".join(out).rstrip() + "\n"


def reasons_markdown() -> str:
    out = ["# Reason catalogue", "",
           "Generated from `gateway/reasons.py` (`python -m gateway.docsgen`); do not edit. The gateway serves",
           "the same list at `/v1/docs/errors`; every problem's `type` is `/v1/docs/errors#<reason>`.", "",
           "| reason | status | where | meaning | what the client should do |", "|---|---|---|---|---|"]
    for r in CATALOGUE:
        meaning, action = r.meaning.replace("|", "/"), r.action.replace("|", "/")
        out.append(f"| `{r.id}` | {r.status} | {r.when} | {meaning} | {action} |")
    return "\n".join(out) + "\n"


FILES = {"docs/policy-reference.md": policy_reference, "docs/reasons.md": reasons_markdown}


def main(argv: list[str] | None = None) -> int:
    for rel, fn in FILES.items():
        path = ROOT / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(fn(), encoding="utf-8")
        print(f"wrote {rel}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
