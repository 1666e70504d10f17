"""Every ```yaml sample in the README files goes through `bridge validate`'s code path
(``bridge.prepare.prepare``: the loader, the connectors' file checks, the model checks), so a
sample cannot drift away from what the gateway accepts.

How each sample is made a whole mapping (decided by its top-level keys, see ``place``):

- keys that are mapping sections (``gateway:``, ``sources:``, ``models:`` ...): the sample is
  merged into ``BASE`` (a small valid mapping); where it names an entry ``BASE`` already has
  (``models: pump-health:`` with a ``# ...`` for the lines it leaves out) it is merged into it;
- entries with a ``source:``: the tags of a template (``BASE``'s ``pump``, whose assets give
  ``{n}``);
- entries with a ``kind:`` of a registered source or output: entries under ``sources:`` or
  ``outputs:``.

Anything else fails, unless the markdown marks it with ``<!-- not-a-mapping -->`` on the line
before the fence (for a block that shows something else in YAML syntax).

What samples refer to is given as a gateway would have it: ``${NAME}`` variables without a
default are set in the environment passed to the loader; the files are made in a working
directory the mapping is loaded from (the bundled demo model, a reference file for its features,
certificates made by `bridge certs create` where the OPC UA samples expect them).
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bridge import registry
from bridge.cli import main
from bridge.config.models import MappingFile
from bridge.errors import ConfigError
from bridge.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "connectors/*/README.md", "docs/**/*.md")
NOT_A_MAPPING = "<!-- not-a-mapping -->"
_FENCE = re.compile(r"^\s*```yaml\s*$")
_MARK_HINT = f"mark a block that is not part of a mapping with {NOT_A_MAPPING} before its fence"
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
    line: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}"


def samples(root: Path = ROOT) -> list[Sample]:
    """The ```yaml blocks of the docs, without those marked not-a-mapping."""
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


def _over_base(extra: dict[str, Any]) -> dict[str, Any]:
    mapping: dict[str, Any] = merge(BASE, extra)
    return mapping


def _entries_with(sample: dict[str, Any], key: str) -> bool:
    return all(isinstance(v, dict) and key in v for v in sample.values())


def place(sample: Any) -> dict[str, Any]:
    """The whole mapping a sample is shown as part of (module docstring)."""
    if not isinstance(sample, dict) or not sample:
        raise AssertionError(f"a sample must be a YAML mapping, got {sample!r}: {_MARK_HINT}")
    if set(sample) <= set(MappingFile.model_fields):
        return _over_base(sample)
    if _entries_with(sample, "source"):
        return _over_base({"templates": {"pump": {"tags": sample}}})
    if _entries_with(sample, "kind"):
        kinds = {str(v["kind"]) for v in sample.values()}
        if kinds <= set(registry.source_kinds()):
            return _over_base({"sources": sample})
        if kinds <= set(registry.sink_kinds()):
            return _over_base({"outputs": sample})
    raise AssertionError(
        f"cannot tell where a sample with keys {sorted(sample)} goes in a mapping: write it "
        f"under its mapping section, or {_MARK_HINT}"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the samples name, where they name them (relative to the mapping file for
    models, to the working directory for certificates)."""
    root = tmp_path_factory.mktemp("samples")
    shutil.copytree(ROOT / "mappings" / "models", root / "models")
    features = [f"{f['tag']}.{f['stat']}" for f in BASE["models"]["pump-health"]["features"]]
    reference = {
        "format": "bridge-reference/1",
        "features": {name: {"mean": 0.0, "std": 1.0} for name in features},
    }
    (root / "models" / "pump_health.reference.json").write_text(json.dumps(reference))
    runner = CliRunner()
    for cert, key in (("own/cert.der", "own/key.pem"), ("users/alice.der", "users/alice.key")):
        args = ["--cert", str(root / "pki" / cert), "--key", str(root / "pki" / key)]
        made = runner.invoke(main, ["certs", "create", "--hostname", "localhost", *args])
        assert made.exit_code == 0, made.output
    return root


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s.id)
def test_sample_validates(
    sample: Sample, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    mapping = workdir / f"{tmp_path.name}.yaml"
    mapping.write_text(yaml.safe_dump(place(yaml.safe_load(sample.text)), sort_keys=False))
    env = {name: f"sample-{name.lower()}" for name in _VARIABLE.findall(sample.text)}
    try:
        prepare(mapping, env=env)
    except ConfigError as err:
        issues = "\n".join(str(issue) for issue in err.issues)
        pytest.fail(f"{sample.id}: the sample does not validate:\n{issues}")


def test_samples_are_found(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(
        "text\n```yaml\nversion: 1\n```\n\n"
        f"{NOT_A_MAPPING}\n\n```yaml\n$ not yaml\n```\n"
        "```yaml\n    sources: {}\n```\n```json\n{}\n```\n"
    )
    found = samples(tmp_path)
    assert [(s.line, s.text) for s in found] == [(2, "version: 1"), (11, "sources: {}")]


def test_place_embeds_fragments_where_they_belong() -> None:
    tags = {"level": {"source": "plc", "address": "x"}}
    assert place(tags)["templates"]["pump"]["tags"]["level"] == tags["level"]
    assert place(tags)["templates"]["pump"]["tags"]["vibration"]  # the template's other tags
    source = {"line": {"kind": "modbus", "host": "10.0.0.2"}}
    assert place(source)["sources"]["line"] == source["line"]
    output = {"hmi": {"kind": "opcua-server"}}
    assert place(output)["outputs"] == output
    model = {"models": {"pump-health": {"period_s": 5}}}
    assert place(model)["models"]["pump-health"]["period_s"] == 5
    assert place(model)["models"]["pump-health"]["file"] == "models/pump_health.onnx"
    with pytest.raises(AssertionError, match="cannot tell where"):
        place({"sinks": {"hmi": {"kind": "opcua-server"}}})
    with pytest.raises(AssertionError, match="cannot tell where"):
        place({"hmi": {"kind": "modbuss"}})
