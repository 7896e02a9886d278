"""Load, validate and compile a policy directory. All errors are collected and reported at once.

    policies/routes.yaml:42 routes[3].timeouts.total: Input should be greater than 0
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.errors import PolicyError
from gateway.policy.compiled import CompiledPolicy, CompiledRoute, digest_of
from gateway.policy.router import PathTemplate, RouteTable
from gateway.policy.schema import MUTATING, Defaults, Limits, PolicyFile, RouteSpec, UpstreamSpec
from gateway.policy.suggest import close_match, suggestion_for
from gateway.policy.yamlsrc import Loc, SourceFile, format_loc, load_yaml, read_text


class LoadContext:
    """What section compilers may need: environment, production flag, merged sections."""

    def __init__(self, env: Mapping[str, str], production: bool, sections: dict[str, Any],
                 policy_dir: Path | None = None) -> None:
        self.env = env
        self.production = production
        self.sections = sections
        self.policy_dir = policy_dir
        # Files read by a compiler besides the policy files (e.g. openapi.yaml): part of the digest.
        self.digest_files: list[tuple[str, str]] = []
        # Objects shared by all routes (e.g. the global CORS policy), built by a compiler once.
        self.shared: dict[str, Any] = {}
        # Sections that failed validation: what depends on them is not checked again, so one root
        # cause gives one message (a bad `auth.jwt` does not also fail every `auth: jwt` route).
        self.failed: set[str] = set()
        self.earlier_rules = False


# A part compiler turns one raw route section into its compiled form, raising ValueError
# (message only) or PolicyError (already located messages). Registered by feature modules.
PartCompiler = Callable[[Any, RouteSpec, LoadContext], Any]
SectionCompiler = Callable[[Any, LoadContext], Any]
ROUTE_PARTS: dict[str, PartCompiler] = {}
SECTIONS: dict[str, SectionCompiler] = {}
# Checks of the whole compiled route table (e.g. route table against the OpenAPI document); each
# returns located error messages.
PolicyCheck = Callable[[list[CompiledRoute], LoadContext], list[str]]
POLICY_CHECKS: list[PolicyCheck] = []
# Reserved names in the policy directory that are not policy files (read by the `api` section).
NOT_POLICY_FILES = frozenset({"openapi.yaml", "openapi.yml"})


def _clean(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # Strip pydantic's union tags (e.g. "function-after[...]") from the location.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def pydantic_errors(src: SourceFile, base: Loc, exc: ValidationError) -> list[str]:
    """One located line per root cause. An unknown key close to a field name gets "did you mean",
    and the "Field required" for that very field is dropped: one typo, one message."""
    errs = exc.errors()
    hints: dict[tuple[Any, ...], str] = {}
    for err in errs:
        if err["type"] == "extra_forbidden":
            rel = _clean(tuple(err["loc"]))
            hint = suggestion_for(exc.title, rel)
            if hint is not None:
                hints[rel] = hint
    fixed = {(*rel[:-1], hint) for rel, hint in hints.items()}
    out = []
    for err in errs:
        rel = _clean(tuple(err["loc"]))
        if err["type"] == "missing" and rel in fixed:
            continue
        loc = (*base, *rel)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            if rel in hints:
                msg += f' (did you mean "{hints[rel]}"?)'
        out.append(f"{src.where(loc)}: {msg}")
    return out


def read_sources(policy_dir: str | os.PathLike[str], env: Mapping[str, str],
                 errors: list[str]) -> list[tuple[SourceFile, str]]:
    d = Path(policy_dir)
    if not d.is_dir():
        raise PolicyError([f"{d}: policy directory does not exist"])
    files = sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
                   and p.name not in NOT_POLICY_FILES)
    if not files:
        raise PolicyError([f"{d}: no *.yaml policy files"])
    out = []
    unreadable = False
    for p in files:
        text = read_text(p, errors)
        if text is None:
            unreadable = True
            continue
        src = load_yaml(str(p), text, env, errors)
        if src is not None:
            out.append((src, text))
    if unreadable:
        # Fatal for every reader: a policy read without one of its files (the document generator
        # and `diff` read sources directly) would be a different policy, silently.
        raise PolicyError(list(errors))
    return out


def load_policy(policy_dir: str | os.PathLike[str], env: Mapping[str, str] | None = None,
                production: bool = False, *, earlier_rules: bool = False) -> CompiledPolicy:
    """Validate and compile; raises PolicyError listing every problem found.

    `earlier_rules`: accept what earlier versions accepted (route roles without `auth.jwt.roles`),
    so `gateway diff` can compare against a policy written before a rule was added.
    """
    env = os.environ if env is None else env
    errors: list[str] = []
    sources = read_sources(policy_dir, env, errors)

    sections: dict[str, Any] = {}
    section_src: dict[str, SourceFile] = {}
    routes: list[tuple[SourceFile, int, RouteSpec]] = []
    invalid: list[tuple[SourceFile, int, Any]] = []
    failed: set[str] = set()
    for src, _text in sources:
        if not isinstance(src.data, dict):
            errors.append(f"{src.path}:1 (top): a policy file must be a mapping")
            continue
        for name, raw in src.data.items():
            if name == "routes":
                continue
            if name not in PolicyFile.model_fields:
                hint = close_match(name, [f for f in PolicyFile.model_fields if f != "routes"])
                extra = f' (did you mean "{hint}"?)' if hint else ""
                errors.append(f"{src.where((name,))}: unknown section {name!r}{extra}")
                continue
            # Each section on its own, so one bad section neither hides the others' errors nor
            # drops the good ones (which would add false follow-on errors).
            try:
                value = getattr(PolicyFile.model_validate({name: raw}), name)
            except ValidationError as exc:
                errors.extend(pydantic_errors(src, (), exc))
                value = None
                failed.add(name)
            if name in sections:
                errors.append(f"{src.where((name,))}: section {name!r} is already set in "
                              f"{section_src[name].path}")
                continue
            sections[name] = value
            section_src[name] = src
        raw_routes = src.data.get("routes")
        if raw_routes is None:
            continue
        if not isinstance(raw_routes, list):
            errors.append(f"{src.where(('routes',))}: routes must be a list")
            continue
        for i, raw in enumerate(raw_routes):
            try:
                routes.append((src, i, RouteSpec.model_validate(raw)))
            except ValidationError as exc:
                errors.extend(pydantic_errors(src, ("routes", i), exc))
                invalid.append((src, i, raw))

    ctx = LoadContext(env, production, sections, Path(policy_dir))
    ctx.failed = failed
    ctx.earlier_rules = earlier_rules
    upstream = sections.get("upstream") or UpstreamSpec()
    defaults: Defaults = sections.get("defaults") or Defaults()
    limits: Limits = sections.get("limits") or Limits()

    for name, compiler in SECTIONS.items():
        raw = sections.get(name)
        section_file = section_src.get(name)
        if name in failed:
            continue  # already reported; compiling its default would only add follow-on errors
        try:
            ctx.shared[name] = compiler(raw, ctx)
        except PolicyError as exc:
            errors.extend(exc.errors)
            failed.add(name)
        except (ValueError, TypeError) as exc:
            where = section_file.where((name,)) if section_file else f"(policy) {name}"
            errors.extend(_located(section_file, (name,), exc, where))
            failed.add(name)

    compiled: list[CompiledRoute] = []
    seen_ids: dict[str, str] = {}
    for src, i, spec in routes:
        base: Loc = ("routes", i)
        where = src.where(base)
        if spec.id in seen_ids:
            errors.append(f"{src.where((*base, 'id'))}: route id {spec.id!r} already used at {seen_ids[spec.id]}")
            continue
        seen_ids[spec.id] = where.split(" ")[0]
        route = _compile_route(src, base, spec, defaults, ctx, errors)
        if route is not None:
            compiled.append(route)

    for src, i, raw in invalid:
        _check_parts_of_invalid_route(src, ("routes", i), raw, ctx, errors)

    for a_i, a in enumerate(compiled):
        for b in compiled[a_i + 1:]:
            common = a.methods & b.methods
            # A static segment beats a parameter (router.py), so only routes of the same shape
            # are ambiguous.
            if common and a.template.same_shape(b.template):
                errors.append(f"{b.source} routes: route {b.id!r} ({b.template.text}) and route {a.id!r} "
                              f"({a.template.text}, {a.source}) can both match {sorted(common)} requests")
    if not compiled and not errors:
        errors.append(f"{policy_dir}: no routes declared (every request would be refused)")
    if not errors:
        for check in POLICY_CHECKS:
            errors.extend(check(compiled, ctx))
    if errors:
        raise PolicyError(errors)
    table = RouteTable([(r.template, r.methods, r) for r in compiled])
    return CompiledPolicy(
        upstream=upstream, limits=limits, routes=compiled, table=table,
        trusted_proxies=list(sections.get("trusted_proxies") or []),
        digest=digest_of([(Path(s.path).name, t) for s, t in sources] + ctx.digest_files),
        sections={**sections, **{f"compiled.{k}": v for k, v in ctx.shared.items()}},
    )


def _check_parts_of_invalid_route(src: SourceFile, base: Loc, raw: Any, ctx: LoadContext,
                                  errors: list[str]) -> None:
    """A route that failed validation still gets its feature sections checked, so every
    problem is reported in one run rather than one per run."""
    if not isinstance(raw, dict):
        return
    spec = RouteSpec.model_construct(**{k: v for k, v in raw.items() if k in RouteSpec.model_fields})
    for part, compiler in ROUTE_PARTS.items():
        value = raw.get(part)
        if value is None:
            continue
        try:
            compiler(value, spec, ctx)
        except PolicyError as exc:
            errors.extend(exc.errors)
        except (ValueError, TypeError) as exc:
            errors.extend(_located(src, (*base, part), exc))
        except AttributeError:
            continue  # the route lacks what the section needs; already reported


def _located(src: SourceFile | None, loc: Loc, exc: Exception, where: str | None = None) -> list[str]:
    if isinstance(exc, ValidationError) and src is not None:
        return pydantic_errors(src, loc, exc)
    msg = str(exc)
    return [f"{where or (src.where(loc) if src else format_loc(loc))}: {msg}"]


def _compile_route(src: SourceFile, base: Loc, spec: RouteSpec, defaults: Defaults, ctx: LoadContext,
                   errors: list[str]) -> CompiledRoute | None:
    n_before = len(errors)
    try:
        template = PathTemplate(spec.path)
    except ValueError as exc:
        errors.append(f"{src.where((*base, 'path'))}: {exc}")
        return None
    up_text = spec.upstream_path
    if up_text is None:
        up_text = spec.path[3:] if spec.path.startswith("/v1/") else spec.path
    try:
        upstream_template = PathTemplate(up_text)
        unknown = set(upstream_template.params) - set(template.params)
        if unknown:
            raise ValueError(f"upstream_path uses parameters {sorted(unknown)} that the path does not declare")
    except ValueError as exc:
        errors.append(f"{src.where((*base, 'upstream_path'))}: {exc}")
        return None
    t = defaults.timeouts
    rt = spec.timeouts or t
    route = CompiledRoute(
        id=spec.id,
        methods=frozenset(spec.methods) | ({"HEAD"} if "GET" in spec.methods else frozenset()),
        template=template,
        upstream_template=upstream_template,
        auth=spec.auth,
        max_body_bytes=spec.max_body_bytes if spec.max_body_bytes is not None else defaults.max_body_bytes,
        connect_timeout=rt.connect or t.connect or 2.0,
        total_timeout=rt.total or t.total or 30.0,
        body_read_timeout=rt.body_read or t.body_read or 15.0,
        forward_token=spec.forward_token,
        body_total_timeout=rt.body_total or t.body_total or 30.0,
        stream_idle_timeout=rt.stream_idle or t.stream_idle or 60.0,
        request_buffering=spec.request_buffering,
        roles=frozenset(spec.roles) if spec.roles else None,
        scopes=frozenset(spec.scopes) if spec.scopes else None,
        mutating=bool(set(spec.methods) & MUTATING),
        source=f"{src.path}:{src.line_of(base)}",
    )
    for part, compiler in ROUTE_PARTS.items():
        raw = getattr(spec, part)
        try:
            compiled = compiler(raw, spec, ctx)
        except PolicyError as exc:
            errors.extend(exc.errors)
            continue
        except (ValueError, TypeError) as exc:
            errors.extend(_located(src, (*base, part), exc))
            continue
        setattr(route, part, compiled)
    if part_fixups := ROUTE_FIXUPS:
        for fix in part_fixups:
            try:
                fix(route, spec, ctx)
            except FieldError as exc:
                errors.append(f"{src.where((*base, *exc.loc))}: {exc}")
            except ValueError as exc:
                errors.append(f"{src.where(base)}: {exc}")
    return route if len(errors) == n_before else None


RouteFixup = Callable[[CompiledRoute, RouteSpec, LoadContext], None]


class FieldError(ValueError):
    """A fixup's error about one field of the route (`loc` relative to the route)."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
ROUTE_FIXUPS: list[RouteFixup] = []



# Feature compilers register themselves in ROUTE_PARTS / SECTIONS; importing them here keeps the
# loader usable on its own while making sure every policy load knows every feature.
import gateway.openapi.policy  # noqa: E402,F401
import gateway.policy.parts  # noqa: E402,F401
