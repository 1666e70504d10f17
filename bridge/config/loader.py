"""The one place a mapping file is read. Collects every mistake with file, line, key and a fix."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bridge import plugins, units
from bridge.config.actions import resolve_actions
from bridge.config.reference import ReferenceFileError, load_reference
from bridge.config.resolved import Endpoint, Feature, Mapping, ResolvedModel, ResolvedTag
from bridge.config.spec import AssetConfig, MappingFile, ModelConfig, TagConfig
from bridge.config.unitcheck import check_feature_units
from bridge.config.yamlsource import LineIndex, Substitutions, gc_paused, read_yaml
from bridge.errors import ConfigError, ConfigIssue
from bridge.types import AssetInfo

__all__ = ["load_mapping"]

Loc = tuple[str | int, ...]
_M = TypeVar("_M", bound=BaseModel)
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Issues:
    """Issues of one mapping; none shows a substituted ``${ENV}`` value (they are secrets:
    passwords, tokens, credentials in URLs), only the placeholder written in the file."""

    def __init__(
        self, file: str, index: LineIndex, substitutions: Substitutions | None = None
    ) -> None:
        self.file = file
        self.index = index
        self.substitutions = substitutions or Substitutions()
        self.items: list[ConfigIssue] = []

    def add(self, loc: Loc, message: str, hint: str = "", line_loc: Loc | None = None) -> None:
        where = line_loc if line_loc is not None else loc
        if self.substitutions.unfilled(where):
            return  # `validate --no-env`: the value is only known at run time
        line = self.index.line_of(where)
        scrub = self.substitutions.scrub
        self.items.append(ConfigIssue(self.file, line, _dotted(loc), scrub(message), scrub(hint)))

    def from_validation(
        self,
        exc: ValidationError,
        prefix: Loc,
        line_prefix: Loc | None = None,
        model: type[BaseModel] | None = None,
    ) -> None:
        for err in exc.errors(include_url=False):
            loc: Loc = tuple(err["loc"])
            full = (*prefix, *loc)
            line_loc = (*(line_prefix if line_prefix is not None else prefix), *loc)
            written = self.substitutions.written.get(line_loc)
            self.add(full, _message(err, written), _hint(err, model, loc), line_loc)


def load_mapping(
    path: str | Path, env: MappingABC[str, str] | None = None, *, placeholders: bool = False
) -> Mapping:
    """Read, validate and resolve a mapping; raise ``ConfigError`` with every issue found.

    ``placeholders`` (``bridge validate --no-env``): an unset ``${VAR}`` is accepted, its key
    left unchecked and listed in ``Mapping.needs``; pass ``env={}`` to read no environment."""
    path = Path(path)
    doc = read_yaml(path, env, placeholders=placeholders)
    issues = _Issues(doc.file, doc.index, doc.substitutions)
    issues.items.extend(doc.issues)
    if doc.data is None:
        raise ConfigError(issues.items)
    if not isinstance(doc.data, dict):
        issues.add(
            (),
            "the mapping must be a YAML mapping with sources:, assets:, ...",
            "start from mappings/example.yaml",
        )
        raise ConfigError(issues.items)
    try:
        spec = _validate(MappingFile, doc.data, (), doc.substitutions)
    except ValidationError as exc:
        issues.from_validation(exc, (), model=MappingFile)
        raise ConfigError(issues.items) from None

    sources = _endpoints("sources", spec.sources, _source_models(), issues)
    outputs = _endpoints("outputs", spec.outputs, _sink_models(), issues)
    kinds = {name: str(block.get("kind")) for name, block in spec.sources.items()}
    tags, assets = _expand_assets(spec, kinds, issues)
    models = _resolve_models(spec, path.parent, assets, tags, issues)
    actions = resolve_actions(spec, sources, kinds, tags, models, issues.add)
    if issues.items:
        raise ConfigError(issues.items)
    store = beside(spec.gateway.store, path.parent)
    return Mapping(
        path=path,
        revision=hashlib.sha256(path.read_bytes()).hexdigest(),
        gateway=spec.gateway.model_copy(update={"store": store}),
        sources=sources,
        tags=tags,
        assets=assets,
        models=models,
        outputs=outputs,
        actions=actions,
        index=doc.index,
        needs={
            name: tuple(_dotted(p) for p in paths)
            for name, paths in doc.substitutions.needs.items()
        },
        asset_infos={
            name: AssetInfo(name, asset.template or "", asset.description)
            for name, asset in spec.assets.items()
        },
    )


_SQLITE = re.compile(r"^(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?$")


def beside(url: str, base: Path) -> str:
    """``url`` with a relative SQLite path made relative to ``base`` (the mapping's folder),
    as model paths are: the store is the same whichever directory a command runs in."""
    m = _SQLITE.match(url)
    if m is None:
        return url
    prefix, database, query = m.group(1), m.group(2), m.group(3) or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return url
    if Path(database).is_absolute() or "${" in database:
        return url
    return f"{prefix}{os.path.normpath(base.absolute() / database)}{query}"


def _validate(model: type[_M], data: Any, prefix: Loc, subs: Substitutions) -> _M:
    """``model.model_validate(data)``; under ``--no-env`` a value holding an unfilled
    placeholder that the model refuses as written (a port, a URL) is tried as a neutral
    stand-in ("1"), then left out, so the rest of the block is still checked. The value
    itself is checked at run time; issues at its key are dropped (``_Issues.add``)."""
    if not subs.needs or not isinstance(data, dict):
        return model.model_validate(data)
    data = dict(data)
    for step in ("1", None):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            refused = [
                tuple(e["loc"])
                for e in exc.errors(include_url=False)
                if subs.unfilled((*prefix, *tuple(e["loc"])))
            ]
            if not refused:
                raise
            for loc in refused:
                _replace(data, loc, step)
    return model.model_validate(data)


def _replace(data: dict[Any, Any], loc: tuple[Any, ...], value: str | None) -> None:
    """Set (None: remove) the value at ``loc`` in nested dicts, copying each dict on the way."""
    parent = data
    for step in loc[:-1]:
        child = parent.get(step)
        if not isinstance(child, dict):
            return
        parent[step] = child = dict(child)
        parent = child
    if loc and loc[-1] in parent:
        if value is None:
            del parent[loc[-1]]
        else:
            parent[loc[-1]] = value


def _source_models() -> dict[str, type[BaseModel]]:
    return {k: v.settings_model for k, v in plugins.source_kinds().items()}


def _sink_models() -> dict[str, type[BaseModel]]:
    return {k: v.settings_model for k, v in plugins.output_kinds().items()}


def _endpoints(
    section: str,
    blocks: dict[str, dict[str, Any]],
    models: dict[str, type[BaseModel]],
    issues: _Issues,
) -> dict[str, Endpoint]:
    out: dict[str, Endpoint] = {}
    for name, block in blocks.items():
        loc: Loc = (section, name)
        kind = block.get("kind")
        if kind is None:
            issues.add(
                loc, "missing `kind`", f"add `kind:` with one of: {', '.join(sorted(models))}"
            )
            continue
        model = models.get(str(kind))
        if model is None:
            issues.add(
                (*loc, "kind"),
                f"unknown kind {kind!r}",
                _suggest(str(kind), models) or f"use one of: {', '.join(sorted(models))}",
            )
            continue
        settings = {k: v for k, v in block.items() if k != "kind"}
        try:
            validated = _validate(model, settings, loc, issues.substitutions)
            out[name] = Endpoint(name, str(kind), validated)
        except ValidationError as exc:
            issues.from_validation(exc, loc, model=model)
    return out


@gc_paused
def _expand_assets(
    spec: MappingFile, kinds: dict[str, str], issues: _Issues
) -> tuple[dict[str, ResolvedTag], dict[str, tuple[str, ...]]]:
    """Tags per asset, with addresses checked by their source's kind (even when the source's
    own settings are wrong, so all mistakes show up in one run)."""
    kinds_by_name = plugins.source_kinds()
    address_models = {k: v.address_model for k, v in kinds_by_name.items()}
    quick = {k: v.quick_address for k, v in kinds_by_name.items() if v.quick_address is not None}
    tags: dict[str, ResolvedTag] = {}
    assets: dict[str, tuple[str, ...]] = {}
    templates: dict[str, list[tuple[str, TagConfig, Loc]]] = {}
    default_max_age_s = spec.gateway.default_max_age_s
    for asset_name, asset in spec.assets.items():
        ids: list[str] = []
        for tag_name, tag, origin in _asset_tags(spec, asset_name, asset, issues, templates):
            loc: Loc = ("assets", asset_name, "tags", tag_name)
            if tag.source not in spec.sources:
                issues.add(
                    (*loc, "source"),
                    f"unknown source {tag.source!r}",
                    _suggest(tag.source, spec.sources)
                    or f"define it under `sources:` or use one of: "
                    f"{', '.join(spec.sources) or '(none defined)'}",
                    (*origin, "source"),
                )
                continue
            kind = kinds[tag.source]
            model = address_models.get(kind)
            if model is None:
                continue  # the source's kind is unknown: already reported
            check = quick.get(kind)
            address = None if check is None else check(tag.address)
            if address is None:
                try:
                    address = model.model_validate(tag.address)
                except ValidationError as exc:
                    issues.from_validation(exc, (*loc, "address"), (*origin, "address"), model)
                    continue
            tag_id = f"{asset_name}.{tag_name}"
            # Positional, in the order of ResolvedTag's fields: 100,000 calls.
            tags[tag_id] = ResolvedTag(
                tag_id,
                asset_name,
                tag_name,
                tag.source,
                address,
                tag.convert_to or tag.unit,
                tag.scale,
                tag.offset,
                tag.deadband,
                tag.clamp,
                tag.max_age_s or default_max_age_s,
                tag.description,
                *_converted(tag.unit, tag.convert_to),
                heartbeat_s=tag.heartbeat_s,
            )
            ids.append(tag_id)
        assets[asset_name] = tuple(ids)
    return tags, assets


def _converted(unit: str, convert_to: str) -> tuple[str, tuple[float, float] | None]:
    """``ResolvedTag.source_unit`` and ``.convert``: the spec's validators checked the pair."""
    if not convert_to:
        return "", None
    return unit, units.conversion(unit, convert_to)


def _asset_tags(
    spec: MappingFile,
    asset_name: str,
    asset: AssetConfig,
    issues: _Issues,
    templates: dict[str, list[tuple[str, TagConfig, Loc]]],
) -> list[tuple[str, _Tag, Loc]]:
    """The asset's tags with the location each came from (template or asset); ``templates``
    keeps each template's tags with their locations across the assets."""
    out: dict[str, tuple[_Tag, Loc]] = {}
    if asset.template is not None:
        template = spec.templates.get(asset.template)
        if template is None:
            issues.add(
                ("assets", asset_name, "template"),
                f"unknown template {asset.template!r}",
                _suggest(asset.template, spec.templates)
                or f"define it under `templates:` or use one of: "
                f"{', '.join(spec.templates) or '(none defined)'}",
            )
        else:
            variables = {"asset": asset_name, **{k: str(v) for k, v in asset.vars.items()}}
            entries = templates.get(asset.template)
            if entries is None:
                entries = templates[asset.template] = [
                    (tag_name, tag, ("templates", asset.template, "tags", tag_name))
                    for tag_name, tag in template.tags.items()
                ]
            for tag_name, tag, origin in entries:
                out[tag_name] = (_stamp(tag, variables, origin, asset_name, issues), origin)
    elif asset.vars:
        issues.add(
            ("assets", asset_name, "vars"),
            "`vars` without a `template`",
            "add `template:` or remove `vars:`",
        )
    for tag_name, tag in asset.tags.items():
        out[tag_name] = (_Tag.of(tag), ("assets", asset_name, "tags", tag_name))
    if not out and asset.template is None:
        issues.add(("assets", asset_name), "asset has no tags", "add `template:` or `tags:`")
    return [(name, tag, origin) for name, (tag, origin) in out.items()]


def _stamp(
    tag: TagConfig, variables: dict[str, str], origin: Loc, asset: str, issues: _Issues
) -> _Tag:
    """The template's tag for one asset. Only fields holding a ``{var}`` are filled; when they
    are all free-form (``str`` without constraints, or ``Any``) the filled values need no second
    validation, which at 100,000 tags was most of the expansion's time."""
    plan = _stamp_plan(tag)
    if not plan.fields:
        return plan.base
    update = {}
    for f, pattern in plan.fields:
        value: Any = None
        if pattern is not None:
            # A plain string: made once per template into a format pattern (literal braces
            # doubled), so filling it is what _fill's regex substitution gives, in C.
            try:
                value = pattern.format_map(variables)
            except KeyError:
                value = None  # a placeholder without a value: _fill reports it
        update[f] = (
            value if value is not None else _fill(getattr(tag, f), variables, origin, asset, issues)
        )
    if plan.free_form:
        values = list(plan.values)
        for f, v in update.items():
            values[_TAG_INDEX[f]] = v
        return _Tag(*values)
    return _Tag.of(TagConfig.model_validate({**tag.model_dump(), **update}))


# Not frozen (unlike the public resolved types): built 100,000 times and never shared, and a
# frozen dataclass pays an object.__setattr__ per field in __init__.
@dataclass(slots=True)
class _Tag:
    """What resolution reads of a ``TagConfig``, without a pydantic model per asset and tag."""

    source: str
    address: Any
    unit: str
    scale: float
    offset: float
    deadband: float
    clamp: tuple[float, float] | None
    max_age_s: float | None
    description: str
    convert_to: str = ""
    heartbeat_s: float | None = None

    @classmethod
    def of(cls, tag: TagConfig) -> _Tag:
        return cls(**{f: getattr(tag, f) for f in _TAG_FIELDS})


_TAG_FIELDS = tuple(_Tag.__dataclass_fields__)
_TAG_INDEX = {f: i for i, f in enumerate(_TAG_FIELDS)}


@dataclass(frozen=True, slots=True)
class _StampPlan:
    base: _Tag
    values: tuple[Any, ...]  # of base, in _TAG_FIELDS order
    # Fields with a placeholder somewhere inside; for a plain string its ``str.format_map``
    # pattern, else None.
    fields: tuple[tuple[str, str | None], ...]
    free_form: bool  # every such field accepts any filled string as is


# Template tags are validated models that live as long as their MappingFile: keyed by id, with
# the tag kept in the value so that the id cannot be reused while the entry exists.
_PLANS: dict[int, tuple[TagConfig, _StampPlan]] = {}


def _stamp_plan(tag: TagConfig) -> _StampPlan:
    cached = _PLANS.get(id(tag))
    if cached is not None and cached[0] is tag:
        return cached[1]
    names = [f for f in type(tag).model_fields if _has_placeholder(getattr(tag, f))]
    fields = tuple((f, _pattern(getattr(tag, f))) for f in names)
    base = _Tag.of(tag)
    values = tuple(getattr(base, f) for f in _TAG_FIELDS)
    plan = _StampPlan(base, values, fields, all(_free_form(f) for f in names))
    if len(_PLANS) > 4096:
        _PLANS.clear()
    _PLANS[id(tag)] = (tag, plan)
    return plan


def _pattern(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    pieces = _VAR.split(value)  # literal, name, literal, ...
    return "".join(
        p.replace("{", "{{").replace("}", "}}") if i % 2 == 0 else f"{{{p}}}"
        for i, p in enumerate(pieces)
    )


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return _VAR.search(value) is not None
    if isinstance(value, dict):
        return any(_has_placeholder(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_placeholder(v) for v in value)
    return False


def _free_form(field: str) -> bool:
    info = TagConfig.model_fields[field]
    return info.annotation in (str, Any) and not info.metadata


def _fill(value: Any, variables: dict[str, str], origin: Loc, asset: str, issues: _Issues) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in variables:
                issues.add(
                    origin,
                    f"placeholder {{{name}}} has no value for asset {asset!r}",
                    f"add `vars: {{{name}: ...}}` to assets.{asset}",
                )
                return m.group(0)
            return variables[name]

        return _VAR.sub(repl, value)
    if isinstance(value, dict):
        return {k: _fill(v, variables, origin, asset, issues) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_fill(v, variables, origin, asset, issues) for v in value]
    return value


def _resolve_models(
    spec: MappingFile,
    base: Path,
    assets: dict[str, tuple[str, ...]],
    tags: dict[str, ResolvedTag],
    issues: _Issues,
) -> dict[str, ResolvedModel]:
    out: dict[str, ResolvedModel] = {}
    for name, m in spec.models.items():
        loc: Loc = ("models", name)
        served = _served_assets(spec, name, m, issues)
        # Each tag once, however many statistics read it (7 features on 4 tags at 20,000
        # assets was 140,000 look-ups).
        missing_by_tag = {
            tag: [a for a in served if f"{a}.{tag}" not in tags and a in assets]
            for tag in dict.fromkeys(f.tag for f in m.features)
        }
        for i, feature in enumerate(m.features):
            missing = missing_by_tag[feature.tag]
            if missing:
                where = ", ".join(missing[:5])
                issues.add(
                    (*loc, "features", i, "tag"),
                    f"tag {feature.tag!r} does not exist on asset(s) {where}",
                    "use a tag name the served assets have, e.g. "
                    + ", ".join(sorted({t.name for t in tags.values() if t.asset in served})[:8]),
                )
        check_feature_units(loc, m, served, tags, issues.add)
        names = [f.name for f in m.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            issues.add(
                (*loc, "features"),
                f"feature(s) listed twice: {', '.join(dupes)}",
                "list each tag/stat pair once",
            )
        if m.trigger == "change" and "period_s" in m.model_fields_set:
            issues.add(
                (*loc, "period_s"),
                "period_s applies to `trigger: period`; a `trigger: change` model runs when "
                "its inputs change",
                "remove period_s (min_interval_ms bounds how often a change-triggered model "
                "runs), or use `trigger: period`",
            )
        file = (base / m.file).resolve()
        if not file.is_file():
            issues.add(
                (*loc, "file"),
                f"model file not found: {m.file}",
                "the path is relative to the mapping file",
            )
        out[name] = ResolvedModel(
            name=name,
            path=file,
            version=m.version,
            sha256=m.sha256,
            assets=tuple(served),
            input=m.input,
            features=tuple(Feature(f.tag, f.stat, f.unit) for f in m.features),
            outputs=m.outputs,
            labels=tuple(m.labels) if m.labels else None,
            period_s=m.period_s,
            trigger=m.trigger,
            min_interval_s=m.min_interval_ms / 1000,
            window_s=m.window_s,
            min_window_s=m.window_s / 2 if m.min_window_s is None else m.min_window_s,
            max_samples=m.max_samples,
            reference=_reference(base, loc, m, issues),
            drift=m.drift,
            explain=m.explain,
            alerts=m.alerts,
            backfill_predictions=m.backfill.predictions,
        )
    return out


def _reference(base: Path, loc: Loc, m: ModelConfig, issues: _Issues) -> Path | None:
    """The reference statistics file, checked now so a bad one stops the mapping, not a run."""
    if m.reference is None:
        return None
    path = (base / m.reference).resolve()
    try:
        load_reference(path, [f.name for f in m.features])
    except ReferenceFileError as exc:
        issues.add(
            (*loc, "reference"),
            # The path as written in the mapping reads better than the resolved one.
            str(exc).replace(str(path), m.reference),
            "the path is relative to the mapping file; the format is `bridge-reference/1` "
            "(see the README) and it must describe every feature of the model",
        )
    return path


def _served_assets(spec: MappingFile, name: str, m: ModelConfig, issues: _Issues) -> list[str]:
    served: list[str] = []
    for i, asset in enumerate(m.assets or []):
        if asset not in spec.assets:
            issues.add(
                ("models", name, "assets", i),
                f"unknown asset {asset!r}",
                _suggest(asset, spec.assets) or "list assets defined under `assets:`",
            )
        elif asset not in served:
            served.append(asset)
    if m.template is not None:
        if m.template not in spec.templates:
            issues.add(
                ("models", name, "template"),
                f"unknown template {m.template!r}",
                _suggest(m.template, spec.templates) or "use a template under `templates:`",
            )
        served += [
            a for a, cfg in spec.assets.items() if cfg.template == m.template and a not in served
        ]
    return served


def _suggest(word: str, known: MappingABC[str, Any] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def _message(err: Any, written: str | None = None) -> str:
    """Pydantic's message and the value it got; for a value with ``${ENV}`` in it, the value
    as ``written`` in the file."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if (
        "input" in err
        and kind not in ("model_type", "dict_type")
        and not isinstance(err["input"], dict | list)
    ):
        msg += f" (got {written if written is not None else err['input']!r})"
    return msg


def _hint(err: Any, model: type[BaseModel] | None, loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        if allowed:
            near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            lead = f"did you mean {near[0]!r}? " if near else ""
            return f"{lead}allowed keys here: {', '.join(allowed)}"
        return "remove it or check its spelling"
    if kind == "missing":
        return f"add `{loc[-1]}:`"
    if kind.startswith(("int_", "float_")):
        return "write a number"
    if kind == "string_pattern_mismatch":
        return "names start with a letter and use letters, digits, '-' or '_'"
    ctx = err.get("ctx") or {}
    if "hint" in ctx:  # validators may carry their own fix (PydanticCustomError ctx)
        return str(ctx["hint"])
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return "use a value within the allowed range"
    if kind in ("literal_error", "enum"):
        return "use one of the values listed"
    if kind.startswith(("string_", "bool_")) or kind.endswith("_type"):
        return "check the value's type against `bridge schema`"
    return "correct the value as the message says (see `bridge schema` for what each key takes)"


def _allowed_keys(model: type[BaseModel] | None, loc: Loc) -> list[str]:
    """Walk the model along ``loc`` to list the keys allowed where an unknown one was written."""
    current: Any = model
    for step in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(step))
        if field is None:
            # dict[str, Model] values: the step is a user-chosen name, keep the value type
            continue
        current = _unwrap(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    args: tuple[Any, ...] = tuple(getattr(annotation, "__args__", ()))
    origin = getattr(annotation, "__origin__", None)
    if origin in (dict,) and len(args) == 2:
        return _unwrap(args[1])
    if origin in (list, tuple) and args:
        return _unwrap(args[0])
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _dotted(loc: Loc) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"
