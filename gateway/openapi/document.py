"""The OpenAPI document of the public API (`openapi.yaml` in the policy directory), loaded once.

It is part of the policy: read at load and on reload, its digest is part of the policy digest, and
the route table must agree with it operation for operation (`gateway.openapi.crosscheck`). The
served form (`/v1/openapi.json`) is rendered once here, with its strong ETag.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.policy.yamlsrc import Loc, SourceFile

# libyaml when available: the document is thousands of lines, the policy loader's line-tracking
# reader takes seconds on it. Line numbers are kept for the paths and operations only.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DOCUMENT_NAME = "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Operations the gateway serves itself (docs); they have no route in routes.yaml.
BUILTIN = "x-gateway-builtin"


@dataclass(slots=True)
class Operation:
    method: str          # upper case
    path: str            # the public path template, e.g. /v1/agents/{agentId}
    spec: dict[str, Any]
    where: str           # `file:line paths./v1/agents.post`, for errors
    builtin: bool = False


@dataclass(slots=True)
class ApiDocument:
    """The parsed document, its operations by (METHOD, path), and the bytes served for it."""

    data: dict[str, Any]
    source: SourceFile
    text: str
    operations: dict[tuple[str, str], Operation] = field(default_factory=dict)
    json_bytes: bytes = b""
    etag: bytes = b""

    def operation(self, method: str, path: str) -> Operation | None:
        return self.operations.get((method.upper(), path))


def load_document(policy_dir: Path, errors: list[str]) -> ApiDocument | None:
    path = policy_dir / DOCUMENT_NAME
    if not path.is_file():
        errors.append(f"{path}: the policy says `api.document: true` but there is no {DOCUMENT_NAME} "
                      "(generate it with `gateway openapi generate`)")
        return None
    text = path.read_text(encoding="utf-8")
    src = _read(str(path), text, errors)
    if src is None:
        return None
    data = src.data
    if not isinstance(data, dict) or not str(data.get("openapi", "")).startswith("3.1"):
        errors.append(f"{path}:1 openapi: the document must be OpenAPI 3.1 (`openapi: 3.1.x`)")
        return None
    paths = data.get("paths")
    if not isinstance(paths, dict):
        errors.append(f"{path}:1 paths: the document has no `paths` mapping")
        return None
    doc = ApiDocument(data=data, source=src, text=text)
    for p, item in paths.items():
        if not isinstance(item, dict):
            errors.append(f"{src.where(('paths', p))}: a path item must be a mapping")
            continue
        for m, op in item.items():
            if m not in METHODS:
                continue
            if not isinstance(op, dict):
                errors.append(f"{src.where(('paths', p, m))}: an operation must be a mapping")
                continue
            doc.operations[(m.upper(), p)] = Operation(m.upper(), p, op, src.where(("paths", p, m)),
                                                       bool(op.get(BUILTIN)))
    doc.json_bytes = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    doc.etag = b'"' + hashlib.sha256(doc.json_bytes).hexdigest()[:32].encode() + b'"'
    return doc


def _read(path: str, text: str, errors: list[str]) -> SourceFile | None:
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()  # one parse: the node tree gives line numbers and the data
        data = loader.construct_document(root) if root is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        errors.append(f"{path}:{mark.line + 1 if mark is not None else 1} (yaml): "
                      f"{getattr(exc, 'problem', None) or exc}")
        return None
    lines: dict[Loc, int] = {(): 1}
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "paths" and isinstance(value, yaml.MappingNode):
                lines[("paths",)] = key.start_mark.line + 1
                for pkey, item in value.value:
                    lines[("paths", pkey.value)] = pkey.start_mark.line + 1
                    if isinstance(item, yaml.MappingNode):
                        for mkey, _ in item.value:
                            lines[("paths", pkey.value, mkey.value)] = mkey.start_mark.line + 1
    loader.dispose()
    return SourceFile(path, data, lines)


JSON_MEDIA = ("application/json",)


def json_body_schema(doc: ApiDocument, op: Operation) -> tuple[dict[str, Any] | None, bool, bool]:
    """(schema of the JSON request body or None, body required, JSON is the only media type).

    The schema is made self-contained (`self_contained`) for a JSON Schema 2020-12 validator."""
    body = op.spec.get("requestBody")
    if not isinstance(body, dict):
        return None, False, False
    content = body.get("content") or {}
    required = bool(body.get("required", False))
    media = next((m for m in JSON_MEDIA if m in content), None)
    if media is None:
        return None, required, False
    schema = (content[media] or {}).get("schema")
    if not isinstance(schema, dict):
        return None, required, len(content) == 1
    return self_contained(doc.data, schema), required, len(content) == 1


def self_contained(doc_data: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` as a JSON Schema 2020-12 root a validator compiles on its own: `$ref`s into
    `#/components/schemas/...` resolve against the document's components carried along."""
    root: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", "allOf": [schema]}
    components = doc_data.get("components")
    if isinstance(components, dict) and components.get("schemas"):
        root["components"] = {"schemas": components["schemas"]}
    return root
