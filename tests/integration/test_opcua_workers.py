"""OpcUaWorkerSource (``workers: N``) against the real plant simulator: tags arrive from child
processes, errors reach the source's health, children are gone after close and die with the
gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from faultproxy import FaultProxy
from plant_tags import plant_tags as shared_plant_tags
from support import free_port

from bridge.connectors.opcua import OpcUaSourceSettings
from bridge.connectors.opcua._worker import OpcUaWorkerSource
from bridge.errors import ConnectorError
from bridge.runtime.sources import SourceSupervisor
from bridge.simulators.plant import PlantSimulator
from bridge.types import Quality, SourceTag, TagSample

pytestmark = pytest.mark.asyncio(loop_scope="module")
PUMPS = 4
HERE = Path(__file__).resolve().parent.parent


def plant_tags() -> list[SourceTag]:
    return shared_plant_tags(PUMPS)


def settings(endpoint: str, **kw: object) -> OpcUaSourceSettings:
    return OpcUaSourceSettings.model_validate(
        {
            "endpoint": endpoint,
            "timeout_s": 2,
            "watchdog_s": 3,
            "sessions": 2,
            "workers": 2,
            "reconnect": {"initial_backoff_s": 0.2, "max_backoff_s": 0.5},
            **kw,
        }
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is dead for this purpose
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def eventually(check: Callable[[], bool], within: float = 15.0) -> bool:
    """Poll ``check`` every 50 ms for at most ``within`` seconds."""
    for _ in range(int(within / 0.05)):
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant() -> AsyncIterator[PlantSimulator]:
    sim = PlantSimulator(port=free_port(), pumps=PUMPS, update_interval_s=0.1)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(plant: PlantSimulator) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", plant.port) as p:
        yield p


async def test_tags_arrive_from_two_workers_and_close_ends_them(proxy: FaultProxy) -> None:
    tags = plant_tags()
    source = OpcUaWorkerSource("plant", settings(f"opc.tcp://{proxy.url_host_port}"), tags)
    await source.connect()
    pids = source.pids
    try:
        assert len(set(pids)) == 2 and os.getpid() not in pids
        assert all(alive(p) for p in pids)
        assert proxy.active_connections == 2  # one session per worker
        good: dict[str, TagSample] = {}
        async with asyncio.timeout(10):
            async for batch in source.samples():
                good.update((s.tag, s) for s in batch if s.quality is Quality.GOOD)
                if len(good) == len(tags) and source.counters["sessions"] == 2:
                    break
        assert isinstance(good["P1.Running"].value, bool)  # types survive the pipe
        assert isinstance(good["P4.Vibration"].value, float)
        assert all(s.source_time is not None for s in good.values())
    finally:
        await source.close()
    assert not any(alive(p) for p in pids)
    # the children closed their sessions before exiting (no session left for the server)
    assert await eventually(lambda: proxy.active_connections == 0)


async def test_a_failing_connect_in_a_child_reaches_the_caller() -> None:
    source = OpcUaWorkerSource(
        "plant", settings(f"opc.tcp://127.0.0.1:{free_port()}"), plant_tags()
    )
    with pytest.raises(ConnectorError, match="cannot connect"):
        await source.connect()
    assert source.pids == []
    await source.close()


async def test_a_killed_worker_shows_in_health_and_the_supervisor_starts_new_ones(
    proxy: FaultProxy,
) -> None:
    tags = plant_tags()
    source = OpcUaWorkerSource("plant", settings(f"opc.tcp://{proxy.url_host_port}"), tags)
    delivered: list[TagSample] = []

    async def deliver(batch: Sequence[TagSample]) -> None:
        delivered.extend(batch)

    marked: list[str] = []
    supervisor = SourceSupervisor(
        source, "opcua", [t.tag for t in tags], deliver, lambda ids, why: marked.append(why)
    )
    task = asyncio.create_task(supervisor.run())
    try:
        assert await eventually(lambda: supervisor.state == "connected" and len(delivered) > 0)
        first = source.pids
        os.kill(first[0], signal.SIGKILL)
        assert await eventually(lambda: supervisor.failures >= 1)
        assert any("worker 0 exited" in why for why in marked), marked
        # the supervisor (the one retry loop) connects again with new children
        assert await eventually(
            lambda: supervisor.connects == 2 and supervisor.state == "connected"
        )
        assert set(source.pids).isdisjoint(first)
        assert not alive(first[1])  # the surviving child of the old pair was stopped
        seen = len(delivered)
        assert await eventually(lambda: len(delivered) > seen)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert supervisor.state == "stopped"


async def test_workers_die_with_a_killed_gateway(plant: PlantSimulator) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "worker_parent.py"),
        plant.endpoint,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert parent.stdout is not None
        pids: list[int] = []
        async with asyncio.timeout(60):
            while not pids:
                line = (await parent.stdout.readline()).decode()
                assert line, "the parent ended before printing its workers"
                if line.startswith("PIDS "):
                    pids = json.loads(line[5:])
        assert len(pids) == 2 and all(alive(p) for p in pids)
        parent.kill()  # SIGKILL: no clean-up code of the parent runs
        await asyncio.wait_for(parent.wait(), 10)
        assert await eventually(lambda: not any(alive(p) for p in pids), within=10)
    finally:
        if parent.returncode is None:
            parent.kill()
            await asyncio.wait_for(parent.wait(), 10)
