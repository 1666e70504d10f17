"""The ```yaml samples of the docs, and the whole mapping each one is shown as part of.

A sample is placed by its top-level keys (``place``):

- a mapping section among its keys (``gateway:``, ``sources:``, ``models:`` ...): the sample
  is merged into ``BASE`` (a small valid mapping); where it names an entry ``BASE`` already has
  (``models: pump-health:`` with a ``# ...`` for the lines it leaves out) it is merged into it;
  a key that is no section stays, for the loader to refuse;
- entries with a ``source:``: the tags of a template (``BASE``'s ``pump``, whose asset gives
  ``{n}``);
- entries with a ``kind:`` of a registered source or output: entries under ``sources:`` or
  ``outputs:``.

Anything else is an error, unless the markdown marks the block with ``<!-- not-a-mapping -->``
on the line before its fence (a block that shows something else in YAML syntax).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bridge import plugins
from bridge.config.spec import MappingFile

__all__ = ["BASE", "DOCS", "NOT_A_MAPPING", "ROOT", "Sample", "merge", "place", "samples"]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "connectors/*/README.md", "docs/**/*.md")
NOT_A_MAPPING = "<!-- not-a-mapping -->"
_MARK_HINT = f"mark a block that is not part of a mapping with {NOT_A_MAPPING} before its fence"
_FENCE = re.compile(r"^\s*```yaml\s*$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_DEMO = yaml.safe_load((ROOT / "mappings" / "demo.yaml").read_text())
# One source of each protocol under the names the samples use, and the demo's pump template,
# one pump and the bundled pump-health model (so model samples run against a real model).
BASE: dict[str, Any] = {
    "version": 1,
    "sources": {
        "plant": {"kind": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"},
        "plc": {"kind": "modbus", "host": "127.0.0.1"},
    },
    "templates": {"pump": _DEMO["templates"]["pump"]},
    "assets": {"pump-01": {"template": "pump", "vars": {"n": "01"}}},
    "models": {"pump-health": _DEMO["models"]["pump-health"]},
}


@dataclass(frozen=True)
class Sample:
    file: str
    line: int  # of the opening fence
    text: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def variables(self) -> list[str]:
        """``${NAME}`` variables without a default: the environment must give them."""
        return _VARIABLE.findall(self.text)

    def mapping(self) -> dict[str, Any]:
        return place(yaml.safe_load(self.text))


def samples(root: Path = ROOT) -> list[Sample]:
    """The ```yaml blocks of the docs under ``root``, without those marked not-a-mapping."""
    found: list[Sample] = []
    files = sorted({path for pattern in DOCS for path in root.glob(pattern)})
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        previous = ""
        i = 0
        while i < len(lines):
            if not _FENCE.match(lines[i]):
                previous = lines[i].strip() or previous
                i += 1
                continue
            start = i + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if previous != NOT_A_MAPPING:
                text = textwrap.dedent("\n".join(lines[start:end]))
                found.append(Sample(str(path.relative_to(root)), start, text))
            previous = ""
            i = end + 1
    return found


def merge(base: Any, extra: Any) -> Any:
    """``extra`` over ``base``: mappings merged key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return extra


def place(sample: Any) -> dict[str, Any]:
    """The whole mapping a sample is shown as part of (module docstring)."""
    if not isinstance(sample, dict) or not sample:
        raise AssertionError(f"a sample must be a YAML mapping, got {sample!r}: {_MARK_HINT}")
    if set(sample) & set(MappingFile.model_fields):
        return _over_base(sample)  # a key that is no section is the loader's to report
    if _entries_with(sample, "source"):
        return _over_base({"templates": {"pump": {"tags": sample}}})
    if _entries_with(sample, "kind"):
        kinds = {str(v["kind"]) for v in sample.values()}
        if kinds <= set(plugins.source_kinds()):
            return _over_base({"sources": sample})
        if kinds <= set(plugins.output_kinds()):
            return _over_base({"outputs": sample})
    raise AssertionError(
        f"cannot tell where a sample with keys {sorted(sample)} goes in a mapping: write it "
        f"under its mapping section, or {_MARK_HINT}"
    )


def _over_base(extra: dict[str, Any]) -> dict[str, Any]:
    mapping: dict[str, Any] = merge(BASE, extra)
    return mapping


def _entries_with(sample: dict[str, Any], key: str) -> bool:
    return all(isinstance(v, dict) and key in v for v in sample.values())
