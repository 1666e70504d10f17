"""The production profile as an operator meets it: ``bridge run`` refuses to start while the
mapping's model carries no signature for its name and version (exit 2, a message that says what
to do), and starts once ``bridge models sign`` has written one beside it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pump_mapping import pump_mapping
from support import free_port

from bridge.simulators.plant.model_variants import write_variants

pytestmark = pytest.mark.timeout(120)

BRIDGE = [sys.executable, "-m", "bridge"]


def _bridge(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BRIDGE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _error(result: subprocess.CompletedProcess[str]) -> str:
    return next((x for x in result.stderr.splitlines() if x.startswith("error:")), "")


def test_production_start_needs_the_mapping_model_signed_for_its_version(tmp_path: Path) -> None:
    write_variants(tmp_path / "models")
    (tmp_path / "mapping.yaml").write_text(
        pump_mapping(
            store=tmp_path / "bridge.db",
            model="models/pump_health_v1.onnx",
            gateway_id="prod",
            gateway=(
                "durability: {profile: production}",
                "api: {enabled: false}",
                "models: {public_key: signing.pub}",
            ),
            port=free_port(),
            version="7",
        )
    )
    keygen = _bridge(
        tmp_path, "models", "keygen", "--private", "signing.key", "--public", "signing.pub"
    )
    assert keygen.returncode == 0, keygen.stderr

    unsigned = _bridge(tmp_path, "run", "mapping.yaml", "--duration", "2")
    assert unsigned.returncode == 1, (unsigned.stdout, unsigned.stderr)
    message = _error(unsigned)
    assert "pump-health 7" in message and "has no signature" in message, unsigned.stderr
    assert "bridge models sign" in message and "pump_health_v1.onnx.sig" in message, message

    model = "models/pump_health_v1.onnx"
    signed_for_other = _bridge(
        tmp_path,
        "models",
        "sign",
        model,
        "--key",
        "signing.key",
        "--name",
        "pump-health",
        "--version",
        "6",
    )
    assert signed_for_other.returncode == 0, signed_for_other.stderr
    refused = _bridge(tmp_path, "run", "mapping.yaml", "--duration", "2")
    assert refused.returncode == 1 and "not signed for pump-health 7" in _error(refused)

    sign = _bridge(
        tmp_path,
        "models",
        "sign",
        model,
        "--key",
        "signing.key",
        "--name",
        "pump-health",
        "--version",
        "7",
    )
    assert sign.returncode == 0, sign.stderr
    started = _bridge(tmp_path, "run", "mapping.yaml", "--duration", "2")
    assert started.returncode == 0, (started.stdout[-2000:], started.stderr[-2000:])
    listed = _bridge(tmp_path, "models", "list", "--mapping", "mapping.yaml", "--json")
    assert listed.returncode == 0 and '"version": "7"' in listed.stdout, listed.stderr
