"""Query and path parameters checked against the operation's declared schemas, compiled once at policy load.

Threat: the upstream acts on a parameter value its contract does not allow (a cursor it never
handed out, `limit=10000000000000000000000`, a `status` outside its enum) and fails open or
crashes on it. The document declares each parameter's type and bounds; the edge makes them hold
whatever the upstream's own checks do, for every caller who got past authentication.

The value checked is the one the upstream reads: the query string is split on `&`, then names and
values are form-decoded as web frameworks do (`+` is a space, then percent-decoding, strict
UTF-8). A declared parameter given twice (first-wins and last-wins parsers would read different
values), one next to a raw `;` (an upstream that still splits on it reads a value we did not), a value
that is not valid percent-encoded UTF-8 or that does not match its schema, and a missing required
one are 422 `request.invalid_parameter`, with one `{in, name, detail}` entry per
problem. Messages come from the schema, never from the value (a refused value may be a
secret). Parameters the operation does not declare are forwarded untouched; the spellings of the
tenant-bound org parameter are the tenant stage's (`gateway/tenant/query.py`).

Only what a query or path parameter can carry unambiguously is compiled: a string, integer,
number or boolean schema (or one with no type, e.g. an enum of strings), `style: form` for the
query. Anything else is a load error naming the parameter, so a document the edge cannot enforce
is never silently half-checked (`validate: false` on the route opts out).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import jsonschema_rs

from gateway.openapi.document import self_contained
from gateway.openapi.validation import MAX_ERRORS, schema_message

_BAD_PCT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_INT = re.compile(r"-?[0-9]{1,64}\Z")  # ASCII digits only (`\d` would take any script's digits)
_NUM = re.compile(r"-?(?:0|[1-9][0-9]{0,308})(?:\.[0-9]{1,64})?(?:[eE][+-]?[0-9]{1,4})?\Z")
TYPES = ("string", "integer", "number", "boolean")
SEMICOLON = 'is next to a raw ";", which some servers read as a separator: send ";" as %3B, separate with "&"'


def form_decode(raw: bytes) -> str | None:
    """A query name or value as a form decoder reads it (`+` a space, then %XX), or None when
    it is not valid percent-encoded UTF-8 (a lenient decoder would guess; we do not)."""
    if raw.find(b"+") >= 0:
        raw = raw.replace(b"+", b" ")
    if raw.find(b"%") >= 0:
        if _BAD_PCT.search(raw):
            return None
        raw = unquote_to_bytes(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class ParamCheck:
    """One declared parameter: where it is, whether it is required, its type and compiled schema."""

    name: str
    where: str            # "query" or "path"
    required: bool
    kind: str | None      # one of TYPES, or None: the text itself is validated
    validator: Any        # compiled jsonschema_rs validator of the parameter's schema

    def problems(self, text: str) -> list[str]:
        """The messages for one value as text; empty when it is valid."""
        value: Any = text
        kind = self.kind
        if kind == "integer":
            if not _INT.match(text):
                return ["must be an integer"]
            value = int(text)
        elif kind == "number":
            if not _NUM.match(text):
                return ["must be a number"]
            value = float(text)
            if not math.isfinite(value):
                return ["must be a finite number"]
        elif kind == "boolean":
            if text not in ("true", "false"):
                return ["must be true or false"]
            value = text == "true"
        validator = self.validator
        if validator.is_valid(value):
            return []
        return [schema_message(err.kind) for err in validator.iter_errors(value)]


@dataclass(frozen=True, slots=True)
class ParamRule:
    """What one operation checks about its query and path parameters."""

    query: dict[str, ParamCheck]      # by (decoded) name
    required_query: tuple[str, ...]
    path: tuple[ParamCheck, ...]

    def errors(self, qs: bytes, path_params: dict[str, str]) -> list[dict[str, str]]:
        """At most MAX_ERRORS `{in, name, detail}` entries; empty when every parameter is valid."""
        out: list[dict[str, str]] = []
        for declared in self.path:
            value = path_params.get(declared.name)
            if value is not None:
                for detail in declared.problems(value):
                    out.append({"in": "path", "name": declared.name, "detail": detail})
        query = self.query
        seen: set[str] = set()
        if qs:
            for seg in qs.split(b"&"):
                if seg.find(b";") >= 0:
                    # `a=1;limit=0`: an upstream that still splits on `;` reads a parameter we did
                    # not; `s=a;bc`: it reads `s=a`, a value we did not check.
                    for sub in seg.split(b";"):
                        name = form_decode(sub.partition(b"=")[0])
                        if name is not None and name in query:
                            out.append({"in": "query", "name": name, "detail": SEMICOLON})
                raw_name, _, raw_value = seg.partition(b"=")
                name = form_decode(raw_name)
                if name is None:
                    continue  # lenient decoders read U+FFFD, never a declared name: forwarded as is
                check = query.get(name)
                if check is None:
                    continue
                if name in seen:
                    out.append({"in": "query", "name": name, "detail": "must be given once"})
                    continue
                seen.add(name)
                text = form_decode(raw_value)
                details = ["is not valid percent-encoded UTF-8"] if text is None else check.problems(text)
                for detail in details:
                    out.append({"in": "query", "name": name, "detail": detail})
        for name in self.required_query:
            if name not in seen:
                out.append({"in": "query", "name": name, "detail": "is required"})
        return out[:MAX_ERRORS]


def _resolve(doc_data: dict[str, Any], param: Any, where: str) -> dict[str, Any]:
    """The parameter object, through a chain of `$ref`s to `#/components/parameters/...`."""
    prefix = "#/components/parameters/"
    declared = (doc_data.get("components") or {}).get("parameters") or {}
    for _ in range(16):
        if not isinstance(param, dict):
            raise ValueError(f"{where}: a parameter must be a mapping")
        ref = param.get("$ref")
        if ref is None:
            if not isinstance(param.get("name"), str) or param.get("in") not in ("query", "path", "header", "cookie"):
                raise ValueError(f"{where}: a parameter needs a `name` and an `in` of query, path, header or cookie")
            return param
        target = declared.get(ref[len(prefix):]) if isinstance(ref, str) and ref.startswith(prefix) else None
        if not isinstance(target, dict):
            raise ValueError(f"{where}: parameter reference {ref!r} does not resolve")
        param = target
    raise ValueError(f"{where}: parameter references nest more than 16 deep (a cycle?)")


def _schema_type(doc_data: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The schema's `type`, through `$ref`s to `#/components/schemas/...` (the text is read as it)."""
    schemas = (doc_data.get("components") or {}).get("schemas") or {}
    for _ in range(16):
        ref = schema.get("$ref")
        prefix = "#/components/schemas/"
        if not (isinstance(ref, str) and ref.startswith(prefix)) or "type" in schema:
            break
        target = schemas.get(ref[len(prefix):])
        if not isinstance(target, dict):
            break  # the validator's compile names the unresolvable reference
        schema = target
    return schema.get("type")


def _compile_check(doc_data: dict[str, Any], param: dict[str, Any], where: str) -> ParamCheck:
    name, loc = param.get("name"), param.get("in")
    label = f'{where}: {loc} parameter "{name}"'
    refuse = f"{label}: the edge cannot check it"
    schema = param.get("schema")
    if "content" in param or not isinstance(schema, dict):
        raise ValueError(f"{refuse} (only a parameter with a `schema` is checked; set validate: false on the route)")
    style = param.get("style", "form" if loc == "query" else "simple")
    if style != ("form" if loc == "query" else "simple"):
        raise ValueError(f"{refuse} (style {style!r}; set validate: false on the route)")
    kind = _schema_type(doc_data, schema)
    if kind is not None and kind not in TYPES:
        raise ValueError(f"{refuse} (type {kind!r}: only {', '.join(TYPES)} are checked; "
                         "set validate: false on the route)")
    try:
        validator = jsonschema_rs.validator_for(self_contained(doc_data, schema), validate_formats=False)
    except (ValueError, jsonschema_rs.ValidationError) as exc:
        raise ValueError(f"{label}: its schema does not compile: {exc}") from None
    return ParamCheck(str(name), str(loc), bool(param.get("required", loc == "path")), kind, validator)


def compile_param_rule(doc_data: dict[str, Any], path_item: dict[str, Any], op_spec: dict[str, Any],
                       where: str) -> ParamRule | None:
    """The operation's query and path parameters (the path item's, overridden by the operation's
    of the same name and location), compiled; None when it declares none. Header and cookie
    parameters are not checked here (the stages that read headers own them)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for source in (path_item.get("parameters") or [], op_spec.get("parameters") or []):
        for raw in source:
            param = _resolve(doc_data, raw, where)
            key = (str(param.get("in")), str(param.get("name")))
            merged[key] = param
    query: dict[str, ParamCheck] = {}
    path: list[ParamCheck] = []
    for (loc, _name), param in merged.items():
        if loc not in ("query", "path"):
            continue
        check = _compile_check(doc_data, param, where)
        if loc == "query":
            query[check.name] = check
        else:
            path.append(check)
    if not query and not path:
        return None
    required = tuple(name for name, c in query.items() if c.required)
    return ParamRule(query, required, tuple(path))
