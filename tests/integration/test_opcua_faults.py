"""OpcUaSource under the runtime's reconnect loop (SourceSupervisor, the only one), with the fault
proxy between it and the real plant simulator: restarts, a blackhole, RST, garbage, truncation.

Shortened against the issue to keep the suite fast: 3 restarts instead of 20, and a 4 s
blackhole instead of 60 s (the detection path is the same: keep-alive probe + watchdog).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from faultproxy import FaultProxy, Mode
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
from bridge.runtime.sources import SourceSupervisor
from bridge.simulators.plant import PLANT_NAMESPACE, PlantSimulator
from bridge.simulators.plant.physics import SIGNALS
from bridge.types import Quality, SourceTag, TagSample

PUMPS = 2
RESTARTS = 20  # as the issue asks: a server restarted 20 times
BLACKHOLE_S = 60.0  # a 60 s blackhole: longer than every timeout and watchdog


@dataclass
class Table:
    """The latest quality per tag and when it was set, like the runtime's tag table."""

    latest: dict[str, tuple[Quality, float]] = field(default_factory=dict)

    async def deliver(self, batch: Sequence[TagSample]) -> None:
        now = time.monotonic()
        for s in batch:
            self.latest[s.tag] = (s.quality, now)

    def mark_bad(self, tags: Sequence[str], reason: str) -> None:
        now = time.monotonic()
        for t in tags:
            self.latest[t] = (Quality.BAD, now)

    def all_bad(self, tags: Sequence[str]) -> bool:
        return all(self.latest.get(t, (Quality.GOOD, 0))[0] is Quality.BAD for t in tags)

    def all_good_since(self, tags: Sequence[str], since: float) -> bool:
        return all(
            (q := self.latest.get(t)) is not None and q[0] is Quality.GOOD and q[1] > since
            for t in tags
        )


@dataclass
class Rig:
    plant: PlantSimulator
    proxy: FaultProxy
    source: OpcUaSource
    table: Table
    supervisor: SourceSupervisor
    tags: list[str]


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    plant = PlantSimulator(port=free_port(), pumps=PUMPS, update_interval_s=0.1)
    await plant.start()
    proxy = FaultProxy(LOOPBACK, plant.port)
    await proxy.start()
    tags = [
        SourceTag(
            f"p{p}_{signal.lower()}",
            OpcUaAddress.model_validate(f"nsu={PLANT_NAMESPACE};s=Pump{p:02d}.{signal}"),
        )
        for p in range(1, PUMPS + 1)
        for signal in SIGNALS
    ]
    settings = OpcUaSourceSettings.model_validate(
        {
            "endpoint": f"opc.tcp://{proxy.url_host_port}",
            "timeout_s": 2,
            "watchdog_s": 2,
            "publishing_interval_ms": 100,
        }
    )
    source = OpcUaSource("plant", settings, tags)
    table = Table()
    names = [t.tag for t in tags]
    supervisor = SourceSupervisor(
        source, "opcua", names, table.deliver, table.mark_bad, max_backoff_s=1.0
    )
    task = asyncio.create_task(supervisor.run())
    try:
        yield Rig(plant, proxy, source, table, supervisor, names)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await proxy.stop()
        await plant.stop()
    assert not source.connected


def _client_tasks() -> list[asyncio.Task[object]]:
    """The gateway side's tasks: not the simulator's server (a stopped asyncua server keeps
    its sessions' timeout loops until the session timeout), not the proxy, not the test."""
    mine = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        where = code.co_filename if code is not None else ""
        if not any(x in where for x in ("asyncua/server", "simulators", "faultproxy", "tests/")):
            mine.append(task)
    return mine


def _tasks() -> int:
    return len(_client_tasks())


def _task_names() -> list[str]:
    return sorted(str(t.get_coro()).split(" at ")[0] for t in _client_tasks())


@pytest.mark.timeout(600)
async def test_restarts_bad_fast_fresh_after_no_task_growth(rig: Rig) -> None:
    await wait_until(lambda: rig.table.all_good_since(rig.tags, 0), 10, what="first values")
    baseline: int | None = None
    for i in range(RESTARTS):
        await rig.plant.stop()
        await wait_until(lambda: rig.table.all_bad(rig.tags), 2, what=f"Bad after drop {i}")
        await asyncio.sleep(0.3)  # the server is really gone for a moment
        restarted = time.monotonic()
        await rig.plant.start()  # asyncua's server start takes seconds under load: not counted
        await wait_until(
            lambda r=restarted: rig.table.all_good_since(rig.tags, r),  # type: ignore[misc]
            5,
            what=f"fresh values after restart {i}",
        )
        await asyncio.sleep(0.2)
        if baseline is None:
            baseline = _tasks()
        # asyncua's client tasks are per session: the count must not grow with each reconnect
        assert _tasks() <= baseline, f"tasks grew from {baseline}: {_task_names()}"
    assert rig.supervisor.connects == RESTARTS + 1


@pytest.mark.timeout(300)
async def test_blackhole_bad_then_recovers_without_hung_tasks(rig: Rig) -> None:
    await wait_until(lambda: rig.table.all_good_since(rig.tags, 0), 10, what="first values")
    await asyncio.sleep(0.2)
    before = _tasks()
    rig.proxy.set_mode(Mode.BLACKHOLE)
    await wait_until(lambda: rig.table.all_bad(rig.tags), 10, what="Bad during blackhole")
    await asyncio.sleep(BLACKHOLE_S)
    assert rig.table.all_bad(rig.tags)  # nothing Good can arrive through a blackhole
    assert rig.supervisor.state == "down" and rig.supervisor.failures >= 1
    rig.proxy.set_mode(Mode.PASS)
    restored = time.monotonic()
    await wait_until(
        lambda: rig.table.all_good_since(rig.tags, restored), 5, what="recovery after blackhole"
    )
    await asyncio.sleep(0.3)
    assert _tasks() <= before, f"tasks {_task_names()} > {before} + 2: something hangs"


async def test_link_faults_mark_bad_and_recover(rig: Rig) -> None:
    await wait_until(lambda: rig.table.all_good_since(rig.tags, 0), 10, what="first values")
    for mode in (Mode.RST, Mode.GARBAGE, Mode.TRUNCATE, Mode.LATENCY):
        # 3 s latency is beyond timeout_s=2 and the 2 s watchdog: so slow a link counts as dead
        rig.proxy.set_mode(mode, latency_s=3.0)
        await wait_until(lambda: rig.table.all_bad(rig.tags), 10, what=f"Bad under {mode}")
        rig.proxy.set_mode(Mode.PASS)
        rig.proxy.reset_all()  # drop links still carrying a half-read or delayed stream
        restored = time.monotonic()
        await wait_until(
            lambda r=restored: rig.table.all_good_since(rig.tags, r),  # type: ignore[misc]
            8,
            what=f"recovery after {mode}",
        )
