"""Payload templates: a JSON-shaped structure whose strings may name event fields.

Sandboxed by construction: a template is data, not code. A string leaf may hold ``{field}``
placeholders taken from a fixed list of event fields (``FIELDS``); nothing is evaluated, no
attribute or item is looked up, no expression exists. A leaf that is exactly one placeholder
keeps the field's JSON type (a number stays a number, ``inputs`` stays a list); inside a longer
string the value is written as text. ``{{`` and ``}}`` are literal braces. Keys are literal.

Compiled (and so checked) once when the mapping is loaded; rendering is a walk over the tree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FIELDS", "Template", "TemplateError", "compile_template"]

# The event fields a template may use, and what each holds (shown in errors and the README).
FIELDS: dict[str, str] = {
    "id": "the prediction id (also the Idempotency-Key)",
    "event": "why it was sent: prediction, label_change, threshold, alert or drift",
    "seq": "the model's sequence number for the asset",
    "gateway_id": "this gateway's id",
    "asset": "the asset's name",
    "model": "the model's name",
    "version": "the model's version",
    "sha256": "the model file's sha256",
    "value": "the label (classifier) or number (regressor); null when Bad",
    "unit": "the unit of a regressor's value (the model's `outputs.unit`), else null",
    "score": "the chosen class's probability, or null",
    "quality": "Good, Uncertain or Bad",
    "reason": "why the quality is not Good",
    "timestamp": "when it was predicted, ISO 8601 UTC",
    "historical": "true when made after the fact for that past time (a backfilled gap), "
    "false when live",
    "input_age_s": "age of the oldest input, seconds",
    "inputs": "the model inputs: a list of {tag, value, unit, quality, source_time}",
    "previous": "the label before a label change or alert, else null",
    "crossing": "threshold events: enter or clear, else null",
    "limit": "threshold events: the limit crossed, else null",
    "field": "threshold events: score or value, else null",
    "drift_score": "drift events: the asset's drift score (largest PSI of its inputs), else null",
    "drift_threshold": "drift events: the threshold it crossed, else null",
    "drifting_features": "drift events: the features above the threshold, worst first, else null",
    "drift_window": "drift events: {rows, features: {<feature>: {psi, mean, std, min, max, "
    "reference_mean, reference_std}}}, else null",
    "raised_at": "drift events: when the drift was detected, ISO 8601 UTC, else null",
}

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.detail = message


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


@dataclass(frozen=True, slots=True)
class _Text:
    parts: tuple[str | _Field, ...]


def _parse(text: str, path: str, allowed: Mapping[str, str]) -> Any:
    parts: list[str | _Field] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif m.group(1) is None:
            raise TemplateError(path, f"unmatched {token!r} in {text!r} (write {token * 2})")
        else:
            name = m.group(1).strip()
            if name not in allowed:
                raise TemplateError(path, f"unknown field {{{name}}} in {text!r}")
            parts.append(_Field(name))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    if len(parts) == 1 and isinstance(parts[0], _Field):
        return parts[0]
    if not any(isinstance(p, _Field) for p in parts):
        return "".join(p for p in parts if isinstance(p, str))
    return _Text(tuple(parts))


def _compile(node: Any, path: str, allowed: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return _parse(node, path, allowed)
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise TemplateError(path, f"key {key!r} is not a string (JSON keys are strings)")
            out[key] = _compile(value, f"{path}.{key}" if path else key, allowed)
        return out
    if isinstance(node, list | tuple):
        return [_compile(v, f"{path}[{i}]", allowed) for i, v in enumerate(node)]
    if node is None or isinstance(node, bool | int | float):
        return node
    raise TemplateError(path, f"{type(node).__name__} is not a JSON value")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _render(node: Any, fields: Mapping[str, Any]) -> Any:
    if isinstance(node, _Field):
        return fields.get(node.name)
    if isinstance(node, _Text):
        return "".join(
            _as_text(fields.get(p.name)) if isinstance(p, _Field) else p for p in node.parts
        )
    if isinstance(node, dict):
        return {k: _render(v, fields) for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, fields) for v in node]
    return node


class Template:
    """A checked template; ``render`` fills it from one event's fields."""

    def __init__(self, tree: Any) -> None:
        self._tree = tree

    def render(self, fields: Mapping[str, Any]) -> Any:
        return _render(self._tree, fields)


def compile_template(spec: Any, allowed: Mapping[str, str] = FIELDS) -> Template:
    """Check ``spec`` (plain YAML/JSON data) and compile it; raise ``TemplateError``."""
    if not isinstance(spec, Mapping | list):
        raise TemplateError("", "a template is a mapping (a JSON object) or a list")
    return Template(_compile(spec, "", allowed))
