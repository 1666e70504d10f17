"""``bridge models quantize ... --name --version --min-agreement``: an INT8 model that disagrees
with the float one on the golden set is refused (exit 3, nothing registered); one that agrees is
registered with its measured agreement."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from bridge.cli import main
from bridge.inference import LoadedModel
from bridge.simulators.plant.model_variants import bundled_classifier
from bridge.store.db import open_store
from bridge.store.registry import RegistryRepository, VersionRecord

# Window features around a running pump (as in the training data): both classes occur.
CENTRE = np.array([5.0, 0.4, 6.2, 55.7, 0.16, 4.2, 1470.0])
SPREAD = np.array([3.0, 0.3, 3.8, 9.6, 0.25, 0.2, 5.6])


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Calibration rows; a broad golden set; and a golden set of borderline windows, whose float
    logit is within a hair of the decision boundary, where INT8 rounding flips labels."""
    out = tmp_path_factory.mktemp("rows")
    rng = np.random.default_rng(5)
    x = CENTRE + SPREAD * rng.normal(size=(20_000, len(CENTRE)))
    clf = bundled_classifier()
    z = ((x - clf.mean) / clf.scale) @ clf.weights + clf.bias
    borderline = x[np.argsort(np.abs(z))[:200]]
    paths = {"calibration": out / "cal.npy", "golden": out / "golden.csv"}
    np.save(paths["calibration"], x[:300].astype(np.float32))
    header = "vibration.mean,vibration.std,vibration.max,bt.mean,bt.slope,dp.mean,speed.mean"
    np.savetxt(paths["golden"], x[300:600], delimiter=",", header=header, comments="")
    paths["borderline"] = out / "borderline.npy"
    np.save(paths["borderline"], borderline.astype(np.float32))
    return paths


def _quantize(src: Path, out: Path, golden: Path, cal: Path, url: str, *more: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "models",
            "quantize",
            str(src),
            "--calibration",
            str(cal),
            "--golden",
            str(golden),
            "-o",
            str(out),
            "--store",
            url,
            "--models-dir",
            str(out.parent),  # registration reads the INT8 file from where it was written
            *more,
        ],
    )


def _registered(db: Path) -> list[VersionRecord]:
    store = open_store(f"sqlite:///{db}")
    try:
        return RegistryRepository(store).list()
    finally:
        store.dispose()


def _agreement(src: Path, int8: Path, golden: np.ndarray) -> float:
    """Measured here, independently of the command: share of rows with the same label."""
    a = LoadedModel.load(src).run(golden.astype(np.float32)).labels
    b = LoadedModel.load(int8).run(golden.astype(np.float32)).labels
    assert a is not None and b is not None
    return float(np.mean(a == b))


def _reported(result: Result) -> float:
    match = re.search(r"^agreement\s+([0-9.]+) on (\d+) golden rows$", result.stdout, re.M)
    assert match, result.stdout
    return float(match.group(1))


def test_refuses_below_min_agreement_and_registers_above(
    variants: dict[str, Path], rows: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "registry.db"
    url = f"sqlite:///{db}"
    src = variants["pump_health_v1"]
    cal = rows["calibration"]

    refused_out = tmp_path / "int8_refused.onnx"
    refused = _quantize(
        src,
        refused_out,
        rows["borderline"],
        cal,
        url,
        "--name",
        "pump-health",
        "--version",
        "1-int8",
        "--min-agreement",
        "0.95",
    )
    assert refused.exit_code == 1, (refused.output, refused.stderr)
    measured = _agreement(src, refused_out, np.load(rows["borderline"]))
    assert measured < 0.95, "the borderline golden set must make INT8 disagree"
    assert _reported(refused) == pytest.approx(measured, abs=1e-4)
    assert f"agreement {measured:.4f} is below --min-agreement 0.95" in refused.stderr
    assert "not registering" in refused.stderr
    assert _registered(db) == []

    kept_out = tmp_path / "int8.onnx"
    kept = _quantize(
        src,
        kept_out,
        rows["golden"],
        cal,
        url,
        "--name",
        "pump-health",
        "--version",
        "1-int8",
        "--min-agreement",
        "0.95",
    )
    assert kept.exit_code == 0, (kept.output, kept.stderr)
    golden = np.loadtxt(rows["golden"], delimiter=",", skiprows=1)
    measured = _agreement(src, kept_out, golden)
    assert measured >= 0.95
    assert _reported(kept) == pytest.approx(measured, abs=1e-4)
    [record] = _registered(db)
    assert (record.name, record.version, record.state) == ("pump-health", "1-int8", "registered")
    assert record.path == str(kept_out.resolve())
    assert record.metrics["agreement_with_float"] == pytest.approx(measured)
    assert record.metrics["golden_rows"] == 300
    assert f"sha256={record.sha256}" in kept.stdout


def test_threshold_outside_zero_one_is_a_usage_error(
    variants: dict[str, Path], rows: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "registry.db"
    for bad in ("1.01", "-0.1"):
        result = _quantize(
            variants["pump_health_v1"],
            tmp_path / "int8.onnx",
            rows["golden"],
            rows["calibration"],
            f"sqlite:///{db}",
            "--name",
            "pump-health",
            "--version",
            "q",
            "--min-agreement",
            bad,
        )
        assert result.exit_code == 2 and "--min-agreement" in result.output, result.output
    assert not (tmp_path / "int8.onnx").exists() and not db.exists()
    lone = _quantize(
        variants["pump_health_v1"],
        tmp_path / "int8.onnx",
        rows["golden"],
        rows["calibration"],
        f"sqlite:///{db}",
        "--name",
        "pump-health",
    )
    assert lone.exit_code == 2 and "--name and --version go together" in lone.output
