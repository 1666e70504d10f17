"""OpcUaSource with ``sessions: N`` against the real plant simulator (through a TCP proxy that
counts the connections and can reset one): every tag arrives, a lost session marks only its own
tags Bad, the source stays up and reconnects that session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import pytest_asyncio
from faultproxy import FaultProxy
from plant_tags import plant_tags as shared_plant_tags
from support import free_port

from bridge.connectors.opcua import OpcUaSource, OpcUaSourceSettings
from bridge.connectors.opcua.source import shares
from bridge.errors import ConnectorError
from bridge.runtime.sources import SourceSupervisor
from bridge.simulators.plant import PlantSimulator
from bridge.types import Quality, SourceTag, TagSample

pytestmark = pytest.mark.asyncio(loop_scope="module")
PUMPS = 4


def plant_tags() -> list[SourceTag]:
    return shared_plant_tags(PUMPS)


def settings(endpoint: str, **kw: object) -> OpcUaSourceSettings:
    return OpcUaSourceSettings.model_validate(
        {
            "endpoint": endpoint,
            "timeout_s": 2,
            "watchdog_s": 3,
            "reconnect": {"initial_backoff_s": 0.2, "max_backoff_s": 0.5},
            **kw,
        }
    )


async def eventually(check: Callable[[], bool], within: float = 10.0) -> bool:
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


async def test_all_tags_arrive_over_three_sessions(proxy: FaultProxy) -> None:
    tags = plant_tags()
    source = OpcUaSource("plant", settings(f"opc.tcp://{proxy.url_host_port}", sessions=3), tags)
    await source.connect()
    try:
        assert proxy.active_connections == 3  # one TCP connection per session
        good: dict[str, int] = {}
        async with asyncio.timeout(10):
            async for batch in source.samples():
                for s in batch:
                    if s.quality is Quality.GOOD:
                        good[s.tag] = good.get(s.tag, 0) + 1
                # every tag twice: the initial read and at least one change after it
                if len(good) == len(tags) and min(good.values()) >= 2:
                    break
        assert source.counters["sessions"] == 3
        assert source.counters["sessions_down"] == 0
        assert source.degraded == ""
    finally:
        await source.close()
    assert await eventually(lambda: proxy.active_connections == 0)  # the sessions are closed


async def test_a_lost_session_marks_only_its_tags_bad_and_comes_back(proxy: FaultProxy) -> None:
    tags = plant_tags()
    names = [t.tag for t in tags]
    source = OpcUaSource("plant", settings(f"opc.tcp://{proxy.url_host_port}", sessions=2), tags)
    await source.connect()
    latest: dict[str, TagSample] = {}
    try:
        stream = source.samples()
        async with asyncio.timeout(10):
            while len(latest) < len(tags):
                for s in await anext(stream):
                    latest[s.tag] = s
        assert all(s.quality is Quality.GOOD for s in latest.values())

        # RST one of the two connections: one session is lost, the other keeps going.
        links = list(proxy._links)  # the test picks one to cut
        assert len(links) == 2
        links[0].reset()
        cut_at = time.time()
        bad: set[str] = set()
        good_after: set[str] = set()
        async with asyncio.timeout(10):
            while not bad or not good_after:
                for s in await anext(stream):
                    if s.quality is Quality.BAD:
                        bad.add(s.tag)
                        assert "session" in s.reason
                    elif s.received_time > cut_at and bad and s.tag not in bad:
                        good_after.add(s.tag)  # the other session's tags keep flowing
        halves = [set(names[r.start : r.stop]) for r in shares(len(names), 2)]
        assert bad in halves, bad  # exactly one session's share, nothing of the other
        assert source.connected

        # The source reconnects the lost session by itself (backoff 0.2-0.5 s): its tags are
        # Good again, and the source never raised.
        back: set[str] = set()
        async with asyncio.timeout(10):
            while back != bad:
                for s in await anext(stream):
                    if s.tag in bad and s.quality is Quality.GOOD:
                        back.add(s.tag)
        assert source.counters["session_reconnects"] == 1
        assert source.counters["sessions_down"] == 0
        assert source.degraded == ""
        assert await eventually(lambda: proxy.active_connections == 2)
    finally:
        await source.close()


async def test_losing_every_session_raises(proxy: FaultProxy) -> None:
    source = OpcUaSource(
        "plant", settings(f"opc.tcp://{proxy.url_host_port}", sessions=2), plant_tags()
    )
    await source.connect()
    try:
        stream = source.samples()
        await anext(stream)
        proxy.reset_all()
        with pytest.raises(ConnectorError):
            async with asyncio.timeout(10):
                while True:
                    await anext(stream)
    finally:
        await source.close()


async def test_supervisor_health_is_degraded_while_a_session_is_down(proxy: FaultProxy) -> None:
    tags = plant_tags()
    source = OpcUaSource(
        "plant",
        settings(
            f"opc.tcp://{proxy.url_host_port}",
            sessions=2,
            # a long backoff keeps the session down while the health is read
            reconnect={"initial_backoff_s": 30, "max_backoff_s": 30},
        ),
        tags,
    )
    delivered: list[TagSample] = []

    async def deliver(batch: Sequence[TagSample]) -> None:
        delivered.extend(batch)

    supervisor = SourceSupervisor(
        source, "opcua", [t.tag for t in tags], deliver, lambda ids, why: None
    )
    task = asyncio.create_task(supervisor.run())
    try:
        assert await eventually(
            lambda: supervisor.health().state == "ok" and len(delivered) >= len(tags)
        )
        assert supervisor.health().counters["sessions"] == 2
        next(iter(proxy._links)).reset()  # cut one of the two
        assert await eventually(lambda: supervisor.health().state == "degraded")
        health = supervisor.health()
        assert "1 of 2 sessions down" in health.detail
        assert health.counters["sessions_down"] == 1
        assert supervisor.connects == 1  # the source as a whole was never reconnected
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
