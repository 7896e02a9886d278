"""`gateway test-policy`: policy unit tests written in YAML, run through the real pipeline.

    tests:
      - name: other org is refused
        request: {method: GET, url: "/v1/agents?orgId=org-b", claims: {sub: alice, org_id: org-a}}
        expect: {status: 403, reason: tenant.mismatch}

Each case runs in a fresh in-process gateway (gateway/explain.py: the stub upstream records what
would be forwarded). Test files are read like policy files: `${VAR}` expansion, duplicate keys
refused, and every error names `file:line`, so a secret such as a webhook path token is written
`${KOMMO_WEBHOOK_SECRET}`, never pasted. `request.sign` computes an HMAC (header or query) from a
secret variable, for webhook cases; `request.repeat` sends the request N times (rate limits).
A suite that runs nothing, or a case that checks nothing, is an error: it would read as coverage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import PolicyError
from gateway.explain import ExplainRequest, Explanation, UsageError, load_for_cli, run_requests
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.loader import pydantic_errors
from gateway.policy.yamlsrc import load_yaml, read_text
from gateway.settings import Settings

_STRICT = ConfigDict(extra="forbid", populate_by_name=True)


class SignSpec(BaseModel):
    """An HMAC of `message` (default: the raw body) with the secret in `secret_env`."""

    model_config = _STRICT
    secret_env: str
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    message: str | None = None
    header: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> SignSpec:
        if (self.header is None) == (self.query is None):
            raise ValueError("sign needs exactly one of header or query")
        return self


class RequestSpec(BaseModel):
    model_config = _STRICT
    method: str
    url: str
    headers: dict[str, str] = {}
    claims: dict[str, Any] | None = None
    token: str | None = None
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    origin: str | None = None
    client_ip: str = "203.0.113.10"
    sign: SignSpec | None = None
    repeat: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _exclusive(self) -> RequestSpec:
        if self.claims is not None and self.token is not None:
            raise ValueError("give claims or token, not both")
        if "json_body" in self.model_fields_set and self.body is not None:
            raise ValueError("give json or body, not both")
        return self


class UpstreamExpect(BaseModel):
    model_config = _STRICT
    method: str | None = None
    path: str | None = None
    query: str | None = None
    json_body: Any = Field(default=None, alias="json")
    body: str | None = None
    identity: dict[str, Any] | None = None  # these claims of the X-Gateway-Identity payload
    headers: dict[str, str] = {}
    headers_present: list[str] = []
    headers_absent: list[str] = []


class Expect(BaseModel):
    model_config = _STRICT
    status: int | None = None
    reason: str | None = None
    route: str | None = None
    denied_by: str | None = None
    forwarded: bool | None = None
    upstream: UpstreamExpect | None = None
    response_headers: dict[str, str] = {}
    response_headers_present: list[str] = []
    response_headers_absent: list[str] = []

    @model_validator(mode="after")
    def _checks_something(self) -> Expect:
        if not self.model_fields_set:
            raise ValueError("expect must check something (status, reason, upstream, ...)")
        return self


class PolicyCase(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1)
    request: RequestSpec
    expect: Expect


class PolicyTestFile(BaseModel):
    model_config = _STRICT
    tests: list[PolicyCase] = Field(min_length=1)


def to_request(spec: RequestSpec, env: dict[str, str]) -> ExplainRequest:
    headers = list(spec.headers.items())
    body: bytes | None = None
    if "json_body" in spec.model_fields_set:
        body = json.dumps(spec.json_body, separators=(",", ":")).encode()
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
    elif spec.body is not None:
        body = spec.body.encode("utf-8")
    url = spec.url
    if spec.sign is not None:
        s = spec.sign
        secret = env.get(s.secret_env)
        if not secret:
            raise UsageError(f"sign.secret_env: {s.secret_env} is not set")
        msg = s.message.encode() if s.message is not None else (body or b"")
        mac = hmac.new(secret.encode(), msg, getattr(hashlib, s.algorithm)).digest()
        value = s.prefix + (mac.hex() if s.encoding == "hex" else base64.b64encode(mac).decode())
        if s.header is not None:
            headers.append((s.header, value))
        else:
            url += ("&" if "?" in url else "?") + f"{s.query}={value}"
    return ExplainRequest(spec.method, url, headers, body, spec.token, spec.claims, spec.origin, spec.client_ip)


def _lower(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers}


def _headers(where: str, got: list[tuple[str, str]], exact: dict[str, str], present: list[str],
             absent: list[str]) -> list[str]:
    have = _lower(got)
    out = [f'expected {where} header {k}: "{v}", got {json.dumps(have.get(k.lower()))}'
           for k, v in exact.items() if have.get(k.lower()) != v]
    out += [f"expected {where} header {k} present, it is absent" for k in present if k.lower() not in have]
    out += [f"expected {where} header {k} absent, it is present" for k in absent if k.lower() in have]
    return out


def check(expect: Expect, ex: Explanation) -> list[str]:
    """Every way `ex` differs from `expect`, as 'expected X, got Y' sentences."""
    got = f"{ex.status}" + (f" {ex.reason}" if ex.reason else "")
    out = []
    if expect.status is not None and expect.status != ex.status:
        out.append(f"expected status {expect.status}, got {got}" + (f" ({ex.detail})" if ex.detail else ""))
    if "reason" in expect.model_fields_set and expect.reason != ex.reason:
        out.append(f"expected reason {expect.reason}, got {got}" + (f" ({ex.detail})" if ex.detail else ""))
    route_id = ex.route["id"] if ex.route else None
    if expect.route is not None and expect.route != route_id:
        out.append(f"expected route {expect.route}, got {route_id}")
    if expect.denied_by is not None and expect.denied_by != ex.denied_by():
        out.append(f"expected denial at stage {expect.denied_by}, got {ex.denied_by() or 'no denial'} ({got})")
    forwarded = ex.upstream is not None
    if expect.forwarded is not None and expect.forwarded != forwarded:
        out.append(f"expected forwarded={expect.forwarded}, got forwarded={forwarded} ({got})")
    up = expect.upstream
    if up is not None and ex.upstream is None:
        out.append(f"expected the request to be forwarded, got {got} at {ex.denied_by() or 'no stage'}")
    elif up is not None and ex.upstream is not None:
        u = ex.upstream
        for name in ("method", "path", "query", "body"):
            want, have = getattr(up, name), getattr(u, name)
            if want is not None and want != have:
                out.append(f"expected upstream {name} {json.dumps(want)}, got {json.dumps(have)}")
        if "json_body" in up.model_fields_set and up.json_body != u.json:
            out.append(f"expected upstream json {json.dumps(up.json_body)}, got {json.dumps(u.json)}")
        for k, v in (up.identity or {}).items():
            have = (u.identity or {}).get(k)
            if have != v:
                out.append(f"expected identity {k} {json.dumps(v)}, got {json.dumps(have)}")
        out += _headers("upstream", u.headers, up.headers, up.headers_present, up.headers_absent)
    out += _headers("response", ex.response_headers, expect.response_headers, expect.response_headers_present,
                    expect.response_headers_absent)
    return out


def load_cases(path: Path, env: dict[str, str], errors: list[str]) -> list[tuple[PolicyCase, str]]:
    """(case, "file:line") for every case of one file; problems go to `errors` as file:line lines."""
    before = len(errors)
    text = read_text(path, errors)
    if text is None:
        return []
    src = load_yaml(str(path), text, env, errors)
    if src is None or len(errors) > before:  # e.g. an unset ${VAR}: the file's cases would mislead
        return []
    try:
        suite = PolicyTestFile.model_validate(src.data)
    except ValidationError as exc:
        errors.extend(pydantic_errors(src, (), exc))
        return []
    return [(case, f"{path}:{src.line_of(('tests', i))}") for i, case in enumerate(suite.tests)]


def find_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or directory")
    return out


async def run_cases(policy: CompiledPolicy, settings: Settings, env: dict[str, str],
                    cases: list[tuple[PolicyCase, str]]) -> tuple[list[str], int]:
    """Run every case in its own gateway; (report lines, number of failed cases)."""
    lines, failed = [], 0
    for case, where in cases:
        try:
            req = to_request(case.request, env)
            results = await run_requests(policy, settings, env, [req] * case.request.repeat)
            problems = check(case.expect, results[-1])
        except UsageError as exc:
            problems = [f"cannot run: {exc}"]
        if problems:
            failed += 1
            lines.append(f"FAIL {case.name} ({where}): {problems[0]}")
            lines.extend(f"     {p}" for p in problems[1:])
        else:
            lines.append(f"PASS {case.name} ({where})")
    return lines, failed


def policytest_main(argv: list[str]) -> int:
    """`gateway test-policy [--policy DIR] [PATHS...]`: 0 all pass, 1 failures or bad test files,
    2 usage or policy errors. PATHS default to `<policy dir>/tests`."""
    p = argparse.ArgumentParser(prog="gateway test-policy", description="run YAML policy tests")
    p.add_argument("--policy", help="policy directory (default: GATEWAY_POLICY_DIR)")
    p.add_argument("paths", nargs="*", help="test files or directories (default: <policy dir>/tests)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        policy, settings, env = load_for_cli(args.policy)
        files = find_files(args.paths or [str(Path(args.policy or settings.policy_dir) / "tests")])
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"gateway test-policy: {len(exc.errors)} policy error(s)", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"gateway test-policy: {exc}", file=sys.stderr)
        return 2
    errors: list[str] = []
    cases = [c for f in files for c in load_cases(f, env, errors)]
    for line in errors:
        print(line)
    if not cases and not errors:
        print("gateway test-policy: no test cases found", file=sys.stderr)
        return 2
    lines, failed = asyncio.run(run_cases(policy, settings, env, cases))
    for line in lines:
        print(line)
    summary = f"{len(cases) - failed} passed, {failed} failed"
    print(summary + (f", {len(errors)} test file error(s)" if errors else ""))
    return 1 if failed or errors else 0
