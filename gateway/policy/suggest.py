""""Did you mean" for policy authors, from the schema's own field names.

The model a validation error came from is found by its title (every policy model is a pydantic
model, so the registry is simply the subclasses of BaseModel); the error's location is walked
through the field annotations to the model that refused the key, and its field names are the
candidates. Nothing here is on the request path.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel


def close_match(word: str, candidates: Iterable[str], cutoff: float = 0.7) -> str | None:
    pool = sorted({c for c in candidates if isinstance(c, str)})
    if not isinstance(word, str) or word in pool:
        return None
    found = difflib.get_close_matches(word, pool, n=1, cutoff=cutoff)
    if not found:
        lower = {c.lower(): c for c in pool}
        return lower.get(word.lower())
    return found[0]


def _models_by_name() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    todo: list[type[BaseModel]] = [BaseModel]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("gateway."):
                out.setdefault(sub.__name__, sub)
            todo.append(sub)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out.extend(_models_in(arg))
    _ = types  # keep import for UnionType handling through get_origin/get_args
    return out


def fields_at(model_name: str, loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the model at `loc` inside the model titled `model_name`, or None."""
    model = _models_by_name().get(model_name)
    if model is None:
        return None
    current: list[type[BaseModel]] = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in current:
            field = m.model_fields.get(part)
            if field is not None:
                nxt.extend(_models_in(field.annotation))
        if not nxt:
            return None
        current = nxt
    names: list[str] = []
    for m in current:
        names.extend(m.model_fields)
    return names


def suggestion_for(model_name: str, loc: tuple[Any, ...]) -> str | None:
    """For an unknown key at `loc` (its last part), the closest field name of that model."""
    if not loc or not isinstance(loc[-1], str):
        return None
    fields = fields_at(model_name, tuple(loc[:-1]))
    return close_match(loc[-1], fields) if fields else None
