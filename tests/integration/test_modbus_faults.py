"""10,000 malformed Modbus frames between a real pymodbus server and the source: no crash, no
poll past its deadline, not one wrong value marked Good, and the other unit unaffected.

Chain: ModbusSource -> ModbusFaultProxy (forged frames) -> PlcSimulator (two units, frozen
values). Raw garbage and truncation (tests/faultproxy.py) get a test of their own below.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from faultproxy import FaultProxy, Mode
from modbus_faults import FAST_KINDS, KINDS, SLOW_KINDS, ModbusFaultProxy
from support import LOOPBACK, free_port

from bridge.connectors.modbus import ModbusAddress, ModbusSource, ModbusSourceSettings
from bridge.errors import ConnectorError
from bridge.simulators.plc import REGISTER_MAP, PlcSimulator, expected_values
from bridge.types import Quality, SourceTag, TagSample

FROZEN = 3600.0
T = 1234.5  # simulator time whose values are served throughout
MALFORMED = 10_000
# Long enough that a healthy reply is not late on a loaded 2-core box; slow kinds pay it each.
TIMEOUT_S = 0.3
SLOW_SHARE = 0.002  # kinds that cost a timeout each, kept rare to bound the test's time


def tags_of(unit: int, table: str | None = None) -> list[SourceTag]:
    return [
        SourceTag(
            f"u{unit}.{s.name}",
            ModbusAddress(
                table=s.table, address=s.address, type=s.type, word_order=s.word_order, unit=unit
            ),
        )
        for s in REGISTER_MAP
        if table is None or s.table == table
    ]


@pytest.mark.serial
async def test_ten_thousand_malformed_frames_never_give_a_wrong_good_value() -> None:
    rng = random.Random(5)

    def choose(unit: int, fc: int) -> str | None:
        if unit != 1 or rng.random() < 0.1:  # unit 2 is never touched; some unit 1 replies pass
            return None
        return rng.choice(SLOW_KINDS if rng.random() < SLOW_SHARE else FAST_KINDS)

    plc = PlcSimulator(port=free_port(), update_interval_s=FROZEN, more_units=(2,))
    await plc.start()
    await plc.apply(T)
    forger = ModbusFaultProxy(plc.port, choose, patience_s=0)
    await forger.start()
    settings = ModbusSourceSettings(
        host=LOOPBACK,
        port=forger.port,
        timeout_s=TIMEOUT_S,
        breaker_failures=1000,  # keep unit 1 polled: this test is about frames, not backoff
    )
    # Unit 2 is read with one request per poll: it is the bystander, and fewer of its requests
    # keep the test short.
    source = ModbusSource("plc", settings, tags_of(1) + tags_of(2, "holding"))
    truth = {f"u{u}.{k}": v for u in (1, 2) for k, v in expected_values(T).items()}
    unit2_polls = 0
    unit2_late = 0  # unit-2 replies later than TIMEOUT_S: machine load, not unit 1's frames
    # A poll asks each block at most once; each request is bounded by the source's deadline.
    poll_deadline = len(source.blocks) * (TIMEOUT_S + 1.0)
    good: Counter[int] = Counter()
    bad_reasons: Counter[str] = Counter()
    polls = 0

    def check(batch: list[TagSample]) -> None:
        nonlocal unit2_late
        for s in batch:
            unit = int(s.tag[1])
            if s.quality is Quality.GOOD:
                expected = truth[s.tag]
                ok = s.value == (
                    pytest.approx(expected) if isinstance(expected, float) else expected
                )
                assert ok, f"{s.tag}: Good value {s.value!r}, true value {expected!r}"
                good[unit] += 1
            else:
                assert s.value is None
                if unit == 2:
                    assert s.reason.startswith("no valid reply within"), f"unit 2: {s.reason}"
                    unit2_late += 1
                bad_reasons[s.reason.split(" (")[0][:40]] += 1

    try:
        await source.connect()
        while sum(forger.forged.values()) < MALFORMED:
            polls += 1
            # No ConnectorError is caught: a bad frame from one unit must never cost the
            # connection (and so the other units); a hang fails on the poll deadline.
            check(await asyncio.wait_for(source.poll(), timeout=poll_deadline))
            unit2_polls += 1
    finally:
        await source.close()
        await forger.stop()
        await plc.stop()

    assert set(forger.forged) == set(KINDS)
    assert good[1] > 0
    # Unit 2 is untouched: Good on every clean poll but for the odd reply delayed by load
    # (check() fails on any other Bad unit-2 sample).
    assert good[2] + unit2_late == unit2_polls * len(tags_of(2, "holding"))
    assert unit2_late <= 0.01 * good[2], (unit2_late, good[2])
    print(
        f"\nforged={dict(forger.forged)} polls={polls} "
        f"good={dict(good)} bad={dict(bad_reasons)} counters={dict(source.counters)}"
    )


async def reconnect(source: ModbusSource, attempts: int = 5) -> None:
    """Connect again as the runtime's supervisor does: a refused or slow connect (its 0.3 s
    timeout, on a machine loaded by the rest of the suite) is tried again, a bounded number of
    times, after a short wait."""
    for attempt in range(attempts):
        try:
            await source.connect()
            return
        except ConnectorError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("mode", [Mode.GARBAGE, Mode.TRUNCATE])
async def test_raw_garbage_and_truncation_never_give_values_and_the_link_recovers(
    mode: Mode,
) -> None:
    plc = PlcSimulator(port=free_port(), update_interval_s=FROZEN)
    await plc.start()
    await plc.apply(T)
    raw = FaultProxy(LOOPBACK, plc.port)
    await raw.start()
    # No backoff: the poll right after the fault ends must read again.
    settings = ModbusSourceSettings(
        host=LOOPBACK, port=raw.port, timeout_s=TIMEOUT_S, breaker_failures=1000
    )
    source = ModbusSource("plc", settings, tags_of(1))
    truth = {f"u1.{k}": v for k, v in expected_values(T).items()}
    deadline = len(source.blocks) * (TIMEOUT_S + 1.0)
    reconnects = 0
    try:
        await source.connect()
        raw.set_mode(mode)
        for _ in range(6):
            try:
                batch = await asyncio.wait_for(source.poll(), timeout=deadline)
            except ConnectorError:
                reconnects += 1  # the runtime would back off and reconnect
                await reconnect(source)
                continue
            for s in batch:
                # Random bytes can, rarely, be a well-formed frame; never one with our
                # transaction id, unit, function code and byte count all right by chance.
                assert s.quality is Quality.BAD and s.value is None, (s.tag, s.value)
        raw.set_mode(Mode.PASS)
        await reconnect(source)
        batch = await asyncio.wait_for(source.poll(), timeout=deadline)
    finally:
        await source.close()
        await raw.stop()
        await plc.stop()
    assert all(s.quality is Quality.GOOD for s in batch)
    assert all(s.value == pytest.approx(truth[s.tag]) for s in batch)
    if mode is Mode.TRUNCATE:
        # Half frames are silence to the client: 3 in a row end the link, as they should.
        assert reconnects >= 1
