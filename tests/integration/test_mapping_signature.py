"""Signed mappings: with BRIDGE_MAPPING_PUBLIC_KEY set, `bridge run` starts only on a mapping
signed (`bridge mapping sign`) with the matching private key, for exactly its content; an edit
after signing, a missing signature or another key's signature is refused with a message that
says what to do. A running gateway refuses to reload an edited mapping until it is signed again
(and the refusal is an audit entry)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pump_mapping import pump_mapping
from support import free_port

from bridge.config.signing import sign_mapping
from bridge.errors import ConfigError
from bridge.lifecycle.signature import generate_keypair, load_private_key
from bridge.prepare import prepare
from bridge.runtime.pipeline import build_gateway
from bridge.simulators.plant.model_variants import write_variants

pytestmark = pytest.mark.timeout(180)


def _bridge(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _setup(tmp: Path) -> Path:
    write_variants(tmp / "models")
    generate_keypair(tmp / "approver.key", tmp / "approver.pub")
    generate_keypair(tmp / "other.key", tmp / "other.pub")
    path = tmp / "mapping.yaml"
    path.write_text(
        pump_mapping(
            store=tmp / "bridge.db",
            model="models/pump_health_v1.onnx",
            gateway_id="signed",
            gateway=("api: {enabled: false}",),
            port=free_port(),
        )
    )
    return path


def test_bridge_run_starts_only_on_a_mapping_signed_for_its_content(tmp_path: Path) -> None:
    _setup(tmp_path)
    env = {"BRIDGE_MAPPING_PUBLIC_KEY": str(tmp_path / "approver.pub")}

    unsigned = _bridge(tmp_path, env, "run", "mapping.yaml", "--duration", "1")
    assert unsigned.returncode != 0
    assert "mapping.yaml.sig is missing" in unsigned.stderr, unsigned.stderr[-2000:]
    assert "bridge mapping sign mapping.yaml" in unsigned.stderr

    signed = _bridge(tmp_path, {}, "mapping", "sign", "mapping.yaml", "--key", "approver.key")
    assert signed.returncode == 0, signed.stderr
    started = _bridge(tmp_path, env, "run", "mapping.yaml", "--duration", "1")
    assert started.returncode == 0, started.stderr[-2000:]

    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(mapping.read_text().replace("period_s: 1", "period_s: 2"))
    edited = _bridge(tmp_path, env, "run", "mapping.yaml", "--duration", "1")
    assert edited.returncode != 0
    assert "does not sign this content" in edited.stderr, edited.stderr[-2000:]

    _bridge(tmp_path, {}, "mapping", "sign", "mapping.yaml", "--key", "other.key")
    other = _bridge(tmp_path, env, "run", "mapping.yaml", "--duration", "1")
    assert other.returncode != 0 and "another key signed it" in other.stderr

    # Without the variable nothing is required (a plant that does not sign its mappings).
    unset = {"BRIDGE_MAPPING_PUBLIC_KEY": ""}
    free = _bridge(tmp_path, unset, "run", "mapping.yaml", "--duration", "1")
    assert free.returncode == 0, free.stderr[-2000:]


async def test_a_reload_of_an_edited_mapping_waits_for_a_new_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _setup(tmp_path)
    monkeypatch.setenv("BRIDGE_MAPPING_PUBLIC_KEY", str(tmp_path / "approver.pub"))
    key = load_private_key(tmp_path / "approver.key")
    sign_mapping(key, path)
    gateway = await build_gateway(await asyncio.to_thread(prepare, path))
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        await asyncio.wait_for(gateway.started.wait(), 60)
        assert gateway.reloader is not None
        path.write_text(path.read_text().replace("period_s: 1", "period_s: 2"))
        with pytest.raises(ConfigError, match="does not sign this content"):
            await gateway.reloader.reload()
        sign_mapping(key, path)
        summary = await gateway.reloader.reload()
        assert summary.changes == {"models.changed": ["pump-health"]}
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
