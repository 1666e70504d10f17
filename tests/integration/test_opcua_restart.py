"""Back within seconds after the plant's OPC UA server restarts, whatever the outage length.

The server is a real process (`bridge simulate plant`), killed and started again on the same
loopback port; the gateway side is the runtime's SourceSupervisor over an OpcUaSource, built as
the pipeline builds it (the reconnect policy comes from the source's settings). The figure is the
time from the moment the port accepts connections again (the test polls it every 20 ms) to the
first Good value the new server sends reaching the tag table.

The long-outage case does not wait 120 s: with `initial_backoff_s: 40, max_backoff_s: 120` the
first wait is already 20-40 s (the default 0.5 s doubling reaches 16-32 s after ~30 s down and
32-64 s after ~60 s), and the test checks that such a wait was in progress when the port
reopened. What the probe must cut short is the wait in progress, however the outage grew it; the
outage itself only has to be long enough to be seen (8 s here). The 10 s case runs with the
defaults (cap 5 s); BRIDGE_TEST_OUTAGE_S=120 runs it with real 120 s outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
from bridge.runtime.sources import SourceSupervisor
from bridge.simulators.plant import PLANT_NAMESPACE
from bridge.simulators.plant.physics import SIGNALS
from bridge.types import Quality, SourceTag, TagSample

PROMISE_S = 5.0  # fresh Good values at most this long after the port reopens (issue 12)
STARTUP_S = 90.0  # a Python process importing asyncua on a busy 2-core box: generous
OUTAGE_S = float(os.environ.get("BRIDGE_TEST_OUTAGE_S", "10"))


async def _port_open(port: int) -> bool:
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection(LOOPBACK, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass
class PlantProcess:
    """`bridge simulate plant` as its own process, on a fixed port across restarts."""

    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> float:
        """Start the process; return the monotonic time its port first accepted a connection."""
        assert self.proc is None
        args = ["simulate", "plant", "--port", str(self.port), "--pumps", "1", "--faulty", ""]
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once, never waits
                [sys.executable, "-m", "bridge", *args, "--interval", "0.1"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if await _port_open(self.port):
                return time.monotonic()
            if self.proc.poll() is not None:
                raise AssertionError(f"plant exited: {self.log_path.read_text()[-2000:]}")
            await asyncio.sleep(0.02)
        raise AssertionError(f"plant port {self.port} not open after {STARTUP_S}s")

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye to the clients."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


@dataclass
class Table:
    """When each Good sample reached the gateway, like the runtime's tag table sees it."""

    good_at: list[float] = field(default_factory=list)
    bad_at: list[float] = field(default_factory=list)

    async def deliver(self, batch: Sequence[TagSample]) -> None:
        now = time.monotonic()
        if any(s.quality is Quality.GOOD for s in batch):
            self.good_at.append(now)

    def mark_bad(self, tags: Sequence[str], reason: str) -> None:
        self.bad_at.append(time.monotonic())

    def first_good_after(self, t: float) -> float | None:
        return next((g for g in self.good_at if g > t), None)


@dataclass
class Rig:
    plant: PlantProcess
    table: Table
    supervisor: SourceSupervisor


def _source(port: int, reconnect: dict[str, Any] | None) -> OpcUaSource:
    tags = [
        SourceTag(s.lower(), OpcUaAddress.model_validate(f"nsu={PLANT_NAMESPACE};s=Pump01.{s}"))
        for s in SIGNALS
    ]
    raw: dict[str, Any] = {"endpoint": f"opc.tcp://{LOOPBACK}:{port}", "timeout_s": 2}
    if reconnect is not None:
        raw["reconnect"] = reconnect
    return OpcUaSource("plant", OpcUaSourceSettings.model_validate(raw), tags)


@contextlib.asynccontextmanager
async def _rig(tmp_path: Path, reconnect: dict[str, Any] | None = None) -> AsyncIterator[Rig]:
    port = free_port()
    plant = PlantProcess(port, tmp_path / "plant.log")
    source = _source(port, reconnect)
    table = Table()
    # As bridge.runtime.pipeline builds it: no reconnect arguments, the source's settings rule.
    supervisor = SourceSupervisor(
        source, "opcua", [s.lower() for s in SIGNALS], table.deliver, table.mark_bad
    )
    task: asyncio.Task[None] | None = None
    try:
        started = await plant.start()
        task = asyncio.create_task(supervisor.run())
        await wait_until(
            lambda: table.first_good_after(started) is not None, 30, what="first Good values"
        )
        yield Rig(plant, table, supervisor)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        plant.kill()


async def _outage(rig: Rig, outage_s: float, at_reopen: Callable[[], None] = lambda: None) -> float:
    """Kill the server, keep it down ``outage_s``, start it again on the same port; call
    ``at_reopen`` as soon as the port accepts again. Returns the seconds from the port
    reopening to the first fresh Good value."""
    killed = time.monotonic()
    rig.plant.kill()
    await wait_until(lambda: any(b > killed for b in rig.table.bad_at), 5, what="Bad on loss")
    lost = next(b for b in rig.table.bad_at if b > killed)
    await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - killed)))
    assert rig.table.first_good_after(lost) is None  # nothing Good while the server is gone
    reopened = await rig.plant.start()
    at_reopen()
    await wait_until(
        lambda: rig.table.first_good_after(reopened) is not None,
        PROMISE_S + 10,  # the assertion below judges; this only bounds the wait
        what="fresh Good values after the restart",
    )
    first = rig.table.first_good_after(reopened)
    assert first is not None
    return first - reopened


@pytest.mark.serial
@pytest.mark.timeout(300 + 3 * OUTAGE_S)
async def test_fresh_good_values_within_5s_after_outages(tmp_path: Path) -> None:
    """Default reconnect settings (none in the mapping), two restarts after 10 s outages
    (BRIDGE_TEST_OUTAGE_S=120 runs the full-length case in real time). Each step is logged."""
    figures = []
    with capture_logs() as logs:
        async with _rig(tmp_path) as rig:
            for _ in range(2):
                figures.append(await _outage(rig, OUTAGE_S))
            assert rig.supervisor.connects == 3
    print(f"port reopen -> fresh Good after {OUTAGE_S:g}s outages: {figures} s")
    assert max(figures) <= PROMISE_S, figures
    events = [e["event"] for e in logs if e.get("source") == "plant"]
    # Whether the probe or the attempt itself sees the port open first depends on where the
    # restart falls in the wait (an attempt due within a probe interval of the reopening wins):
    # the probe's cut is proven by the next test, with a wait far longer than the promise.
    steps = ["source_lost", "source_port_closed", "source_connected"]
    at = 0
    for step in steps * 2:  # in this order, once per outage
        assert step in events[at:], f"{step} missing after {events[:at]}"
        at = events.index(step, at) + 1
    connected = [e for e in logs if e["event"] == "source_connected"]
    assert connected[-1]["down_for_s"] >= OUTAGE_S


@pytest.mark.serial
@pytest.mark.timeout(300)
async def test_fresh_good_values_within_5s_after_a_long_outage_with_grown_backoff(
    tmp_path: Path,
) -> None:
    """The backoff as a 120 s outage leaves it under a 120 s cap: the probe cuts it short."""
    reconnect = {"initial_backoff_s": 40, "max_backoff_s": 120, "probe_interval_s": 0.5}
    async with _rig(tmp_path, reconnect) as rig:
        pending: list[float] = []
        took = await _outage(rig, 8.0, lambda: pending.append(rig.supervisor.backoff_s))
        assert rig.supervisor.connects == 2
        assert rig.supervisor.probe_wakeups == 1  # the probe, not the 20-40 s wait, reconnected
    print(f"port reopen -> fresh Good with a {pending[0]:.1f}s wait in progress: {took:.2f} s")
    assert pending[0] >= 20.0, f"the backoff had not grown ({pending}): the test proves nothing"
    assert took <= PROMISE_S, took


@pytest.mark.timeout(120)
async def test_half_up_server_is_not_hammered(tmp_path: Path) -> None:
    """A port that accepts TCP but never gives a session: attempts keep their backoff."""
    accepted: list[float] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        writer.close()  # no OPC UA Acknowledge: the client's Hello fails

    port = free_port()
    server = await asyncio.start_server(refuse, LOOPBACK, port)
    source = _source(port, {"initial_backoff_s": 0.5, "max_backoff_s": 2, "probe_interval_s": 0.2})
    table = Table()
    supervisor = SourceSupervisor(source, "opcua", ["x"], table.deliver, table.mark_bad)
    task = asyncio.create_task(supervisor.run())
    try:
        await asyncio.sleep(8.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        server.close()
        await server.wait_closed()
    # Waits 0.25-0.5, 0.5-1, 1-2, then 1-2 s: at most ~9 attempts in 8 s; probing every 0.2 s
    # as if the port were closed would connect ~40 times.
    assert 3 <= supervisor.failures <= 10, supervisor.failures
    # each attempt is one connection, plus one probe per wait that finds the port open
    assert len(accepted) <= 2 * supervisor.failures + 2, (len(accepted), supervisor.failures)
    assert table.good_at == []
