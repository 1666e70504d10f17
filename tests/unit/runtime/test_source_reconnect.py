"""SourceSupervisor's reconnect policy: where it comes from, and the port probe that cuts a grown
backoff short, over real loopback sockets (a source whose session is one TCP greeting)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
from bridge.errors import ConnectorError
from bridge.runtime.sources import ReconnectPolicy, SourceSupervisor
from bridge.types import Quality, Source, SourceTag, TagSample


class GreetingSource:
    """A session is a TCP connection whose server greets with b"ok"; anything else is refused."""

    name = "tcp"

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def probe_address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(2):
                reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
                greeting = await reader.read(2)
        except (OSError, TimeoutError) as exc:
            raise ConnectorError(f"cannot connect: {exc!r}") from exc
        if greeting != b"ok":
            writer.close()
            raise ConnectorError(f"session refused: {greeting!r}")
        self._reader, self._writer = reader, writer

    async def samples(self) -> AsyncIterator[Sequence[TagSample]]:
        assert self._reader is not None
        yield [TagSample("x", 1.0, Quality.GOOD, time.time())]
        await self._reader.read()  # until the server goes away
        raise ConnectorError("connection lost")

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


@dataclass
class Greeter:
    """A loopback server greeting each connection with ``greeting``, started on demand."""

    port: int
    greeting: bytes
    accepted: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _greet(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        writer.write(self.greeting)
        if self.greeting != b"ok":
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._greet, LOOPBACK, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in self._writers:
                w.close()
            await self._server.wait_closed()


@dataclass
class Marks:
    """What the supervisor had scheduled each time it marked the tags Bad after a failure."""

    sup: SourceSupervisor | None = None
    seen: list[tuple[float, int]] = field(default_factory=list)  # (backoff_s, probe_wakeups)
    good: int = 0

    async def deliver(self, batch: Sequence[TagSample]) -> None:
        self.good += sum(1 for s in batch if s.quality is Quality.GOOD)

    def mark_bad(self, tags: Sequence[str], reason: str) -> None:
        if self.sup is not None and self.sup.state == "down":
            self.seen.append((self.sup.backoff_s, self.sup.probe_wakeups))


@contextlib.asynccontextmanager
async def supervised(port: int, policy: ReconnectPolicy) -> AsyncIterator[Marks]:
    marks = Marks()
    sup = SourceSupervisor(
        GreetingSource(port), "tcp", ["x"], marks.deliver, marks.mark_bad, policy=policy
    )
    marks.sup = sup
    task = asyncio.create_task(sup.run())
    try:
        yield marks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


class BareSource:
    name = "bare"

    async def connect(self) -> None:
        raise ConnectorError("never")

    async def samples(self) -> AsyncIterator[Sequence[TagSample]]:
        raise ConnectorError("never")
        yield []

    async def close(self) -> None:
        pass


def _opcua(reconnect: dict[str, float] | None = None) -> OpcUaSource:
    raw: dict[str, object] = {"endpoint": "opc.tcp://plc.example:4841/UA"}
    if reconnect is not None:
        raw["reconnect"] = reconnect
    tag = SourceTag("t", OpcUaAddress.model_validate("nsu=urn:x;s=t"))
    return OpcUaSource("plant", OpcUaSourceSettings.model_validate(raw), [tag])


async def _nothing(batch: Sequence[TagSample]) -> None:
    pass


def _supervisor(source: Source, max_backoff_s: float | None = None) -> SourceSupervisor:
    return SourceSupervisor(source, "k", ["t"], _nothing, lambda t, r: None, max_backoff_s)


def test_policy_comes_from_the_sources_mapping_block() -> None:
    sup = _supervisor(
        _opcua({"initial_backoff_s": 1, "max_backoff_s": 7, "probe_interval_s": 0.25})
    )
    assert sup.reconnect_policy == ReconnectPolicy(1, 7, 0.25)
    assert sup.probe_address == ("plc.example", 4841)


def test_defaults_cap_the_backoff_at_a_few_seconds() -> None:
    sup = _supervisor(_opcua())
    assert sup.reconnect_policy == ReconnectPolicy(0.5, 5.0, 0.5)
    # a source that says nothing about reconnects (no reconnect, no probe_address)
    bare = _supervisor(BareSource())
    assert bare.reconnect_policy == ReconnectPolicy() and bare.probe_address is None


def test_probe_off_and_explicit_cap() -> None:
    assert _supervisor(_opcua({"probe_interval_s": 0})).probe_address is None
    capped = _supervisor(_opcua({"initial_backoff_s": 2}), max_backoff_s=1.0)
    assert capped.reconnect_policy == ReconnectPolicy(1.0, 1.0, 0.5)


@pytest.mark.serial
async def test_a_reopened_port_cuts_a_long_wait_short() -> None:
    port = free_port()
    greeter = Greeter(port, b"ok")
    async with supervised(port, ReconnectPolicy(20, 20, 0.1)) as marks:
        assert marks.sup is not None
        await wait_until(lambda: marks.seen != [], 5, what="a failed connect")
        assert marks.seen[0][0] >= 10  # a 10-20 s wait is in progress
        await asyncio.sleep(0.5)
        await greeter.start()
        opened = time.monotonic()
        try:
            await wait_until(lambda: marks.good > 0, 3, what="connected after the port opened")
            took = time.monotonic() - opened
            assert marks.sup.state == "connected" and marks.sup.probe_wakeups == 1
        finally:
            await greeter.stop()
    assert took < 2.0  # probe every 0.1 s: the wait of 10-20 s did not run out


async def test_backoff_starts_over_after_the_port_reopens_then_grows_again() -> None:
    port = free_port()
    greeter = Greeter(port, b"no")  # up, but refuses every session: a half-up server
    async with supervised(port, ReconnectPolicy(0.2, 60, 0.05)) as marks:
        await wait_until(lambda: any(b >= 0.8 for b, _ in marks.seen), 10, what="grown backoff")
        await greeter.start()
        try:
            await wait_until(lambda: len([m for m in marks.seen if m[1] == 1]) >= 3, 10)
        finally:
            await greeter.stop()
    after = [b for b, wakeups in marks.seen if wakeups == 1]
    assert after[0] <= 0.2  # the first failure after the reopening waits the initial backoff
    assert after[1] >= 0.2 and after[2] >= 0.4  # and then it grows again: no hammering
    # only one cut: an open port that refuses sessions is not a reason to try at once again
    assert all(wakeups <= 1 for _, wakeups in marks.seen)
