"""Cost of edge body validation per request, and the comparison that chose the validator.

Run: .venv/bin/python -m tests.openapi.bench_validate

Measures, for a typical agent body (~200 bytes) against the shipped document's AgentCreate schema:
the strict parse the gateway does anyway (duplicate keys refused), then validation with
jsonschema-rs (the one used), fastjsonschema and jsonschema (when installed), and the whole stage
path (parse + validate) as the gateway runs it.
"""

from __future__ import annotations

import json
import timeit
from pathlib import Path

import yaml

from gateway.openapi.document import json_body_schema, load_document
from gateway.openapi.validation import compile_body_rule
from gateway.tenant.body import load_json

ROOT = Path(__file__).resolve().parents[2]
BODY = json.dumps({"orgId": "org-a", "name": "Support bot", "description": "Answers tickets in English and Spanish",
                   "model": "gpt-4o-mini",
                   "config": {"temperature": 0.2, "tools": ["search", "crm.lookup"], "maxTokens": 800}}).encode()
BAD = json.dumps({"name": "", "model": "!!", "extra": 1, "config": 5}).encode()


def us(fn, n: int = 20000) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6


def main() -> None:
    errors: list[str] = []
    doc = load_document(ROOT / "policies", errors)
    assert doc is not None, errors
    op = doc.operation("POST", "/v1/agents")
    assert op is not None
    schema, required, json_only = json_body_schema(doc, op)
    rule = compile_body_rule(schema, required, json_only, True)
    value = load_json(BODY, None)
    bad = load_json(BAD, None)
    print(f"body: {len(BODY)} bytes")
    print(f"strict parse (dup keys refused)        {us(lambda: load_json(BODY, None)):7.2f} us")
    print(f"jsonschema-rs valid (used)             {us(lambda: rule.errors(value)):7.2f} us")
    print(f"jsonschema-rs invalid, 4 errors        {us(lambda: rule.errors(bad), 5000):7.2f} us")
    print(f"parse + validate (stage path)          {us(lambda: rule.errors(load_json(BODY, None))):7.2f} us")
    resolved = yaml.safe_load(json.dumps(schema))
    try:
        import fastjsonschema

        fj = fastjsonschema.compile(resolved)
        print(f"fastjsonschema valid                   {us(lambda: fj(value)):7.2f} us  (stops at the first error)")
    except ImportError:
        print("fastjsonschema: not installed")
    try:
        import jsonschema

        js = jsonschema.Draft202012Validator(resolved)
        print(f"jsonschema valid                       {us(lambda: js.is_valid(value), 2000):7.2f} us")
    except ImportError:
        print("jsonschema: not installed")


if __name__ == "__main__":
    main()
