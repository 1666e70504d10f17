"""``bridge models ...`` as an operator types it, on a real SQLite file: register (with reference
statistics), list, show, activate, canary, promote, rollback; a tampered file is refused with a
clear message and a non-zero exit, and the registry is left as it was."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

from bridge.cli import main
from bridge.config.reference import compute_reference
from bridge.inference.model import file_sha256
from bridge.simulators.plant.build_model import FEATURES
from bridge.store.db import open_store
from bridge.store.registry import RegistryRepository, VersionRecord

# The smallest mapping with a store: `--mapping` takes the store (and public key) from it.
MAPPING = """
version: 1
gateway: {{id: cli, store: "sqlite:///{store}"}}
sources:
  plc: {{kind: modbus, host: 127.0.0.1, port: 5020}}
assets:
  line:
    tags:
      pressure: {{source: plc, address: {{table: holding, address: 0, type: uint16}}}}
"""


def _models(store: str, *args: str) -> Result:
    """With ``--store`` there is no mapping to name the models directory: a registration here
    reads from the folder the file is in, unless the test gives ``--models-dir`` itself."""
    extra = []
    if args and args[0] == "register" and "--models-dir" not in args:
        extra = ["--models-dir", str(Path(args[1]).parent)]
    return CliRunner().invoke(main, ["models", *args, "--store", store, *extra])


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.stderr)
    return result.stdout


def _error_line(result: Result) -> str:
    """The message for the operator (stderr also carries the JSON log lines)."""
    return next((line for line in result.stderr.splitlines() if line.startswith("error:")), "")


def _registry(db: Path) -> dict[str, VersionRecord]:
    store = open_store(f"sqlite:///{db}")
    try:
        return {r.version: r for r in RegistryRepository(store).list("pump-health")}
    finally:
        store.dispose()


def _states(db: Path) -> dict[str, str]:
    return {v: r.state for v, r in _registry(db).items()}


def _reference(path: Path) -> dict[str, object]:
    rng = np.random.default_rng(11)
    x = rng.normal(loc=5.0, scale=2.0, size=(400, len(FEATURES)))
    ref = compute_reference(x, FEATURES)
    path.write_text(json.dumps(ref))
    return ref


def test_register_list_show_and_state_changes(variants: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    url = f"sqlite:///{db}"
    ref = _reference(tmp_path / "stats.json")

    out = _ok(
        _models(
            url,
            "register",
            str(variants["pump_health_v1"]),
            "--name",
            "pump-health",
            "--version",
            "1",
            "--reference",
            str(tmp_path / "stats.json"),
            "--metrics",
            '{"accuracy": 0.97}',
        )
    )
    assert (
        out.strip() == f"registered pump-health 1 sha256={file_sha256(variants['pump_health_v1'])}"
    )
    for version, key in (("2", "pump_health_v2"), ("3", "always_fault")):
        _ok(
            _models(
                url, "register", str(variants[key]), "--name", "pump-health", "--version", version
            )
        )
    stored = _registry(db)
    assert stored["1"].reference == ref and stored["2"].reference is None
    assert stored["1"].metrics == {"accuracy": 0.97}
    assert stored["1"].registered_by.startswith("cli")
    assert _states(db) == {"1": "registered", "2": "registered", "3": "registered"}

    # A version label is unique per model.
    again = _models(
        url, "register", str(variants["always_fault"]), "--name", "pump-health", "--version", "3"
    )
    assert again.exit_code != 0 and "already registered" in again.stderr

    lines = _ok(_models(url, "list")).splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["pump-health", v, "registered"] for v in ("1", "2", "3")
    ]
    as_json = [json.loads(line) for line in _ok(_models(url, "list", "--json")).splitlines()]
    assert {(d["version"], d["sha256"]) for d in as_json} == {
        (v, r.sha256) for v, r in stored.items()
    }

    # Without an active version there is nothing to compare a candidate with, nor to show.
    refused = _models(url, "canary", "pump-health", "2", "--share", "50%")
    assert refused.exit_code != 0 and "activate one first" in refused.stderr
    assert _models(url, "show", "pump-health").exit_code != 0

    assert (
        _ok(_models(url, "activate", "pump-health", "1")).strip() == "pump-health 1 is now active"
    )
    shown = json.loads(_ok(_models(url, "show", "pump-health")))
    assert shown["version"] == "1" and shown["state"] == "active"
    assert shown["reference"]["features"].keys() == set(FEATURES)
    assert shown["spec"]["features"] == list(FEATURES)
    assert shown["agreement"] == {}

    out = _ok(_models(url, "canary", "pump-health", "2", "--share", "50%"))
    assert out.strip() == "pump-health 2 is now canary share=50%"
    assert _states(db) == {"1": "active", "2": "canary", "3": "registered"}
    assert _registry(db)["2"].canary_share == 50.0
    listed = {
        line.split("\t")[1]: line.split("\t")[2] for line in _ok(_models(url, "list")).splitlines()
    }
    assert listed["2"] == "canary share=50%"

    assert _ok(_models(url, "promote", "pump-health")).strip() == "pump-health 2 is now active"
    assert _states(db) == {"1": "retired", "2": "active", "3": "registered"}

    # Rollback without a candidate goes back to the version active before.
    assert _ok(_models(url, "rollback", "pump-health")).strip() == "pump-health 1 is now active"
    assert _states(db) == {"1": "active", "2": "retired", "3": "registered"}

    # With a candidate, rollback ends the candidate and leaves the active version alone.
    out = _ok(
        _models(
            url,
            "canary",
            "pump-health",
            "3",
            "--assets",
            "pump-a, pump-b",
            "--max-disagreement",
            "0.2",
            "--min-samples",
            "5",
        )
    )
    assert out.strip() == "pump-health 3 is now canary assets=pump-a,pump-b"
    canary = _registry(db)["3"]
    assert canary.canary_assets == ("pump-a", "pump-b")
    assert canary.guard == {"max_disagreement": 0.2, "min_samples": 5.0}
    assert _ok(_models(url, "rollback", "pump-health")).strip() == "pump-health 3 is now retired"
    assert _states(db) == {"1": "active", "2": "retired", "3": "retired"}


def test_tampered_file_is_refused_and_registry_unchanged(
    variants: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "registry.db"
    url = f"sqlite:///{db}"
    good = tmp_path / "v1.onnx"
    bad = tmp_path / "v2.onnx"
    shutil.copy(variants["pump_health_v1"], good)
    shutil.copy(variants["pump_health_v2"], bad)
    for version, path in (("1", good), ("2", bad)):
        _ok(_models(url, "register", str(path), "--name", "pump-health", "--version", version))
    _ok(_models(url, "activate", "pump-health", "1"))
    registered_sha = _registry(db)["2"].sha256

    data = bytearray(bad.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit after registration
    bad.write_bytes(bytes(data))

    for args in (
        ("activate", "pump-health", "2"),
        ("canary", "pump-health", "2", "--share", "10%"),
        ("shadow", "pump-health", "2"),
    ):
        result = _models(url, *args)
        assert result.exit_code not in (0, None), result.output
        message = _error_line(result)
        assert message.startswith("error: pump-health 2:") and "sha256" in message, message
        assert registered_sha in message and "refusing" in message, message
        assert '"event": "model_refused"' in result.stderr  # and the refusal is logged
        assert _states(db) == {"1": "active", "2": "registered"}

    # Promote and rollback re-check the file too: a candidate tampered with after it started
    # cannot be promoted.
    shutil.copy(variants["pump_health_v2"], bad)
    _ok(_models(url, "canary", "pump-health", "2", "--share", "10%"))
    bad.write_bytes(bytes(data))
    result = _models(url, "promote", "pump-health")
    assert result.exit_code not in (0, None) and "sha256" in result.stderr, result.stderr
    assert _states(db) == {"1": "active", "2": "canary"}
    # Ending the candidate needs no file: it always works.
    assert _ok(_models(url, "rollback", "pump-health")).strip() == "pump-health 2 is now retired"


def test_bad_reference_and_usage_errors(variants: dict[str, Path], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    stats = tmp_path / "stats.json"
    ref = _reference(stats)
    features = dict(ref["features"])  # type: ignore[call-overload]
    del features["speed.mean"]
    stats.write_text(json.dumps({**ref, "features": features}))
    result = _models(
        url,
        "register",
        str(variants["pump_health_v1"]),
        "--name",
        "pump-health",
        "--version",
        "1",
        "--reference",
        str(stats),
    )
    assert result.exit_code not in (0, None)
    assert "miss features: speed.mean" in result.stderr, result.stderr
    assert _states(tmp_path / "registry.db") == {}

    both = CliRunner().invoke(
        main, ["models", "list", "--store", url, "--mapping", str(tmp_path / "m.yaml")]
    )
    assert both.exit_code == 2 and "exactly one of --mapping FILE or --store URL" in both.output
    share = _models(url, "canary", "pump-health", "1", "--share", "half")
    assert share.exit_code == 2 and "--share" in share.output


def test_mapping_option_uses_the_mappings_store(variants: dict[str, Path], tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.format(store=tmp_path / "bridge.db"))
    # The mapping sets no gateway.models.directory: its `models` folder is the one.
    (tmp_path / "models").mkdir()
    shutil.copy(variants["pump_health_v2"], tmp_path / "models" / "v2.onnx")
    via_mapping = CliRunner().invoke(
        main,
        [
            "models",
            "register",
            str(tmp_path / "models" / "v2.onnx"),
            "--name",
            "pump-health",
            "--version",
            "2",
            "--mapping",
            str(mapping),
        ],
    )
    _ok(via_mapping)
    # The same database file, seen through --store: the version landed in the mapping's store.
    assert _states(tmp_path / "bridge.db") == {"2": "registered"}
    listed = _ok(_models(f"sqlite:///{tmp_path / 'bridge.db'}", "list")).splitlines()
    assert [line.split("\t")[:3] for line in listed] == [["pump-health", "2", "registered"]]


def _bounded_invoke(args: list[str], timeout_s: float = 20.0) -> Result:
    """``CliRunner.invoke`` in a daemon thread: a FIFO that blocks the read fails the test."""
    out: list[Result] = []
    t = threading.Thread(target=lambda: out.append(CliRunner().invoke(main, args)), daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"bridge {' '.join(args)} blocked"
    return out[0]


def test_register_reads_only_regular_files_under_the_models_directory(
    variants: dict[str, Path], tmp_path: Path
) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.format(store=tmp_path / "bridge.db"))
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(variants["pump_health_v1"], models / "v1.onnx")
    shutil.copy(variants["pump_health_v1"], tmp_path / "outside.onnx")
    os.mkfifo(models / "pipe.onnx")
    os.symlink(tmp_path / "outside.onnx", models / "leaves.onnx")
    errors = {}
    for label, given in {
        "etc-passwd": "/etc/passwd",
        "fifo": str(models / "pipe.onnx"),
        "symlink-outside": str(models / "leaves.onnx"),
        "missing": str(models / "nothing.onnx"),
        "dotdot": str(models / ".." / "outside.onnx"),
    }.items():
        result = _bounded_invoke(
            [
                "models",
                "register",
                given,
                "--name",
                "m",
                "--version",
                "1",
                "--mapping",
                str(mapping),
            ]
        )
        assert result.exit_code not in (0, None), (label, result.output)
        errors[label] = _error_line(result)
    assert len(set(errors.values())) == 1, errors
    assert str(models.resolve()) in errors["missing"], errors
    assert _states(tmp_path / "bridge.db") == {}
    good = _bounded_invoke(
        [
            "models",
            "register",
            str(models / "v1.onnx"),
            "--name",
            "pump-health",
            "--version",
            "1",
            "--mapping",
            str(mapping),
        ]
    )
    assert _ok(good).strip().startswith("registered pump-health 1 sha256=")
    # With --store there is no mapping to name the folder: the CLI asks for it.
    bare = CliRunner().invoke(
        main,
        [
            *("models", "register", str(models / "v1.onnx"), "--name", "m", "--version", "1"),
            *("--store", f"sqlite:///{tmp_path / 'bridge.db'}"),
        ],
    )
    assert bare.exit_code == 2 and "--models-dir" in bare.output, bare.output


def test_sign_binds_name_and_version_and_keygen_keeps_an_existing_key(
    variants: dict[str, Path], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    models = tmp_path / "models"
    models.mkdir()
    model = models / "v1.onnx"
    shutil.copy(variants["pump_health_v1"], model)
    private, public = tmp_path / "k", tmp_path / "k.pub"
    _ok(
        CliRunner().invoke(
            main, ["models", "keygen", "--private", str(private), "--public", str(public)]
        )
    )
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key_before = private.read_bytes()
    again = CliRunner().invoke(
        main, ["models", "keygen", "--private", str(private), "--public", str(tmp_path / "p2")]
    )
    assert again.exit_code not in (0, None)
    assert "already exists" in _error_line(again) and private.read_bytes() == key_before

    signed = _ok(
        CliRunner().invoke(
            main,
            [
                *("models", "sign", str(model), "--key", str(private)),
                *("--name", "pump-health", "--version", "1"),
            ],
        )
    )
    sig = models / "v1.onnx.sig"
    assert signed.strip() == f"wrote {sig} (pump-health 1)"
    for name, version in (("other-model", "1"), ("pump-health", "2")):
        result = _models(
            url,
            "register",
            str(model),
            "--name",
            name,
            "--version",
            version,
            "--signature",
            str(sig),
            "--public-key",
            str(public),
        )
        assert result.exit_code not in (0, None), result.output
        assert f"not signed for {name} {version}" in _error_line(result), result.stderr
    ok = _models(
        url,
        "register",
        str(model),
        "--name",
        "pump-health",
        "--version",
        "1",
        "--signature",
        str(sig),
        "--public-key",
        str(public),
    )
    _ok(ok)
    assert _registry(tmp_path / "registry.db")["1"].signature == sig.read_text().strip()
