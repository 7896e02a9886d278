"""YAML with line numbers, duplicate-key refusal and `${VAR}` expansion.

PyYAML silently keeps the last of two equal keys; a security policy must not (one reviewer reads
the first, the gateway enforces the second), so a duplicate key is an error here. Every scalar and
collection remembers its line so that validation errors name `file:line field.path`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[str | int, ...]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class SourceFile:
    """One parsed policy file: its data, and the line of every node by field path."""

    def __init__(self, path: str, data: Any, lines: dict[Loc, int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def line_of(self, loc: Loc) -> int:
        """Line of the deepest node of `loc` that exists (pydantic locs may go past the data)."""
        for n in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:n]))
            if line is not None:
                return line
        return 1

    def where(self, loc: Loc) -> str:
        return f"{self.path}:{self.line_of(loc)} {format_loc(loc)}"


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top)"


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand `${VAR}` / `${VAR:-default}`; an unset variable without default is an error."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        got = env.get(name)
        if got is None or (got == "" and default is not None):
            if default is None:
                raise KeyError(name)
            return default
        return got

    return _VAR.sub(sub, value)


def read_text(path: Path, errors: list[str]) -> str | None:
    """The file as UTF-8 text, or None with one line in `errors` naming the file (not UTF-8, or
    unreadable): a policy or test file is edited by people, so no traceback for either."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        errors.append(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        errors.append(f"{path}: cannot read ({exc.strerror})")
    return None


def load_yaml(path: str, text: str, env: Mapping[str, str], errors: list[str]) -> SourceFile | None:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(f"{path}:{line} (yaml): {problem}")
        return None
    lines: dict[Loc, int] = {}
    if root is None:
        return SourceFile(path, {}, lines)
    data = _build(root, (), lines, path, env, errors)
    return SourceFile(path, data, lines)


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int], path: str,
           env: Mapping[str, str], errors: list[str]) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader.construct_object(yaml.SafeLoader(""), key_node)  # type: ignore[no-untyped-call]
            if key == "<<":
                errors.append(f"{path}:{key_node.start_mark.line + 1} {format_loc(loc)}: "
                              "YAML merge keys are not allowed in policy")
                continue
            if key in out:
                errors.append(f"{path}:{key_node.start_mark.line + 1} {format_loc((*loc, key))}: "
                              f"duplicate key {key!r}")
                continue
            out[key] = _build(value_node, (*loc, key), lines, path, env, errors)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*loc, i), lines, path, env, errors) for i, v in enumerate(node.value)]
    value = yaml.SafeLoader.construct_object(yaml.SafeLoader(""), node)  # type: ignore[no-untyped-call]
    if isinstance(value, str) and "${" in value:
        try:
            expanded = expand(value, env)
        except KeyError as exc:
            errors.append(f"{path}:{lines[loc]} {format_loc(loc)}: environment variable "
                          f"{exc.args[0]} is not set and has no default")
            return value
        # A quoted scalar stays a string; an unquoted one is re-resolved so `${PORT:-8080}` is an int.
        if getattr(node, "style", None) is None:
            try:
                value = yaml.safe_load(expanded) if expanded else expanded
            except yaml.YAMLError:
                value = expanded
        else:
            value = expanded
    return value
