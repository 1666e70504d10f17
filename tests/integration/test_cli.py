"""The `bridge` command as users run it: validate, schema, and `run` as a real process that
stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from support import free_port, wait_until

from bridge.cli import main
from bridge.prepare import prepare
from bridge.runtime.pipeline import build_gateway
from bridge.simulators.plc.register_map import expected_values
from bridge.simulators.plc.server import PlcSimulator

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = [sys.executable, "-m", "bridge"]

MAPPING = """
version: 1
gateway:
  store: sqlite:///{store}
  api: {{host: 127.0.0.1, port: {api}}}
sources:
  plc: {{kind: modbus, host: 127.0.0.1, port: {plc}, poll_interval_ms: 100}}
assets:
  line:
    tags:
      header_pressure:
        source: plc
        address: {{table: holding, address: 0, type: float32, word_order: CDAB}}
      flow_rate: {{source: plc, address: {{table: holding, address: 4, type: uint16}}, scale: 0.1}}
outputs:
  hmi: {{kind: opcua-server, endpoint: "opc.tcp://127.0.0.1:{hmi}", allow_anonymous: true,
        security_policies: ["None"]}}
"""


def test_validate_ok_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(ROOT / "mappings" / "demo.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "OK (2 sources, 9 assets, 48 tags, 1 models, 2 outputs)" in ok.output

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "version: 1\nsources: {}\nassets:\n  p:\n    tags:\n"
        "      t: {source: nowhere, address: x}\n"
    )
    bad = runner.invoke(main, ["validate", str(broken)])
    assert bad.exit_code == 3
    assert f"{broken}:6: assets.p.tags.t.source: unknown source 'nowhere'" in bad.output
    assert "1 problem(s) found" in bad.output


def test_committed_schema_is_current() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    committed = (ROOT / "mappings" / "bridge-mapping.schema.json").read_text()
    assert json.loads(result.output) == json.loads(committed), (
        "mappings/bridge-mapping.schema.json is stale: run "
        "`bridge schema -o mappings/bridge-mapping.schema.json`"
    )
    schema = json.loads(committed)
    kinds = {
        d["properties"]["kind"]["const"]
        for d in schema["$defs"].values()
        if "kind" in d.get("properties", {})
    }
    assert kinds == {
        "opcua",
        "modbus",
        "mqtt",
        "opcua-server",
        "mes-rest",
        "webhook",
        "uns",
        "sparkplug",
        "lakehouse",
        "ngsi-ld",
        "ditto",
    }


@pytest.fixture
async def plc() -> AsyncIterator[PlcSimulator]:
    sim = PlcSimulator(port=free_port(), update_interval_s=3600)
    await sim.start()
    await sim.apply(0.0)
    try:
        yield sim
    finally:
        await sim.stop()


def _mapping(tmp_path: Path, plc_port: int) -> tuple[Path, int]:
    api = free_port()
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING.format(store=tmp_path / "b.db", api=api, plc=plc_port, hmi=free_port()))
    return path, api


@pytest.mark.serial
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_run_serves_then_stops_cleanly_on_signal(
    tmp_path: Path, plc: PlcSimulator, sig: signal.Signals
) -> None:
    mapping, api = _mapping(tmp_path, plc.port)
    created = CliRunner().invoke(main, ["apikeys", "create", "ops", "--mapping", str(mapping)])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        *BRIDGE,
        "--log-json",
        "run",
        str(mapping),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    reader = asyncio.create_task(proc.stdout.read())  # drain the pipe so logging never blocks
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api}", timeout=2, headers={"X-API-Key": key}
        ) as http:

            async def tags_good() -> bool:
                try:
                    tags = (await http.get("/api/v1/tags")).json()
                except httpx.HTTPError:
                    return proc.returncode is not None  # ends the wait if the process died
                return len(tags) == 2 and all(t["quality"] == "Good" for t in tags)

            await wait_until(tags_good, 30, what="bridge run serving Good tags")
            assert proc.returncode is None, (await reader).decode()
            tags = {t["tag"]: t for t in (await http.get("/api/v1/tags")).json()}
        assert tags["line.header_pressure"]["value"] == pytest.approx(
            expected_values(0.0)["HeaderPressure"]
        )
        proc.send_signal(sig)
        out = await asyncio.wait_for(reader, 20)
        await asyncio.wait_for(proc.wait(), 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
    assert proc.returncode == 0, out.decode()
    events = [
        json.loads(line)["event"] for line in out.decode().splitlines() if line.startswith("{")
    ]
    # Stopped in order: sources first, then sinks, and said so.
    assert events.index("gateway_stopping") < events.index("gateway_stopped")
    assert "task_crashed" not in events


@pytest.mark.serial
async def test_in_process_stop_leaves_no_task_running(tmp_path: Path, plc: PlcSimulator) -> None:
    mapping, _ = _mapping(tmp_path, plc.port)
    before = asyncio.all_tasks()
    stop = asyncio.Event()
    gateway = await build_gateway(prepare(mapping))
    task = asyncio.create_task(gateway.run(stop))
    await asyncio.wait_for(gateway.started.wait(), 20)
    await wait_until(lambda: gateway.table.updates > 0, 10, what="tag updates")
    t0 = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 15)
    assert time.monotonic() - t0 < 10
    await asyncio.sleep(0.2)  # let cancelled library callbacks settle
    leftover = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
    assert not leftover, [t.get_name() for t in leftover]
