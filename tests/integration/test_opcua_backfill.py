"""Backfill: after an outage, the gap is read from the server's history into the windows.

A real asyncua server historizes three of the four pump tags (in memory) and counts each up by 1
every 0.1 s; the fourth (``speed``) is not historized. The gateway side is built as the pipeline
builds it from the mapping (OpcUaSource with the mapping's ``backfill:`` settings, the
runtime's SourceSupervisor, a real TagTable with the model's windows) and reaches the server
through a fault proxy that resets every connection for the length of the outage.

After the link is back, the windows of the historized tags hold every value the server wrote
during the outage (a run of consecutive counts, no hole), flagged historical on the way in and
never as the tag's live value; the tag without history keeps its gap without a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from faultproxy import FaultProxy, Mode
from historian import Historian, historian
from pump_mapping import pump_mapping
from structlog.testing import capture_logs
from support import LOOPBACK, free_port, wait_until

from bridge.config.loader import load_mapping
from bridge.connectors.opcua import OpcUaSource
from bridge.runtime.sources import SourceSupervisor
from bridge.runtime.tagtable import TagTable
from bridge.types import Quality, SourceTag, TagSample

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "mappings" / "models" / "pump_health.onnx"
NODE_MODULES = ROOT / "bench" / "nodeopcua" / "node_modules"
HISTORIZED = ("vibration", "bearing_temperature", "discharge_pressure")
PERIOD_S = 0.1
OUTAGE_S = float(os.environ.get("BRIDGE_TEST_BACKFILL_OUTAGE_S", "60"))


def _count(tag: str, count: int) -> float:
    return float(count)


@contextlib.asynccontextmanager
async def _plant(history: bool = True) -> AsyncIterator[tuple[Historian, int]]:
    """Counts up by 1 every PERIOD_S; the HISTORIZED tags keep their history."""
    async with historian(_count, HISTORIZED if history else (), PERIOD_S) as plant:
        yield plant, plant.port


@dataclass
class Rig:
    table: TagTable
    supervisor: SourceSupervisor
    batches: list[Sequence[TagSample]] = field(default_factory=list)

    def values(self, tag: str) -> np.ndarray:
        ring = self.table.get(f"pump-a.{tag}").ring
        assert ring is not None
        return ring.since(float("-inf"))[1]


@contextlib.asynccontextmanager
async def _gateway(
    tmp_path: Path, port: int, backfill: str = "{}", window_s: float = 3 * OUTAGE_S
) -> AsyncIterator[Rig]:
    text = pump_mapping(
        store=tmp_path / "unused.db",
        model=MODEL,
        port=port,
        timing={"period_s": 1, "window_s": window_s, "max_samples": 10_000},
    ).replace(
        f'endpoint: "opc.tcp://127.0.0.1:{port}"}}',
        # The server keeps every sampled change between two Publish responses: with the
        # default queue of one, two counts in one publishing interval (timer jitter) would
        # deliver only the later, and the window's live part would miss a count.
        f'endpoint: "opc.tcp://127.0.0.1:{port}", timeout_s: 2, server_queue_size: 100, '
        f"backfill: {backfill}}}",
    )
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    mapping = load_mapping(path)
    endpoint = mapping.sources["plant"]
    tags = mapping.tags_of_source("plant")
    source = OpcUaSource("plant", endpoint.settings, [SourceTag(t.id, t.address) for t in tags])
    table = TagTable(mapping)
    rig = Rig(table, None)  # type: ignore[arg-type]

    async def deliver(batch: Sequence[TagSample]) -> None:
        rig.batches.append(batch)
        table.apply(batch)

    rig.supervisor = SourceSupervisor(
        source, "opcua", [t.id for t in tags], deliver, table.mark_bad
    )
    task = asyncio.create_task(rig.supervisor.run())
    try:
        await wait_until(lambda: len(rig.values("vibration")) >= 5, 30, what="first live values")
        yield rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def _outage(rig: Rig, proxy: FaultProxy, seconds: float) -> None:
    proxy.set_mode(Mode.RST)
    await wait_until(
        lambda: rig.table.get("pump-a.vibration").quality is Quality.BAD, 15, what="loss seen"
    )
    await asyncio.sleep(seconds)
    proxy.set_mode(Mode.PASS)
    await wait_until(
        lambda: rig.table.get("pump-a.vibration").quality is Quality.GOOD,
        60,
        what="values after the outage",
    )


def _historical(rig: Rig) -> list[TagSample]:
    return [s for batch in rig.batches for s in batch if s.historical]


async def _no_hole_after_outage(tmp_path: Path, port: int, backfill: str = "{}") -> None:
    """The outage, then every count each historized tag's server wrote is in its window."""
    async with (
        FaultProxy(LOOPBACK, port) as proxy,
        _gateway(tmp_path, proxy.port, backfill) as rig,
    ):
        before = len(rig.values("vibration"))
        with capture_logs() as logs:
            await _outage(rig, proxy, OUTAGE_S)
            await wait_until(
                lambda: len(rig.values("vibration")) > before + OUTAGE_S / PERIOD_S / 2,
                30,
                what="the gap backfilled",
            )
        for tag in HISTORIZED:
            values = rig.values(tag)
            steps = np.diff(np.unique(values))
            # Every count the server wrote is in the window, once the outage is over:
            # consecutive counts from the first value to the newest, nothing missing.
            # (A writer on a loaded machine counts a little slower than every PERIOD_S.)
            assert steps.size > 0.8 * OUTAGE_S / PERIOD_S, tag
            assert np.all(steps == 1.0), (tag, values[np.flatnonzero(steps != 1) + 1])
            ring = rig.table.get(f"pump-a.{tag}").ring
            assert ring is not None
            times = ring.since(float("-inf"))[0]
            assert np.all(np.diff(times) >= 0), "window times went back"
        speed = np.diff(np.unique(rig.values("speed")))
        assert speed.max() > OUTAGE_S / PERIOD_S / 2  # no history: its gap stays

    historical = _historical(rig)
    assert {s.tag for s in historical} == {f"pump-a.{t}" for t in HISTORIZED}
    assert len(historical) >= 3 * 0.8 * OUTAGE_S / PERIOD_S
    assert rig.table.backfilled == len(historical)
    for tag in HISTORIZED:
        # The live state of each tag is newer than every historical value, never one of them.
        value = rig.table.get(f"pump-a.{tag}").value
        newest = max(float(s.value) for s in historical if s.tag == f"pump-a.{tag}")  # type: ignore[arg-type]
        assert isinstance(value, float) and value > newest, (
            tag,
            value,
            [(e["event"], e.get("values"), e.get("gap_s")) for e in logs if "source" in e],
            [(b[0].tag, b[0].value, b[0].historical, len(b)) for b in rig.batches[-12:]],
        )
    done = [e for e in logs if e["event"] == "backfill"]
    assert done and done[-1]["historized"] == 3 and done[-1]["tags"] == 4
    assert not [e for e in logs if e["event"] == "backfill_failed"]


@pytest.mark.timeout(120 + 2 * OUTAGE_S)
async def test_outage_leaves_no_hole_in_the_windows(tmp_path: Path) -> None:
    async with _plant() as (plant, port):
        await _no_hole_after_outage(tmp_path, port)
        # The plant counted through the outage (a writer on a loaded machine counts a little
        # slower than every PERIOD_S: 597 in 60 s once).
        assert plant.count > 0.8 * OUTAGE_S / PERIOD_S


@pytest.mark.timeout(180 + 2 * OUTAGE_S)
@pytest.mark.skipif(
    not (NODE_MODULES / "node-opcua-server").is_dir(),
    reason="node-opcua not installed: run bench/setup_nodeopcua.sh (needs npm)",
)
async def test_outage_leaves_no_hole_with_a_nodeopcua_historian(tmp_path: Path) -> None:
    """The same against node-opcua's server and its in-memory historian (an independent
    HistoryRead implementation, with continuation points per the specification)."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "peers" / "history_plant.js"),
        str(port),
        str(int(PERIOD_S * 1000)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):  # the first node start reads its modules cold
            while (line := await proc.stdout.readline()) and line.strip() != b"ready":
                pass
        assert line, "the node-opcua plant exited before it was ready"
        # Ten values per response: the gap comes through continuation points, page by page.
        await _no_hole_after_outage(tmp_path, port, "{values_per_call: 10}")
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_budget_per_tag_cuts_the_backfill_and_says_so(tmp_path: Path) -> None:
    async with _plant() as (_, port), FaultProxy(LOOPBACK, port) as proxy:
        backfill = "{max_values_per_tag: 7, nodes_per_call: 2}"
        async with _gateway(tmp_path, proxy.port, backfill, window_s=60) as rig:
            with capture_logs() as logs:
                await _outage(rig, proxy, 3)
                await wait_until(
                    lambda: any(e["event"] == "backfill" for e in logs), 30, what="backfill"
                )
        historical = _historical(rig)
        per_tag = {t: [s for s in historical if s.tag == f"pump-a.{t}"] for t in HISTORIZED}
        for tag, samples in per_tag.items():
            assert len(samples) == 7, tag
            # The oldest of the gap first, in time order.
            times = [s.source_time or s.server_time for s in samples]
            assert times == sorted(times)  # type: ignore[type-var]
        report = next(e for e in logs if e["event"] == "backfill")
        assert report["truncated"] == 3 and report["values"] == 21


async def test_server_without_history_is_handled_quietly(tmp_path: Path) -> None:
    async with _plant(history=False) as (_, port), FaultProxy(LOOPBACK, port) as proxy:
        async with _gateway(tmp_path, proxy.port, window_s=60) as rig:
            with capture_logs() as logs:
                await _outage(rig, proxy, 3)
                await wait_until(
                    lambda: any(e["event"] == "backfill" for e in logs), 30, what="backfill"
                )
            assert rig.supervisor.state == "connected"
        assert not _historical(rig)
        report = next(e for e in logs if e["event"] == "backfill")
        assert report["historized"] == 0 and report["values"] == 0
        assert not [
            e for e in logs if e["log_level"] in ("warning", "error") and "backfill" in e["event"]
        ]
