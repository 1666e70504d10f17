"""Everything checked before any socket opens: the mapping, the files its connectors name, then
each model against it.

``bridge validate`` runs exactly this; ``bridge run`` runs it first and stops on any issue.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from pathlib import Path

from bridge import plugins
from bridge.config import Mapping, load_mapping
from bridge.config.dirs import spool_problems
from bridge.config.files import file_problems
from bridge.config.resolved import ResolvedModel
from bridge.config.signing import check_mapping_signature
from bridge.errors import ConfigError, ConfigIssue, InferenceError
from bridge.inference.fit import fit_problems, load_model_for
from bridge.inference.model import LoadedModel, file_sha256
from bridge.types import AlarmPolicy, PredictionSlot

__all__ = ["Prepared", "connector_problems", "prepare", "slots_of"]


@dataclass(frozen=True)
class Prepared:
    mapping: Mapping
    models: dict[str, LoadedModel]
    labels: dict[str, tuple[str, ...]]


def slots_of(prepared: Prepared) -> tuple[PredictionSlot, ...]:
    """Every (asset, model) pair the mapping serves, as the outputs lay themselves out (the
    gateway's and ``bridge opcua nodeset``'s export alike)."""
    mapping = prepared.mapping
    return tuple(
        PredictionSlot(
            asset,
            name,
            m.version,
            prepared.models[name].sha256,
            prepared.labels[name],
            m.outputs.unit,
            mapping.input_units(m, asset),
            AlarmPolicy(m.alerts.severity, m.alerts.raise_after, m.alerts.clear_after),
        )
        for name, m in mapping.models.items()
        for asset in m.assets
    )


def prepare(
    path: str | Path,
    env: MappingABC[str, str] | None = None,
    running: Prepared | None = None,
    *,
    placeholders: bool = False,
) -> Prepared:
    """``placeholders``: see ``load_mapping``; what waits for a variable is not checked. With
    ``running`` (a mapping reload) a model whose file, pin and outputs did not change keeps its
    loaded session: loading an ONNX file again holds the interpreter for seconds."""
    mapping = _load_for_life(path, env, placeholders)
    check_mapping_signature(mapping.path, mapping.revision, env)
    unfilled = {k for keys in mapping.needs.values() for k in keys}
    issues = [i for i in connector_problems(mapping) if not _under(i.key, unfilled)]
    issues += file_problems(mapping, unfilled | {i.key for i in issues})
    issues += spool_problems(mapping, unfilled)
    models: dict[str, LoadedModel] = {}
    labels: dict[str, tuple[str, ...]] = {}
    for name, model in mapping.models.items():
        if _under(f"models.{name}.file", unfilled):
            continue
        try:
            loaded = _reused(running, model) or load_model_for(model)
        except InferenceError as exc:
            issues.append(
                _issue(
                    mapping,
                    ("models", name, "file"),
                    str(exc),
                    "rebuild or re-copy the model file, or fix `sha256:`",
                )
            )
            continue
        for problem in fit_problems(model, loaded):
            issues.append(
                _issue(mapping, ("models", name, *problem.key), problem.message, problem.fix)
            )
        models[name] = loaded
        labels[name] = tuple(model.labels or loaded.labels)
    if issues:
        raise ConfigError(issues)
    return Prepared(mapping, models, labels)


def _reused(running: Prepared | None, model: ResolvedModel) -> LoadedModel | None:
    if running is None or model.name not in running.models:
        return None
    old, loaded = running.mapping.models[model.name], running.models[model.name]
    same = (old.path, old.sha256, old.outputs) == (model.path, model.sha256, model.outputs)
    try:
        return loaded if same and file_sha256(model.path) == loaded.sha256 else None
    except OSError:
        return None  # gone or unreadable: loading it reports that


def connector_problems(mapping: Mapping) -> list[ConfigIssue]:
    """What each source's and output's connector ``check`` finds (files it names, ...)."""
    issues: list[ConfigIssue] = []
    sections = (
        ("sources", mapping.sources, plugins.source_kinds()),
        ("outputs", mapping.outputs, plugins.output_kinds()),
    )
    for section, endpoints, kinds in sections:
        for name, endpoint in endpoints.items():
            kind = kinds.get(endpoint.kind)
            check = kind.check if kind is not None else None
            if check is None:
                continue
            for problem in check(endpoint.settings):
                issues.append(
                    _issue(mapping, (section, name, *problem.key), problem.message, problem.fix)
                )
    return issues


def _under(key: str, keys: set[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def _load_for_life(
    path: str | Path, env: MappingABC[str, str] | None, placeholders: bool = False
) -> Mapping:
    """``load_mapping`` with the cyclic garbage collector paused, then the loaded objects moved
    out of its reach (``gc.freeze``): a 100,000-tag mapping is ~10^6 objects that live as long
    as the process, and every full collection would walk them all again (bench/README.md)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        mapping = load_mapping(path, env, placeholders=placeholders)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
    return mapping


def _issue(mapping: Mapping, loc: tuple[str | int, ...], message: str, hint: str) -> ConfigIssue:
    key = ".".join(str(p) for p in loc)
    return ConfigIssue(str(mapping.path), mapping.index.line_of(loc), key, message, hint)
