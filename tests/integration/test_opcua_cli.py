"""`bridge certs create` and `bridge browse` as a user runs them: the real CLI in a subprocess,
against the real plant simulator; the scaffold must pass `bridge validate`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import yaml
from cryptography import x509
from support import free_port

from simulators.plant import PLANT_NAMESPACE, PlantSimulator
from simulators.plant.physics import SIGNALS


async def _bridge(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bridge.cli import main; main()",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest_asyncio.fixture
async def plant() -> AsyncIterator[PlantSimulator]:
    sim = PlantSimulator(port=free_port(), pumps=3, update_interval_s=1.0)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def test_browse_writes_a_scaffold_that_validates(
    plant: PlantSimulator, tmp_path: Path
) -> None:
    out = tmp_path / "mapping.yaml"
    code, _, err = await _bridge(
        "browse", plant.endpoint, "--root", "Plant", "-o", str(out), cwd=tmp_path
    )
    assert code == 0, err
    assert "browsed" in err  # progress
    mapping = yaml.safe_load(out.read_text())
    assert set(mapping["assets"]) == {"Pump01", "Pump02", "Pump03"}
    tags = mapping["assets"]["Pump02"]["tags"]
    assert len(tags) == len(SIGNALS)
    vib = tags["vibration"]
    assert vib["address"] == f"nsu={PLANT_NAMESPACE};s=Pump02.Vibration"
    assert vib["unit"] == SIGNALS["Vibration"][0]
    assert vib["description"].startswith("Double;")
    assert tags["running"]["description"].startswith("Boolean;")
    code, text, err = await _bridge("validate", str(out), cwd=tmp_path)
    assert code == 0, text + err
    assert f"{3 * len(SIGNALS)} tags" in text


async def test_browse_is_bounded_and_fails_cleanly(plant: PlantSimulator, tmp_path: Path) -> None:
    code, text, err = await _bridge(
        "browse", plant.endpoint, "--root", "Plant", "--max-nodes", "5", cwd=tmp_path
    )
    assert code == 0, err
    mapping = yaml.safe_load(text)
    n = sum(len(a["tags"]) for a in mapping["assets"].values())
    assert n == 2  # 3 pump objects + 2 variables = 5 nodes, then the walk stops
    code, _, err = await _bridge("browse", plant.endpoint, "--root", "Nope", cwd=tmp_path)
    assert code == 2 and "Nope" in err


async def test_certs_create_sets_application_uri_and_hosts(tmp_path: Path) -> None:
    code, _, err = await _bridge(
        "certs",
        "create",
        "--application-uri",
        "urn:test:gw",
        "--hostname",
        "gw.local",
        cwd=tmp_path,
    )
    assert code == 0, err
    cert = x509.load_der_x509_certificate((tmp_path / "pki/own/cert.der").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:test:gw"]
    assert san.get_values_for_type(x509.DNSName) == ["gw.local"]
    assert (tmp_path / "pki/own/key.pem").stat().st_mode & 0o077 == 0
    code, _, err = await _bridge("certs", "create", cwd=tmp_path)
    assert code == 1 and "exists" in err
