"""An MES that hangs or answers garbage holds back only its own destination: the healthy MES
beside it gets every event, in order, while the bad ones keep theirs in the outbox and say why
in their health; once they recover, they get theirs exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from outbox_harness import prediction, received_in_order
from stores import temp_store
from support import free_port, wait_until

from bridge.config.loader import load_mapping
from bridge.config.spec import OutboxSettings
from bridge.destination import DestinationContext
from bridge.outbox.wiring import durable_outputs
from bridge.simulators.mes import MesReceiver
from bridge.store.db import Store
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink
from bridge.types import PredictionSlot

pytestmark = pytest.mark.timeout(90)

GATEWAY = "gw-isolation"
ASSETS = ("p1", "p2")
EVENTS_PER_ASSET = 10

MAPPING = """\
version: 1
gateway: {{id: {gateway}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}}
assets: {{}}
outputs:
  good: {{kind: mes-rest, url: "{good}", timeout_s: 0.5, max_backoff_s: 0.2,
         initial_backoff_s: 0.02}}
  hung: {{kind: mes-rest, url: "{hung}", timeout_s: 0.5, max_backoff_s: 0.2,
         initial_backoff_s: 0.02}}
  garbage: {{kind: mes-rest, url: "{garbage}", timeout_s: 0.5, max_backoff_s: 0.2,
            initial_backoff_s: 0.02}}
"""


class BadServer:
    """An MES that hangs (reads requests, never answers) or answers bytes that are not HTTP."""

    def __init__(self, garbage: bool) -> None:
        self.port = free_port()
        self.garbage = garbage
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._peers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._peers.append(writer)
        while await reader.read(65536):
            if self.garbage:
                writer.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
                await writer.drain()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for peer in self._peers:
                peer.close()
            await self._server.wait_closed()
            self._server = None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with temp_store("sqlite", tmp_path, "outbox.db") as s:
        yield s


@pytest.fixture
async def good() -> AsyncIterator[MesReceiver]:
    receiver = MesReceiver(port=free_port())
    try:
        yield receiver
    finally:
        await receiver.stop()


async def test_a_hung_or_garbage_mes_holds_back_only_its_own_destination(
    store: Store, good: MesReceiver, tmp_path: Path
) -> None:
    bad = {"hung": BadServer(garbage=False), "garbage": BadServer(garbage=True)}
    await good.start()
    for server in bad.values():
        await server.start()
    path = tmp_path / "mapping.yaml"
    path.write_text(
        MAPPING.format(
            gateway=GATEWAY,
            good=good.events_url,
            hung=f"http://127.0.0.1:{bad['hung'].port}/api/v1/events",
            garbage=f"http://127.0.0.1:{bad['garbage'].port}/api/v1/events",
        )
    )
    mapping = load_mapping(path)
    slots = tuple(PredictionSlot(a, "health", "1.0.0", "ab" * 32, ("healthy",)) for a in ASSETS)
    context = DestinationContext(GATEWAY, slots)
    durable = durable_outputs(
        mapping.outputs.values(), context, OutboxRepository(store), OutboxSettings()
    )
    writer = StoreSink(store, outbox=durable.feeds, batch_size=4)
    await writer.start()
    await durable.start()
    relays = {r.destination.name: r for r in durable.relays}
    total = len(ASSETS) * EVENTS_PER_ASSET
    try:
        for seq in range(1, EVENTS_PER_ASSET + 1):
            await writer.write([prediction(a, seq) for a in ASSETS])
        await wait_until(lambda: len(good.calls) == total, 15, what="every event at the good MES")
        assert received_in_order(good.calls) == {
            a: list(range(1, EVENTS_PER_ASSET + 1)) for a in ASSETS
        }

        # The bad ones keep their events and say what is wrong with their MES.
        await wait_until(
            lambda: all(relays[n].health().state == "degraded" for n in ("hung", "garbage")),
            10,
            what="hung and garbage destinations degraded",
        )
        assert all(server.connections >= 1 for server in bad.values())  # tried, and failed
        # The backlog figure is refreshed from the store about once a second, by each relay
        # on its own schedule: the good one's may lag the bad ones' on a loaded machine.
        await wait_until(
            lambda: (
                all(relays[n].health().counters["backlog"] == total for n in bad)
                and relays["good"].health().counters["backlog"] == 0
            ),
            10,
            what="hung and garbage backlogs hold every event, the good one's is empty",
        )
        assert "ReadTimeout" in relays["hung"].health().detail
        assert "RemoteProtocolError" in relays["garbage"].health().detail

        # Recovery: working receivers take the bad MES' ports; each then gets its events
        # exactly once, in order.
        revived: list[MesReceiver] = []
        try:
            for server in bad.values():
                await server.stop()
                revived.append(MesReceiver(port=server.port))
                await revived[-1].start()
            await wait_until(
                lambda: all(len(r.calls) == total for r in revived),
                20,
                what="backlogs delivered after recovery",
            )
            await wait_until(
                lambda: all(relays[n].health().counters["backlog"] == 0 for n in relays),
                10,
                what="every backlog empty",
            )
            expected = {a: list(range(1, EVENTS_PER_ASSET + 1)) for a in ASSETS}
            for receiver in (*revived, good):
                # calls holds what the MES recorded; a repeated key is only counted.
                assert received_in_order(receiver.calls) == expected
                assert receiver.duplicate_count == 0
        finally:
            for receiver in revived:
                await receiver.stop()
    finally:
        await durable.close()
        await writer.close()
        for server in bad.values():
            await server.stop()
