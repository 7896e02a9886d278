"""The reason catalogue is complete: every reason id raised anywhere has an entry.

The scan reads the source of the gateway and of the bundled upstream (both answer clients) and
collects reason ids from where they are decided: the first argument or `reason=` of a call to an
error class, a `reason = "..."` in an error class body, and `ctx.reason = "..."`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.reasons import BY_ID, CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "upstream_stub")
REASON_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")


def _sources() -> list[tuple[Path, ast.Module]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out.append((path, ast.parse(path.read_text(encoding="utf-8"), str(path))))
    return out


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _error_classes(trees: list[tuple[Path, ast.Module]]) -> set[str]:
    names = {c.__name__ for c in _all_subclasses(GatewayError)} | {"GatewayError", "ApiError"}
    changed = True
    while changed:  # classes defined in code not imported here, derived from known ones
        changed = False
        for _, tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in names:
                    if any(_name(b) in names for b in node.bases):
                        names.add(node.name)
                        changed = True
    return names


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= _all_subclasses(sub)
    return out


def raised_reasons() -> dict[str, str]:
    """reason id -> first place it is raised, `file:line`."""
    trees = _sources()
    classes = _error_classes(trees)
    found: dict[str, str] = {}

    def add(value: ast.expr, path: Path, line: int) -> None:
        # A first positional string with a space is a detail (some classes take the detail first).
        if isinstance(value, ast.Constant) and isinstance(value.value, str) and REASON_ID.match(value.value):
            found.setdefault(value.value, f"{path.relative_to(ROOT)}:{line}")

    for path, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in classes:
                if node.args:
                    add(node.args[0], path, node.lineno)
                for kw in node.keywords:
                    if kw.arg == "reason":
                        add(kw.value, path, node.lineno)
            elif isinstance(node, ast.ClassDef) and node.name in classes:
                for stmt in node.body:
                    if not isinstance(stmt, ast.Assign):
                        continue
                    for target in stmt.targets:
                        if isinstance(target, ast.Name) and target.id == "reason":
                            add(stmt.value, path, stmt.lineno)
                        elif isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple):
                            for t, v in zip(target.elts, stmt.value.elts, strict=False):
                                if isinstance(t, ast.Name) and t.id == "reason":
                                    add(v, path, stmt.lineno)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and target.attr == "reason":
                        add(node.value, path, node.lineno)
    return found


def test_every_raised_reason_has_a_catalogue_entry() -> None:
    raised = raised_reasons()
    # The scan must actually find the reasons it is meant to find (a broken scan would pass).
    for known in ("tenant.mismatch", "auth.expired", "request.ambiguous", "webhook.store_unavailable",
                  "request.client_closed", "not_found", "request.invalid_body", "request.invalid_parameter",
                  "route.sunset"):
        assert known in raised, known
    missing = {r: where for r, where in raised.items() if r not in BY_ID}
    assert not missing, f"reason ids raised without a catalogue entry in gateway/reasons.py: {missing}"


def test_the_scan_catches_a_new_unlisted_reason(tmp_path: Path) -> None:
    pkg = tmp_path / "gateway"
    pkg.mkdir()
    (pkg / "x.py").write_text('from gateway.errors import Forbidden\n\ndef f():\n'
                              '    raise Forbidden("brand.new_reason", "x")\n')
    (tmp_path / "upstream_stub").mkdir()
    globals()["ROOT"], old = tmp_path, ROOT
    try:
        assert "brand.new_reason" in raised_reasons()
    finally:
        globals()["ROOT"] = old


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda r: r.id)
def test_entries_are_complete(entry) -> None:
    assert 100 <= entry.status <= 599
    assert entry.meaning.strip() and entry.action.strip()
    assert entry.when in {"always", "body", "validate", "params", "jwt", "tenant", "roles", "ratelimit", "webhook",
                          "mutating", "deprecated", "cors", "unrouted", "upstream", "log"}


def test_class_defaults_agree_with_the_catalogue() -> None:
    for cls in _all_subclasses(GatewayError):
        entry = BY_ID.get(cls.reason)
        if entry is not None and entry.when != "log":
            assert entry.status == cls.status, (cls.__name__, cls.reason)
