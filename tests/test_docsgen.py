"""docs/policy-reference.md and docs/reasons.md are generated; they must match the code."""

from __future__ import annotations

import re

import pytest

from gateway.docsgen import FILES, ROOT, policy_reference


@pytest.mark.parametrize("rel", sorted(FILES))
def test_generated_docs_are_up_to_date(rel: str) -> None:
    assert (ROOT / rel).read_text(encoding="utf-8") == FILES[rel](), f"{rel} is stale: run python -m gateway.docsgen"


def test_reference_names_every_route_key_and_section() -> None:
    text = policy_reference()
    for key in ("`validate`", "`deprecated`", "`api`", "`serve_docs`", "`tenant`", "`rate_limit`", "`since`",
                "`sunset`", "`successor`", "### TenantPolicy", "### JwtPolicy"):
        assert key in text, key


# The team's design brief lives outside the repository; no file may send a reader there.
DESIGN_REF = re.compile(r"\bDESIGN\.md\b")


def test_no_file_in_the_repository_points_outside_it() -> None:
    hits = []
    for path in ROOT.rglob("*"):
        if any(part in (".venv", ".git", "node_modules") or part.startswith(".") for part in path.parts[len(ROOT.parts):]):
            continue
        if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ""):
            try:
                if DESIGN_REF.search(path.read_text(encoding="utf-8")):
                    hits.append(str(path.relative_to(ROOT)))
            except (UnicodeDecodeError, OSError):
                continue
    assert not hits, f"these files point at a design file outside the repository: {hits}"
