"""Every ```yaml sample in the README files goes through `bridge validate`'s code path
(``bridge.prepare.prepare``: the loader, the connectors' file checks, the model checks), so a
sample cannot drift away from what the gateway accepts. How a fragment becomes a whole mapping:
tests/doc_samples.py.

What samples refer to is given as a gateway would have it: ``${NAME}`` variables without a
default are set in the environment passed to the loader; the files are made in the working
directory the mapping is loaded from (the bundled demo model, a reference file for its
features, certificates made by `bridge certs create` where the OPC UA samples name them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from doc_samples import BASE, NOT_A_MAPPING, ROOT, Sample, place, samples
from mqttbroker import make_pki

from bridge.cli import main
from bridge.errors import ConfigError
from bridge.prepare import prepare


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
    # The REST API's TLS files: validate checks that they are there and readable (uvicorn
    # reads them when the API starts).
    for name in ("api.pem", "api.key", "plant-ca.pem"):
        (root / "pki" / name).write_text("PEM\n")
    # The MQTT samples' CA and gateway certificate: loaded as TLS files when validated.
    make_pki(root / "pki" / "mqtt")
    return root


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s.id)
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
    misplaced = {"sources": {}, "tags": tags}  # stays where it is: the loader refuses it
    assert place(misplaced)["tags"] == tags
    with pytest.raises(AssertionError, match="cannot tell where"):
        place({"sinks": {"hmi": {"kind": "opcua-server"}}})
    with pytest.raises(AssertionError, match="cannot tell where"):
        place({"hmi": {"kind": "modbuss"}})
