"""Modbus polling throughput: a 2,000-register map read by the ModbusSource coalesced (as few
requests as the protocol allows) versus one request per tag, and versus the floor: a bare
pymodbus client sending the same 125-register reads and decoding nothing, against a pymodbus
server on loopback, in the same run.

The map: 2,000 holding registers in 1,333 tags (float32 CDAB, int32, uint16, uint16, repeated);
every eighth tag is followed by 3 unused registers so ``max_gap`` matters. The pymodbus server
runs in the same process, so the figures include its CPU time too (a lower bound for the
client alone).

    python -m bench.modbus_poll [--cycles 200] [--per-tag-cycles 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from bench.common import free_port, row, write_result
from bridge.connectors.modbus import ModbusAddress, ModbusSource, ModbusSourceSettings
from bridge.connectors.modbus.codec import encode
from bridge.logging import configure_logging
from bridge.types import Quality, SourceTag, TagSample

REGISTERS = 2000


def build_map() -> tuple[list[SourceTag], list[int], dict[str, Any]]:
    """Tags, the register image (address order) and each tag's true value."""
    image = [0] * (REGISTERS + 2000)  # room for the gaps
    tags: list[SourceTag] = []
    truth: dict[str, Any] = {}
    address = 0
    used = 0
    i = 0
    while used < REGISTERS:
        kind = ("float32", "int32", "uint16", "uint16")[i % 4]
        value: float | int = {"float32": i * 0.5, "int32": -i * 1000, "uint16": i % 65536}[kind]
        order = "CDAB" if kind == "float32" else "ABCD"
        words = encode(value, kind, order)  # type: ignore[arg-type]
        if used + len(words) > REGISTERS:
            kind, value, order, words = "uint16", 7, "ABCD", [7]
        image[address : address + len(words)] = words
        tag = f"t{i}"
        tags.append(
            SourceTag(
                tag, ModbusAddress(table="holding", address=address, type=kind, word_order=order)
            )
        )
        truth[tag] = value
        used += len(words)
        address += len(words) + (3 if kind == "float32" and i % 8 == 0 else 0)
        i += 1
    return tags, image[:address], truth


def _settings(port: int, per_tag: bool) -> ModbusSourceSettings:
    return ModbusSourceSettings(
        host="127.0.0.1",
        port=port,
        timeout_s=5.0,
        max_gap=10,
        # One request per tag: every tag is wider than a 1-register limit or exactly 1 wide,
        # so the planner gives each its own request.
        max_registers_per_read=1 if per_tag else 125,
    )


def _check(batch: list[TagSample], truth: dict[str, Any]) -> None:
    bad = [s for s in batch if s.quality is not Quality.GOOD or s.value != truth[s.tag]]
    if bad or len(batch) != len(truth):
        raise SystemExit(f"wrong or bad value: {bad[0] if bad else len(batch)}")


def _summary(
    mode: str,
    durations: list[float],
    requests: int,
    cpu: list[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    median = statistics.median(durations)
    if cpu:
        # Client and server share this process, so its CPU time per cycle is the work of
        # one cycle on both ends; steady where the wall clock jumps with a busy host.
        cpu_median = statistics.mean(sorted(cpu)[len(cpu) // 10 : -len(cpu) // 10 or None])
        extra["cycle_cpu_ms"] = round(cpu_median * 1000, 3)
        extra["registers_per_cpu_s"] = round(REGISTERS / cpu_median)
    return {
        "mode": mode,
        "cycles": len(durations),
        "requests_per_cycle": requests,
        **extra,
        "cycle_ms_median": round(median * 1000, 3),
        "cycle_ms_max": round(max(durations) * 1000, 3),
        "registers_per_s": round(REGISTERS / median),
    }


async def measure_side_by_side(
    port: int, tags: list[SourceTag], truth: dict[str, Any], cycles: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The coalesced source and a bare pymodbus client sending the same reads (no validation,
    no decoding), alternating cycle by cycle so both see the same machine."""
    source = ModbusSource("bench", _settings(port, per_tag=False), tags)
    await source.connect()
    blocks = [(b.start, b.count) for b in source.blocks]
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5.0, retries=0)
    if not await client.connect():
        raise SystemExit("bare pymodbus client could not connect")
    ours: list[float] = []
    bare: list[float] = []
    ours_cpu: list[float] = []
    bare_cpu: list[float] = []
    try:
        _check(await source.poll(), truth)  # warm-up, and the values must be right
        for _ in range(cycles):
            started, cpu = time.perf_counter(), time.process_time()
            batch = await source.poll()
            ours.append(time.perf_counter() - started)
            ours_cpu.append(time.process_time() - cpu)
            started, cpu = time.perf_counter(), time.process_time()
            for start, count in blocks:
                reply = await client.read_holding_registers(start, count=count, device_id=1)
                if reply.isError() or len(reply.registers) != count:
                    raise SystemExit(f"bare read failed: {reply}")
            bare.append(time.perf_counter() - started)
            bare_cpu.append(time.process_time() - cpu)
            _check(batch, truth)
    finally:
        await source.close()
        client.close()
    regs = sum(c for _, c in blocks)
    return (
        _summary(
            "coalesced", ours, len(blocks), ours_cpu, tags=len(tags), registers_read_per_cycle=regs
        ),
        _summary("bare pymodbus", bare, len(blocks), bare_cpu),
    )


async def measure_per_tag(
    port: int, tags: list[SourceTag], truth: dict[str, Any], cycles: int
) -> dict[str, Any]:
    source = ModbusSource("bench", _settings(port, per_tag=True), tags)
    await source.connect()
    durations: list[float] = []
    try:
        for _ in range(cycles):
            started = time.perf_counter()
            batch = await source.poll()
            durations.append(time.perf_counter() - started)
            _check(batch, truth)
    finally:
        await source.close()
    return _summary("one request per tag", durations, len(source.blocks), tags=len(tags))


async def run(cycles: int, per_tag_cycles: int) -> dict[str, Any]:
    tags, image, truth = build_map()
    # pymodbus wants every table non-empty; only the holding registers are read.
    bit = SimData(0, values=[False], datatype=DataType.BITS)
    word = SimData(0, values=[0], datatype=DataType.REGISTERS)
    holding = SimData(0, values=image, datatype=DataType.REGISTERS)
    device = SimDevice(id=1, simdata=([bit], [bit], [holding], [word]))
    port = free_port()
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        coalesced, bare = await measure_side_by_side(port, tags, truth, cycles)
        per_tag = await measure_per_tag(port, tags, truth, per_tag_cycles)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
    figures: dict[str, Any] = {
        "coalesced": coalesced,
        "bare": bare,
        "per_tag": per_tag,
        "speedup": round(coalesced["registers_per_s"] / per_tag["registers_per_s"], 1),
        "ratio_to_bare": round(coalesced["registers_per_s"] / bare["registers_per_s"], 3),
        "ratio_to_bare_cpu": round(
            coalesced["registers_per_cpu_s"] / bare["registers_per_cpu_s"], 3
        ),
    }
    ratio = figures["ratio_to_bare"]
    figures["rows"] = [
        row(
            f"Modbus {REGISTERS:,}-register map (registers/s)",
            coalesced["registers_per_s"],
            bare["registers_per_s"],
            "registers/s",
            ">= 80 % of bare pymodbus",
            ratio >= 0.8,
            f"{coalesced['requests_per_cycle']} reads/cycle, {cycles} alternating cycles; "
            f"per CPU-second {figures['ratio_to_bare_cpu']}; {figures['speedup']}x one "
            "request per tag",
        )
    ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--per-tag-cycles", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning", False)
    figures = asyncio.run(run(args.cycles, args.per_tag_cycles))
    for key in ("coalesced", "bare", "per_tag"):
        f = figures[key]
        print(
            f"{f['mode']:>20}: {f['requests_per_cycle']:5d} requests/cycle, "
            f"{f['cycle_ms_median']:8.1f} ms/cycle (median of {f['cycles']}), "
            f"{f['registers_per_s']:9d} registers/s"
        )
    print(f"coalescing speedup: {figures['speedup']}x")
    print(
        f"bridge / bare pymodbus: {figures['ratio_to_bare']} wall clock, "
        f"{figures['ratio_to_bare_cpu']} per CPU-second (target >= 0.8)"
    )
    path = write_result("modbus_poll", figures)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
