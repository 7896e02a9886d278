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


@pytest.mark.parametrize("row", [
    # A default made by a factory is what a policy that leaves the key out gets: it must be shown.
    "| `required_claims` | list of string | `[exp, sub]` | must include `exp` and `sub` |",
    "| `algorithms` | list of string | `[HS256, RS256, ES256, EdDSA]` | min length `1` |",
    "| `allow_methods` | list of string | `[GET, HEAD, POST]` |  |",
    "| `expose_headers` | list of string | (empty) |  |",
    # A section whose default differs from its model's says how.
    "| `webhook_brute_force` | [BruteForcePolicy](#bruteforcepolicy) | (see below), with `max_failures: 20` |  |",
    "| `brute_force` | [BruteForcePolicy](#bruteforcepolicy) | (see below) |  |",
    "| `issuer` | string (optional) | — |  |",
])
def test_reference_shows_the_default_a_missing_key_gets(row: str) -> None:
    assert row in policy_reference().splitlines()


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


MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_in_markdown_resolve_inside_the_repository() -> None:
    """A relative link (README -> docs/..., docs -> ...) must name a file of the repository."""
    broken = []
    for path in ROOT.rglob("*.md"):
        rel = path.relative_to(ROOT)
        if any(part in ("node_modules",) or part.startswith(".") for part in rel.parts):
            continue
        for m in MD_LINK.finditer(path.read_text(encoding="utf-8")):
            target = m.group(1).split("#", 1)[0]
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target):  # a URL or an in-page anchor
                continue
            resolved = (path.parent / target).resolve()
            if ROOT.resolve() not in resolved.parents or not resolved.exists():
                broken.append(f"{rel}: {m.group(1)}")
    assert not broken, f"links that leave the repository or name no file: {broken}"
    # and the README sends readers to docs/
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in ("architecture", "policy-reference", "operations", "reasons"):
        assert f"](docs/{doc}.md)" in readme, doc
