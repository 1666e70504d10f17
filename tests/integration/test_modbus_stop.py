"""A source stopped at the moment a reply lands stops.

pymodbus waits for each reply with ``asyncio.wait_for``, which on Python 3.11 returns the reply
and drops the cancellation when both come in one loop turn (see ``bridge.cancel``). The source
then polled on, and whoever stopped it (shutdown, reload, ``bridge verify``) waited forever.
Here the cancellation is sent from inside pymodbus's data callback, right after the reply has
completed the request: that exact turn, every run.
"""

from __future__ import annotations

import asyncio
import contextlib

from support import LOOPBACK, free_port

from bridge.connectors.modbus import ModbusAddress, ModbusSource, ModbusSourceSettings
from bridge.simulators.plc import REGISTER_MAP, PlcSimulator
from bridge.types import SourceTag, TagSample

FROZEN = 3600.0


def _tags() -> list[SourceTag]:
    return [
        SourceTag(
            s.name,
            ModbusAddress(table=s.table, address=s.address, type=s.type, word_order=s.word_order),
        )
        for s in REGISTER_MAP
    ]


async def _stopped_as_a_reply_lands(use: str) -> asyncio.Task[object]:
    plc = PlcSimulator(port=free_port(), update_interval_s=FROZEN)
    await plc.start()
    await plc.apply(99.0)
    settings = ModbusSourceSettings.model_validate(
        {"host": LOOPBACK, "port": plc.port, "timeout_s": 5.0, "poll_interval_ms": 10}
    )
    source = ModbusSource("line", settings, _tags())
    try:
        await source.connect()
        client = source._link._client
        assert client is not None
        ctx = client.ctx
        original = ctx.callback_data
        stopping: list[asyncio.Task[object]] = []

        def stop_on_reply(data: bytes, addr: tuple[str, int] | None = None) -> int:
            used: int = original(data, addr)  # completes the waiting request
            if stopping and not stopping[0].done():
                stopping[0].cancel()  # and the stop, in the same loop turn
            return used

        ctx.callback_data = stop_on_reply  # type: ignore[method-assign]

        async def stream() -> list[TagSample]:
            async for _batch in source.samples():
                pass
            return []

        work = source.poll() if use == "poll" else stream()
        task: asyncio.Task[object] = asyncio.create_task(work)
        stopping.append(task)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 10)
        if not task.done():  # polling on regardless: end it for the report
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise AssertionError("the source went on polling after it was stopped")
        return task
    finally:
        await source.close()
        await plc.stop()


async def test_a_poll_stopped_as_a_reply_lands_is_cancelled() -> None:
    task = await _stopped_as_a_reply_lands("poll")
    assert task.cancelled(), f"poll() returned {task.result()!r} after it was stopped"


async def test_a_stream_stopped_as_a_reply_lands_ends() -> None:
    task = await _stopped_as_a_reply_lands("stream")
    assert task.cancelled()
