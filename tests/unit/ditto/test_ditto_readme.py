"""The ```yaml samples of connectors/ditto/README.md go through `bridge validate`'s code path and
the committed JSON Schema, as tests/docs does for every README; ``kind: ditto`` is registered
here by its ``register()`` too, so this holds in an environment whose installed entry points
predate the connector."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema_rs
import pytest
import yaml
from doc_samples import ROOT, Sample, samples
from mqttbroker import make_pki

from bridge import plugins
from bridge.connectors.ditto import register
from bridge.errors import ConfigError
from bridge.prepare import prepare

README = "connectors/ditto/README.md"
SAMPLES = [s for s in samples() if s.file == README]


@pytest.fixture(autouse=True)
def ditto_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed kinds plus ``ditto``, for each test only (the registry is global)."""
    monkeypatch.setattr(plugins, "_destinations", dict(plugins.destination_kinds()))
    register()


def test_the_readme_has_both_transports_samples() -> None:
    texts = [s.text for s in SAMPLES]
    assert len(texts) == 2
    assert any("mqtt:" in t for t in texts) and any("http:" in t for t in texts)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ditto-samples")
    shutil.copytree(ROOT / "mappings" / "models", root / "models")
    make_pki(root / "pki" / "mqtt")
    return root


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_sample_validates(
    sample: Sample, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    mapping = workdir / f"{tmp_path.name}.yaml"
    mapping.write_text(yaml.safe_dump(sample.mapping(), sort_keys=False))
    env = {name: f"sample-{name.lower()}" for name in sample.variables}
    try:
        prepare(mapping, env=env)
    except ConfigError as err:
        issues = "\n".join(str(issue) for issue in err.issues)
        pytest.fail(f"{sample.id}: the sample does not validate:\n{issues}")


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_sample_passes_the_committed_schema(sample: Sample) -> None:
    schema = json.loads((ROOT / "mappings" / "bridge-mapping.schema.json").read_text())
    errors = [
        (".".join(str(p) for p in e.instance_path), e.message)
        for e in jsonschema_rs.validator_for(schema).iter_errors(sample.mapping())
    ]
    assert errors == []
