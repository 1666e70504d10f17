"""`bridge models canary --share` with a mapping: says which assets the canary serves, and warns
when the share covers none of them (it used to serve 0 of 4 assets at 50 %, silently)."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner, Result
from pump_mapping import pump_mapping

from bridge.cli import main
from bridge.lifecycle.canary import canary_assets


def _run(mapping: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["models", *args, "--mapping", str(mapping)])


def test_canary_share_names_its_assets_and_warns_when_it_covers_none(
    variants: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    shutil.copy(variants["pump_health_v1"], tmp_path / "models" / "v1.onnx")
    shutil.copy(variants["pump_health_v2"], tmp_path / "models" / "v2.onnx")
    mapping = tmp_path / "mapping.yaml"
    four = [f"pump-{i}" for i in range(1, 5)]
    mapping.write_text(
        pump_mapping(store=tmp_path / "bridge.db", model="models/v1.onnx", assets=four)
    )
    for version in ("1", "2"):
        reg = _run(
            mapping, "register", str(tmp_path / "models" / f"v{version}.onnx"),
            "--name", "pump-health", "--version", version,
        )  # fmt: skip
        assert reg.exit_code == 0, (reg.stdout, reg.stderr)
    active = _run(mapping, "activate", "pump-health", "1")
    assert active.exit_code == 0, (active.stdout, active.stderr)

    half = _run(mapping, "canary", "pump-health", "2", "--share", "50%")
    assert half.exit_code == 0, (half.stdout, half.stderr)
    chosen = canary_assets("pump-health", four, 50.0)
    assert len(chosen) == 2
    assert f"serves 2 of 4 assets: {', '.join(sorted(chosen))}" in half.stdout
    assert "warning" not in half.stderr

    tiny = _run(mapping, "canary", "pump-health", "2", "--share", "10%")
    assert tiny.exit_code == 0, (tiny.stdout, tiny.stderr)
    assert "warning: a share of 10% covers none of the 4 assets of pump-health" in tiny.stderr
    assert "give at least 12.5%" in tiny.stderr
