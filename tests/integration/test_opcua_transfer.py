"""A short link loss keeps the subscription: TransferSubscriptions onto the new session.

Real servers on loopback behind the fault proxy (tests/faultproxy.py), whose BLACKHOLE mode
swallows bytes without closing anything (a cable pulled: no RST, no FIN); the source runs under
the runtime's SourceSupervisor, which closes and reconnects it as in the gateway.

- node-opcua (bench/nodeopcua_server.js, counters stepped every 100 ms) implements the
  service: after a link loss the subscription is transferred (each one of ``sessions: 2``), the
  message answered into the dead link is republished (a loss of the server's answers only, so
  that there surely is one) and every count the server queued arrives, in order, none
  missing; with ``server_queue_size: 1`` counts are lost.
- asyncua's own server accepts the transfer but never publishes to the new session: the source
  sees no Publish response and re-creates the subscription, values flow again, in order; the
  next loss does not try that server again.
- A server that no longer has the subscription (deleted meanwhile: BadSubscriptionIdInvalid;
  or restarted: another StartTime) gets its items re-created; values flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.server import Server
from faultproxy import FaultProxy, Mode
from structlog.testing import capture_logs
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
from bridge.connectors.opcua.convert import make_node_id
from bridge.runtime.sources import SourceSupervisor
from bridge.types import Quality, SourceTag, TagSample

ROOT = Path(__file__).resolve().parents[2]
NODE_SERVER = ROOT / "bench" / "nodeopcua_server.js"
MODULES = ROOT / "bench" / "nodeopcua" / "node_modules"
NS = "urn:bench:ingest"  # the namespace of bench/nodeopcua_server.js, used by both servers
TAG = "count"
BLACKHOLE_S = 3.0
DEADLINE_S = 60.0  # bounds every wait; generous for a loaded 2-core box

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (MODULES / "node-opcua-server").is_dir(),
    reason="node-opcua not installed: run bench/setup_nodeopcua.sh (needs node and npm)",
)


@dataclass
class Received:
    """Every sample the supervisor delivered, and when tags were marked Bad."""

    samples: list[TagSample] = field(default_factory=list)
    bad_at: list[float] = field(default_factory=list)

    async def deliver(self, batch: Sequence[TagSample]) -> None:
        self.samples.extend(batch)

    def mark_bad(self, tags: Sequence[str], reason: str) -> None:
        self.bad_at.append(time.monotonic())

    def counts(self, tag: str = TAG, since: int = 0) -> list[int]:
        """The counter values of ``tag`` received Good, in arrival order, from the ``since``-th
        sample on. (On a first connect the value read may come before an older notification:
        the order promised here is the one across a loss.)"""
        return [
            int(s.value)
            for s in self.samples[since:]
            if s.tag == tag and s.quality is Quality.GOOD and isinstance(s.value, float)
        ]

    def good_after(self, t: float) -> bool:
        """A Good value produced (source time, wall clock) after ``t``."""
        return any(s.quality is Quality.GOOD and (s.source_time or 0.0) > t for s in self.samples)


@contextlib.asynccontextmanager
async def node_counter(port: int, items: int = 1) -> AsyncIterator[None]:
    """node-opcua: Doubles ``s=v0``.. counting up every 100 ms, source-timestamped."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_SERVER),
        str(port),
        str(items),
        "100",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(DEADLINE_S):
            while b"ready" not in await proc.stdout.readline():
                assert proc.returncode is None, "node-opcua server exited"
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


class AsyncuaCounter:
    """asyncua's server with the same node, counting up every 100 ms; restartable in place."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{LOOPBACK}:{self.port}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NS)
        var = await server.nodes.objects.add_variable(make_node_id("v0", ns), "v0", 0.0)
        await server.start()
        self.server = server

        async def count() -> None:
            value = 0.0
            while True:
                value += 1.0
                now: Any = datetime.now(UTC)  # asyncua annotates its own DateTime type
                dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=now)
                await server.write_attribute_value(var.nodeid, dv)
                await asyncio.sleep(0.1)

        self._task = asyncio.create_task(count())

    async def stop(self) -> None:
        task, server = self._task, self.server
        self._task = self.server = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.stop()

    async def drop_subscriptions(self) -> int:
        """Delete every client subscription, as a server that timed them out would."""
        assert self.server is not None
        service = self.server.iserver.subscription_service
        ids = list(service.subscriptions)
        await service.delete_subscriptions(ids)
        return len(ids)


@dataclass
class Rig:
    proxy: FaultProxy
    source: OpcUaSource
    received: Received
    supervisor: SourceSupervisor
    dark_from: int = 0  # the first sample received after the blackhole began

    def counter(self, key: str) -> int:
        return int(self.source.counters[key])

    async def blackhole(
        self, seconds: float, during: Any = None, mode: Mode = Mode.BLACKHOLE
    ) -> tuple[float, float]:
        """Swallow every byte for ``seconds`` once the source saw the link die; the wall-clock
        start and end. ``during`` (a coroutine function) runs while the link is dark. ``mode``
        DEAF swallows only the server's answers."""
        start = time.time()
        marked = len(self.received.bad_at)
        self.dark_from = len(self.received.samples)
        self.proxy.set_mode(mode)
        await wait_until(
            lambda: len(self.received.bad_at) > marked, DEADLINE_S, what="the loss noticed"
        )
        if during is not None:
            await during()
        await asyncio.sleep(max(0.0, start + seconds - time.time()))
        end = time.time()
        self.proxy.set_mode(Mode.PASS)
        return start, end


@contextlib.asynccontextmanager
async def rig(server_port: int, server_queue_size: int, sessions: int = 1) -> AsyncIterator[Rig]:
    proxy = FaultProxy(LOOPBACK, server_port)
    await proxy.start()
    settings = OpcUaSourceSettings.model_validate(
        {
            "endpoint": f"opc.tcp://{LOOPBACK}:{proxy.port}",
            "timeout_s": 2,
            "server_queue_size": server_queue_size,
            "sessions": sessions,
            "reconnect": {"initial_backoff_s": 0.2, "max_backoff_s": 1},
        }
    )
    names = [TAG] + [f"{TAG}{i}" for i in range(1, sessions)]  # one tag per session
    tags = [
        SourceTag(name, OpcUaAddress.model_validate(f"nsu={NS};s=v{i}"))
        for i, name in enumerate(names)
    ]
    source = OpcUaSource("plant", settings, tags)
    received = Received()
    supervisor = SourceSupervisor(source, "opcua", names, received.deliver, received.mark_bad)
    task = asyncio.create_task(supervisor.run())
    try:
        started = time.time()
        await wait_until(lambda: received.good_after(started), DEADLINE_S, what="first values")
        yield Rig(proxy, source, received, supervisor)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await proxy.stop()


def _setback(counts: Sequence[int]) -> int:
    """How far the counts ever fall below the highest one before them."""
    top, worst = None, 0
    for c in counts:
        if top is not None:
            worst = max(worst, top - c)
        top = c if top is None else max(top, c)
    return worst


def _events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e.get("event") == name]


@needs_node
@pytest.mark.serial
@pytest.mark.timeout(180)
async def test_transfer_keeps_every_queued_value_through_a_blackhole() -> None:
    port = free_port()
    with capture_logs() as logs:
        async with node_counter(port), rig(port, server_queue_size=1000) as r:
            # Only the server's answers are lost: the Publish request the client sends as the
            # link fails surely reaches the server, which answers it into the dead link. In a
            # full blackhole that request may be swallowed too when the machine is loaded (the
            # proxy's pump runs late), and then nothing needs republishing (the other tests).
            start, end = await r.blackhole(BLACKHOLE_S, mode=Mode.DEAF)
            await wait_until(
                lambda: r.counter("subscriptions_transferred") == 1,
                DEADLINE_S,
                what="the subscription transferred",
            )
            await wait_until(lambda: r.received.good_after(end + 1.0), DEADLINE_S, what="live")
    assert r.counter("subscriptions_recreated") == 0
    [moved] = _events(logs, "subscription_transferred")
    assert moved["items"] == 1
    # The message the server answered into the dead link comes back through Republish.
    assert moved["republished_messages"] >= 1 and moved["missing_messages"] == 0
    counts = r.received.counts()
    # In order (the republished message before the queued values), and no count missing.
    after = r.received.counts(since=r.dark_from)
    assert after == sorted(after), after
    during = [
        s.value
        for s in r.received.samples
        if s.quality is Quality.GOOD and start <= (s.source_time or 0.0) <= end
    ]
    assert len(set(during)) >= BLACKHOLE_S * 10 * 0.5, during  # a 10 Hz counter for 3 s
    assert set(range(min(counts), max(counts) + 1)) == set(counts), "a count is missing"


@needs_node
@pytest.mark.serial
@pytest.mark.timeout(180)
async def test_every_session_of_a_source_is_transferred() -> None:
    """``sessions: 2``: the blackhole takes both, the runtime reconnects the source, and each
    session takes its own subscription over; no count of either tag is missing."""
    port = free_port()
    async with node_counter(port, items=2), rig(port, server_queue_size=1000, sessions=2) as r:
        _, end = await r.blackhole(BLACKHOLE_S)
        await wait_until(
            lambda: r.counter("subscriptions_transferred") == 2, DEADLINE_S, what="transferred"
        )
        await wait_until(lambda: r.received.good_after(end + 1.0), DEADLINE_S, what="live")
    assert r.counter("subscriptions_recreated") == 0
    for tag in (TAG, f"{TAG}1"):
        after = r.received.counts(tag, since=r.dark_from)
        assert after == sorted(after), (tag, after)
        counts = r.received.counts(tag)
        assert set(range(min(counts), max(counts) + 1)) == set(counts), f"{tag}: a count missing"


@needs_node
@pytest.mark.serial
@pytest.mark.timeout(180)
async def test_one_value_queue_keeps_only_the_latest() -> None:
    """The default ``server_queue_size: 1``: transferred all the same, but of the counts made
    in the dark only the republished message and the latest queued one arrive."""
    port = free_port()
    async with node_counter(port), rig(port, server_queue_size=1) as r:
        _, end = await r.blackhole(BLACKHOLE_S)
        await wait_until(
            lambda: r.counter("subscriptions_transferred") == 1, DEADLINE_S, what="transferred"
        )
        await wait_until(lambda: r.received.good_after(end + 1.0), DEADLINE_S, what="live")
    after = r.received.counts(since=r.dark_from)
    assert after == sorted(after), after
    counts = r.received.counts()
    assert set(range(min(counts), max(counts) + 1)) - set(counts), "nothing lost with queue 1?"


@pytest.mark.serial
@pytest.mark.timeout(180)
async def test_asyncua_server_without_publish_after_transfer_gets_items_recreated() -> None:
    port = free_port()
    server = AsyncuaCounter(port)
    await server.start()
    try:
        with capture_logs() as logs:
            async with rig(port, server_queue_size=100) as r:
                _, end = await r.blackhole(BLACKHOLE_S)
                await wait_until(
                    lambda: r.counter("subscriptions_recreated") == 1,
                    DEADLINE_S,
                    what="the subscription re-created",
                )
                await wait_until(lambda: r.received.good_after(end), DEADLINE_S, what="live")
                # What the transfer brought before it failed (the republished message, from
                # before the loss) is dropped: it would come seconds of counts behind the
                # re-created subscription's current value. One step back is the re-create's
                # own (the value read may overtake the item's first notification).
                after = r.received.counts(since=r.dark_from)
                assert _setback(after) <= 1, after
                # The same server again: not asked for a transfer a second time.
                _, end = await r.blackhole(BLACKHOLE_S)
                await wait_until(
                    lambda: r.counter("subscriptions_recreated") == 2, DEADLINE_S, what="again"
                )
                await wait_until(lambda: r.received.good_after(end), DEADLINE_S, what="live")
        assert r.counter("subscriptions_transferred") == 0
        first, second = _events(logs, "subscription_recreated")
        assert "no Publish response" in first["reason"]
        assert second["reason"] == "this server did not publish after an earlier transfer"
    finally:
        await server.stop()


@pytest.mark.serial
@pytest.mark.timeout(180)
async def test_subscription_gone_on_the_server_is_recreated() -> None:
    port = free_port()
    server = AsyncuaCounter(port)
    await server.start()
    dropped: list[int] = []

    async def drop() -> None:
        dropped.append(await server.drop_subscriptions())

    try:
        with capture_logs() as logs:
            async with rig(port, server_queue_size=100) as r:
                _, end = await r.blackhole(BLACKHOLE_S, during=drop)
                await wait_until(
                    lambda: r.counter("subscriptions_recreated") == 1, DEADLINE_S, what="re-created"
                )
                await wait_until(lambda: r.received.good_after(end), DEADLINE_S, what="live")
        assert dropped == [1]
        [again] = _events(logs, "subscription_recreated")
        assert again["reason"] == "BadSubscriptionIdInvalid"
    finally:
        await server.stop()


@pytest.mark.serial
@pytest.mark.timeout(180)
async def test_restarted_server_gets_items_recreated_without_a_transfer() -> None:
    port = free_port()
    server = AsyncuaCounter(port)
    await server.start()
    try:
        with capture_logs() as logs:
            async with rig(port, server_queue_size=100) as r:
                marked = len(r.received.bad_at)
                await server.stop()  # closes the link: the loss is seen at once
                await wait_until(
                    lambda: len(r.received.bad_at) > marked, DEADLINE_S, what="the loss noticed"
                )
                await server.start()
                restarted = time.time()
                await wait_until(
                    lambda: r.counter("subscriptions_recreated") == 1, DEADLINE_S, what="re-created"
                )
                await wait_until(
                    lambda: r.received.good_after(restarted), DEADLINE_S, what="values again"
                )
        assert r.counter("subscriptions_transferred") == 0
        [again] = _events(logs, "subscription_recreated")
        assert again["reason"] == "server restarted"
    finally:
        await server.stop()
