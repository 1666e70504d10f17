"""Against node-opcua, an OPC UA stack independent of asyncua (so a bug shared by both ends of an
asyncua-only test cannot hide): the source's ``sessions: N`` subscribed to a node-opcua server,
and a node-opcua HMI client subscribed at 10 ms to the gateway's prediction server while it is
written a batch larger than its chunk (drained by its task) and a lone newer change, and one
subscribed at 1 s that gets a change after a quiet spell at once.

node-opcua (pinned) is installed by ``bench/setup_nodeopcua.sh``, which ``scripts/setup`` runs
when npm is there; without it these tests are skipped with that reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import free_port

from bridge.connectors.opcua import (
    OpcUaAddress,
    OpcUaServerSettings,
    OpcUaSource,
    OpcUaSourceSettings,
    PredictionServer,
)
from bridge.connectors.opcua.encode import node_string
from bridge.types import Prediction, PredictionSlot, Quality, SinkContext, SourceTag

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "bench" / "nodeopcua" / "node_modules"
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(
        not (MODULES / "node-opcua-client").is_dir(),
        reason="node-opcua not installed: run bench/setup_nodeopcua.sh (needs npm)",
    ),
]
# Generous: the first node start after the install reads ~70 MB of modules from a cold cache.
DEADLINE_S = 60.0


@contextlib.asynccontextmanager
async def node(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A node process, stopped (and reaped) however the test ends."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    raw = await proc.stdout.readline()
    if not raw:
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode(errors="replace")
        raise AssertionError(f"node exited {await proc.wait()}: {err[-2000:]}")
    return raw.decode().strip()


async def note_of(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """The next JSON line of the HMI script (node-opcua prints its own warnings too)."""
    while not (text := await line(proc)).startswith("{"):
        pass
    note: dict[str, Any] = json.loads(text)
    return note


async def test_sessions_against_a_nodeopcua_server() -> None:
    port, items = free_port(), 300
    async with node("bench/nodeopcua_server.js", str(port), str(items), "100") as server:
        async with asyncio.timeout(DEADLINE_S):
            while await line(server) != "ready":
                pass
        tags = [
            SourceTag(f"v{i}", OpcUaAddress.model_validate(f"nsu=urn:bench:ingest;s=v{i}"))
            for i in range(items)
        ]
        settings = OpcUaSourceSettings.model_validate(
            {"endpoint": f"opc.tcp://127.0.0.1:{port}", "timeout_s": 5, "sessions": 3}
        )
        source = OpcUaSource("nodeopcua", settings, tags)
        await source.connect()
        try:
            seen: dict[str, set[float]] = {}
            async with asyncio.timeout(DEADLINE_S):
                async for batch in source.samples():
                    for s in batch:
                        assert s.quality is Quality.GOOD, (s.tag, s.reason)
                        assert isinstance(s.value, float)
                        seen.setdefault(s.tag, set()).add(s.value)
                    # every item, and each with a change after its first value
                    if len(seen) == items and min(len(v) for v in seen.values()) >= 2:
                        break
            assert source.counters["sessions"] == 3
            assert source.counters["sessions_down"] == 0
        finally:
            await source.close()


SLOTS = tuple(PredictionSlot(f"N{i}", "rul", "1.0.0", "d" * 64) for i in range(1, 6))


def prediction(slot: PredictionSlot, value: float, when: float) -> Prediction:
    return Prediction(
        id=f"{slot.asset}-{value}",
        seq=1,
        asset=slot.asset,
        model=slot.model,
        version=slot.version,
        sha256=slot.sha256,
        value=value,
        score=0.5,
        quality=Quality.GOOD,
        timestamp=when,
        input_age_s=0.1,
    )


async def test_a_nodeopcua_hmi_sees_a_drained_batch_and_a_newer_lone_change_first() -> None:
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        namespace="urn:test:nodeopcua-hmi",
        allow_anonymous=True,
        security_policies=["None"],
    )
    sink = PredictionServer("hmi", settings, SinkContext("gw1", SLOTS))
    await sink.start()
    try:
        ns = sink.namespace_index
        ids = {s.asset: f"ns={ns};s={node_string(s.asset, s.model, 'Value')}" for s in SLOTS}
        async with node(
            "tests/peers/nodeopcua_hmi.js", settings.endpoint, "10", *ids.values()
        ) as hmi:
            notes: list[dict[str, Any]] = []
            async with asyncio.timeout(DEADLINE_S):
                while "ready" not in (note := await note_of(hmi)):
                    notes.append(note)
            assert note["ready"] == 10  # the HMI got the 10 ms it asked for
            sink.chunk = 2
            when = time.time() - 1.5
            await sink.write([prediction(s, 100.0 + i, when) for i, s in enumerate(SLOTS)])
            await sink.write([prediction(SLOTS[4], 999.0, when + 0.5)])  # newer than 104.0
            await asyncio.wait_for(sink.drained(), DEADLINE_S)
            latest: dict[str, dict[str, Any]] = {}
            by_node = {v: k for k, v in ids.items()}
            wanted = {"N1": 100.0, "N2": 101.0, "N3": 102.0, "N4": 103.0, "N5": 999.0}
            async with asyncio.timeout(DEADLINE_S):
                while {a: n["value"] for a, n in latest.items()} != wanted:
                    note = await note_of(hmi)
                    notes.append(note)
                    latest[by_node[note["node"]]] = note
            n5 = [n["value"] for n in notes if n["node"] == ids["N5"]]
            assert 104.0 not in n5  # superseded before it was shown: never sent
            assert all(n["status"] == "Good" for n in latest.values())
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
            assert latest["N1"]["source"].startswith(stamp)  # the prediction's time
            assert hmi.stdin is not None
            hmi.stdin.close()
            await asyncio.wait_for(hmi.wait(), 10)
    finally:
        await sink.close()
    assert sink.health().counters["superseded"] >= 1


@pytest.mark.serial
async def test_a_nodeopcua_hmi_gets_a_change_after_a_quiet_spell_at_once() -> None:
    """The gateway's server sends the first change after a quiet spell at once, not at the next
    tick of a fixed publishing grid (asyncua's own: 0-1 s here). Seen by node-opcua: five
    changes at random phases, each within a quarter of the 1 s interval (on the grid all five
    would be one time in a thousand), and two changes 50 ms apart still one interval apart."""
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        namespace="urn:test:nodeopcua-publish",
        allow_anonymous=True,
        security_policies=["None"],
    )
    slot = SLOTS[0]
    sink = PredictionServer("hmi", settings, SinkContext("gw1", (slot,)))
    await sink.start()
    try:
        node_id = f"ns={sink.namespace_index};s={node_string(slot.asset, slot.model, 'Value')}"
        async with node("tests/peers/nodeopcua_hmi.js", settings.endpoint, "1000", node_id) as hmi:
            async with asyncio.timeout(DEADLINE_S):
                while "ready" not in (note := await note_of(hmi)):
                    pass
            assert note["ready"] == 1000

            async def shown(value: float) -> float:
                """When the HMI printed ``value`` (time.monotonic())."""
                async with asyncio.timeout(DEADLINE_S):
                    while (await note_of(hmi)).get("value") != value:
                        pass
                return time.monotonic()

            # The initial value comes first (at the subscription's first tick after the item
            # was made): the quiet spells are counted from it.
            async with asyncio.timeout(DEADLINE_S):
                while "value" not in await note_of(hmi):
                    pass
            rng = random.Random(11)
            delays = []
            for k in range(5):
                await asyncio.sleep(rng.uniform(1.1, 1.7))
                wrote = time.monotonic()
                await sink.write([prediction(slot, 10.0 + k, time.time())])
                delays.append(await shown(10.0 + k) - wrote)
            assert max(delays) < 0.25, delays
            await asyncio.sleep(1.2)
            await sink.write([prediction(slot, 20.0, time.time())])
            first = await shown(20.0)
            await asyncio.sleep(0.05)
            await sink.write([prediction(slot, 21.0, time.time())])
            assert await shown(21.0) - first >= 0.9
            assert hmi.stdin is not None
            hmi.stdin.close()
            await asyncio.wait_for(hmi.wait(), 10)
    finally:
        await sink.close()
