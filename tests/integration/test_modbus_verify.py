"""`bridge verify --live` against the PLC simulator: right tags pass, wrong order/scale/type
are reported with the setting that would match, and the exit code says so."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from support import free_port

from bridge.simulators.plc import REGISTER_MAP, PlcSimulator, expected_values
from bridge.simulators.plc.register_map import Signal

T = 321.0
BRIDGE = [sys.executable, "-m", "bridge"]


def mapping(port: int) -> str:
    v = expected_values(T)
    return f"""
gateway:
  id: verify-test
sources:
  plc:
    kind: modbus
    host: 127.0.0.1
    port: {port}
    timeout_s: 2
assets:
  line:
    tags:
      header_pressure:
        source: plc
        address: {{table: holding, address: 0, type: float32, word_order: CDAB,
                   expect: {v["HeaderPressure"]!r}}}
      tank_level:   # really ABCD
        source: plc
        address: {{table: holding, address: 2, type: float32, word_order: CDAB,
                   expect: {v["TankLevel"]!r}}}
      flow_rate:
        source: plc
        address: {{table: holding, address: 4, type: uint16, expect: {v["FlowRate"] * 0.1!r}}}
        scale: 0.1
      flow_rate_unscaled:   # needs scale 0.1
        source: plc
        address: {{table: holding, address: 4, type: uint16, expect: {v["FlowRate"] * 0.1!r}}}
      energy:   # really int32 CDAB
        source: plc
        address: {{table: holding, address: 8, type: uint32, expect: {v["Energy"]!r}}}
      permissive:
        source: plc
        address: {{table: coil, address: 0, expect: true}}
      no_expectation:
        source: plc
        address: {{table: holding, address: 5, type: int16}}
"""


async def test_verify_live_reports_off_tags_with_the_fix(tmp_path: Path) -> None:
    sim = PlcSimulator(port=free_port(), update_interval_s=3600.0)
    await sim.start()
    await sim.apply(T)
    path = tmp_path / "plc.yaml"
    path.write_text(mapping(sim.port), encoding="utf-8")
    try:
        proc = await asyncio.create_subprocess_exec(
            *BRIDGE,
            "verify",
            "--live",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        await sim.stop()
    text = out.decode()
    lines = {
        line.split()[1].rstrip(":"): line
        for line in text.splitlines()
        if line[:4].strip() in ("OK", "OFF", "FAIL")
    }
    assert proc.returncode == 1, (text, err.decode())
    assert set(lines) == {
        "line.header_pressure", "line.tank_level", "line.flow_rate",
        "line.flow_rate_unscaled", "line.energy", "line.permissive",
    }  # fmt: skip
    assert lines["line.header_pressure"].startswith("OK")
    assert lines["line.flow_rate"].startswith("OK")
    assert lines["line.permissive"].startswith("OK")
    assert "(try word_order: ABCD" in lines["line.tank_level"]
    assert "(try scale: 0.1" in lines["line.flow_rate_unscaled"]
    assert "(try word_order: CDAB" in lines["line.energy"]
    assert "3/6 tags match" in text
    # Read as the poller reads them: holding 0-9 in one request (the tag without `expect:`
    # included), the coil in another.
    assert len(sim.requests) == 2


async def test_verify_live_exits_0_when_all_match_and_fails_on_a_dead_device(
    tmp_path: Path,
) -> None:
    sim = PlcSimulator(port=free_port(), update_interval_s=3600.0)
    await sim.start()
    await sim.apply(T)
    v = expected_values(T)
    good = tmp_path / "good.yaml"
    good.write_text(
        mapping(sim.port).split("      tank_level:")[0]
        + f"      level:\n        source: plc\n        address: {{table: holding, address: 2, "
        f"type: float32, expect: {{value: {v['TankLevel']!r}, tolerance: 0.001}}}}\n",
        encoding="utf-8",
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *BRIDGE, "verify", "--live", str(good), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        await sim.stop()
    assert proc.returncode == 0, out.decode()
    assert "2/2 tags match" in out.decode()
    # The device is gone now: nothing can be verified, and that is a failure.
    proc = await asyncio.create_subprocess_exec(
        *BRIDGE, "verify", "--live", str(good), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    assert "FAIL source plc" in out.decode()


async def test_verify_live_reads_the_blocks_the_poller_sends_and_names_the_fix(
    tmp_path: Path,
) -> None:
    # Holding 10-11 and 20-21 exist, 12-19 do not: each tag reads fine alone, but with the
    # default max_gap (10) the gateway polls 10-21 in one request, which the PLC refuses.
    setpoint = Signal("Setpoint", "holding", 20, "float32", "ABCD", "%", lambda t: 75.0)
    sim = PlcSimulator(
        port=free_port(), update_interval_s=3600.0, signals=(*REGISTER_MAP, setpoint)
    )
    await sim.start()
    await sim.apply(T)
    v = expected_values(T)
    path = tmp_path / "holes.yaml"
    path.write_text(
        f"""
gateway:
  id: verify-test
sources:
  plc:
    kind: modbus
    host: 127.0.0.1
    port: {sim.port}
    timeout_s: 2
assets:
  line:
    tags:
      grid_power:
        source: plc
        address: {{table: holding, address: 10, type: int32, expect: {v["GridPower"]!r}}}
      setpoint:
        source: plc
        address: {{table: holding, address: 20, type: float32, expect: 75.0}}
""",
        encoding="utf-8",
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *BRIDGE, "verify", "--live", str(path), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        text = out.decode()
        assert proc.returncode == 1, text
        assert "FAIL block holding 10-21 (unit 1) of source plc" in text, text
        assert "modbus exception 2" in text
        assert "the device has no holding 12-19 inside this block: set max_gap: 7" in text
        # The values themselves are right (read alone), so the block is the only problem.
        assert "2/2 tags match" in text

        # With the fix the verify passes, reading the two blocks the poller would then send.
        path.write_text(
            path.read_text().replace("    timeout_s: 2\n", "    timeout_s: 2\n    max_gap: 7\n")
        )
        sim.clear_requests()
        proc = await asyncio.create_subprocess_exec(
            *BRIDGE, "verify", "--live", str(path), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, out.decode()
        assert len(sim.requests) == 2
    finally:
        await sim.stop()
