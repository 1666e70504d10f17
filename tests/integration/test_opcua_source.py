"""OpcUaSource against the real plant simulator: samples, per-tag failures, link loss, restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio
from asyncua import ua
from plant_tags import plant_tags as shared_plant_tags
from support import free_port

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
from bridge.errors import ConnectorError
from bridge.simulators.plant import PLANT_NAMESPACE, PlantSimulator
from bridge.simulators.plant.physics import SIGNALS
from bridge.types import Quality, SourceTag, TagSample

pytestmark = pytest.mark.asyncio(loop_scope="module")
PUMPS = 3


def plant_tags(pumps: int = PUMPS) -> list[SourceTag]:
    return shared_plant_tags(pumps)


def settings(endpoint: str, **kw: object) -> OpcUaSourceSettings:
    return OpcUaSourceSettings.model_validate(
        {"endpoint": endpoint, "timeout_s": 2, "watchdog_s": 3, **kw}
    )


async def collect(
    source: OpcUaSource, until: set[str], within: float = 10.0
) -> dict[str, TagSample]:
    """Latest sample per tag until every tag in ``until`` was seen; bounded by ``within``."""
    latest: dict[str, TagSample] = {}
    async with asyncio.timeout(within):
        async for batch in source.samples():
            for sample in batch:
                latest[sample.tag] = sample
            if until <= latest.keys():
                return latest
    raise AssertionError("samples() ended early")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant() -> AsyncIterator[PlantSimulator]:
    sim = PlantSimulator(port=free_port(), pumps=PUMPS, update_interval_s=0.1)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def test_all_tags_good_with_source_timestamps(plant: PlantSimulator) -> None:
    tags = plant_tags()
    source = OpcUaSource("plant", settings(plant.endpoint), tags)
    await source.connect()
    try:
        first = await collect(source, {t.tag for t in tags})
        assert all(s.quality is Quality.GOOD for s in first.values()), first
        now = time.time()
        for sample in first.values():
            assert sample.source_time is not None and abs(sample.source_time - now) < 5
            assert sample.server_time is not None
        assert isinstance(first["P1.Running"].value, bool)
        assert isinstance(first["P1.Vibration"].value, float)
        # Values keep flowing: a later Speed sample carries a newer source timestamp.
        t0 = first["P2.Speed"].source_time or 0.0
        async with asyncio.timeout(5):
            async for batch in source.samples():
                newer = [s for s in batch if s.tag == "P2.Speed" and (s.source_time or 0) > t0]
                if newer:
                    break
    finally:
        await source.close()


async def test_unknown_node_and_namespace_are_bad_others_good(plant: PlantSimulator) -> None:
    tags = [
        *plant_tags(1),
        SourceTag("X.nope", OpcUaAddress(node=f"nsu={PLANT_NAMESPACE};s=Nope")),
        SourceTag("X.other", OpcUaAddress(node="nsu=urn:not:on:this:server;s=Pump01.Speed")),
    ]
    source = OpcUaSource("plant", settings(plant.endpoint), tags)
    await source.connect()
    try:
        seen = await collect(source, {t.tag for t in tags})
        assert seen["X.nope"].quality is Quality.BAD
        assert seen["X.nope"].reason == "BadNodeIdUnknown"
        assert seen["X.other"].quality is Quality.BAD
        assert "urn:not:on:this:server" in seen["X.other"].reason
        good = [s for tag, s in seen.items() if not tag.startswith("X.")]
        assert len(good) == len(SIGNALS)
        assert all(s.quality is Quality.GOOD for s in good)
    finally:
        await source.close()


async def test_full_queue_is_coalesced_counted_and_uncertain(plant: PlantSimulator) -> None:
    tags = plant_tags()
    source = OpcUaSource("plant", settings(plant.endpoint, queue_size=3), tags)
    await source.connect()
    try:
        stream = source.samples()
        await anext(stream)  # the initial read
        await asyncio.sleep(1.0)  # a slow consumer: ~10 publishes pile up behind a 3-slot queue
        assert source.dropped > 0
        spilled: list[TagSample] = []
        async with asyncio.timeout(5):
            while not spilled:
                batch: Sequence[TagSample] = await anext(stream)
                spilled = [s for s in batch if s.quality is Quality.UNCERTAIN]
        assert all("dropped" in s.reason for s in spilled)
        assert all(s.value is not None for s in spilled)
    finally:
        await source.close()


async def test_connect_to_nothing_raises_connector_error() -> None:
    source = OpcUaSource("plant", settings(f"opc.tcp://127.0.0.1:{free_port()}"), plant_tags(1))
    started = time.monotonic()
    with pytest.raises(ConnectorError):
        await source.connect()
    assert time.monotonic() - started < 5
    await source.close()


async def test_server_stop_raises_close_is_bounded_and_restart_works() -> None:
    sim = PlantSimulator(port=free_port(), pumps=1, update_interval_s=0.1)
    await sim.start()
    tags = plant_tags(1)
    source = OpcUaSource("plant", settings(sim.endpoint), tags)
    try:
        await source.connect()
        await collect(source, {t.tag for t in tags})

        await sim.stop()
        stopped = time.monotonic()
        with pytest.raises(ConnectorError):
            async with asyncio.timeout(10):
                async for _ in source.samples():
                    pass
        assert time.monotonic() - stopped < 3.0

        started = time.monotonic()
        await source.close()
        await source.close()  # idempotent
        assert time.monotonic() - started < 3.0

        await sim.start()  # same port, right after
        await source.connect()
        seen = await collect(source, {t.tag for t in tags})
        assert all(s.quality is Quality.GOOD for s in seen.values())
    finally:
        await source.close()
        await sim.stop()


class FreezableProxy:
    """A loopback TCP relay that can go silent without closing (a blackholed link)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.frozen:
                writer.write(data)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        with contextlib.suppress(OSError):
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_blackholed_link_raises_and_close_does_not_hang(plant: PlantSimulator) -> None:
    proxy = FreezableProxy(plant.port)
    await proxy.start()
    tags = plant_tags(1)
    source = OpcUaSource("plant", settings(f"opc.tcp://127.0.0.1:{proxy.port}"), tags)
    try:
        # The set-up is not what is tested: on a loaded machine one request of the first
        # connect may exceed the short timeout_s this test needs, and the gateway's supervisor
        # would simply connect again (it once failed here, with two suites side by side).
        for attempt in range(3):
            try:
                await source.connect()
                break
            except ConnectorError:
                await source.close()
                if attempt == 2:
                    raise
        await collect(source, {t.tag for t in tags})
        proxy.frozen = True
        frozen = time.monotonic()
        with pytest.raises(ConnectorError):
            async with asyncio.timeout(10):
                async for _ in source.samples():
                    pass
        assert time.monotonic() - frozen < 4.0
        started = time.monotonic()
        await source.close()
        assert time.monotonic() - started < 6.0  # two request timeouts at most, never a hang
    finally:
        await source.close()
        await proxy.stop()


async def test_browse_path_addresses_resolved_per_session(plant: PlantSimulator) -> None:
    tags = [
        SourceTag(
            "by_path",
            OpcUaAddress.model_validate(
                {"path": "Plant/Pump02/Speed", "namespace": PLANT_NAMESPACE}
            ),
        ),
        SourceTag(
            "missing",
            OpcUaAddress.model_validate({"path": "Plant/Nope/Speed", "namespace": PLANT_NAMESPACE}),
        ),
    ]
    source = OpcUaSource("plant", settings(plant.endpoint), tags)
    await source.connect()
    try:
        latest = await collect(source, {"by_path", "missing"})
    finally:
        await source.close()
    assert latest["by_path"].quality is Quality.GOOD
    assert isinstance(latest["by_path"].value, float)
    assert latest["missing"].quality is Quality.BAD
    assert latest["missing"].reason is not None and "BadNoMatch" in latest["missing"].reason


async def test_refused_item_retried_on_timer_others_untouched(plant: PlantSimulator) -> None:
    late_id = f"Late{free_port()}"  # unique per run: the module's plant is shared
    tags = [
        *plant_tags(1),
        SourceTag("late", OpcUaAddress.model_validate(f"nsu={PLANT_NAMESPACE};s={late_id}")),
    ]
    source = OpcUaSource("plant", settings(plant.endpoint, retry_failed_items_s=0.5), tags)
    await source.connect()
    seen_bad_other = False
    try:
        first = await collect(source, {t.tag for t in tags})
        assert first["late"].quality is Quality.BAD
        assert first["late"].reason == "BadNodeIdUnknown"
        server = plant._server
        assert server is not None and plant.namespace_index is not None
        nid = ua.NodeId(late_id, plant.namespace_index)
        await server.nodes.objects.add_variable(nid, f"{plant.namespace_index}:{late_id}", 7.5)
        async with asyncio.timeout(10):
            async for batch in source.samples():
                seen_bad_other |= any(
                    s.quality is not Quality.GOOD for s in batch if s.tag != "late"
                )
                late = [s for s in batch if s.tag == "late"]
                if late and late[-1].quality is Quality.GOOD:
                    assert late[-1].value == 7.5
                    break
    finally:
        await source.close()
    assert not seen_bad_other


async def test_a_stop_swallowed_inside_the_loop_still_ends_it(plant: PlantSimulator) -> None:
    """asyncua waits for replies with ``asyncio.wait_for``, which on Python 3.11 drops a
    cancellation that comes in the turn the reply lands (see ``bridge.cancel``). The loop's
    own request (the retry of refused items) is made to swallow the stop as that would."""
    source = OpcUaSource("plant", settings(plant.endpoint), plant_tags(1))
    await source.connect()
    calls = swallowed = 0

    async def swallowing_retry() -> list[TagSample]:
        nonlocal calls, swallowed
        calls += 1
        if calls == 3:  # the stop comes while this "request" waits for its reply
            me = asyncio.current_task()
            assert me is not None
            asyncio.get_running_loop().call_soon(me.cancel)
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            swallowed += 1  # and returns as if the reply had come
        return []

    source._retry_failed = swallowing_retry  # type: ignore[method-assign]

    async def consume() -> None:
        async for _batch in source.samples():
            pass

    task = asyncio.create_task(consume())
    try:
        done, _ = await asyncio.wait({task}, timeout=10)
        assert swallowed == 1
        assert task in done, "samples() went on after its stop was swallowed"
        assert task.cancelled()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.close()
