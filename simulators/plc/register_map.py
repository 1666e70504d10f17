"""The register map the Modbus PLC simulator serves: one small process line. Pure, no I/O.

All addresses are 0-based protocol addresses. Each holding/input table is one contiguous
run (0..11 holding, 0..4 input) so a gateway can read each with one request; any address
outside the runs (e.g. holding 12 or 100) answers with exception 2 (illegal data address).

========  ================  =======  =======  =====  ======  =======================
table     name              address  type     order  unit    raw value
========  ================  =======  =======  =====  ======  =======================
holding   HeaderPressure    0-1      float32  CDAB   bar     value
holding   TankLevel         2-3      float32  ABCD   %       value
holding   FlowRate          4        uint16   -      m3/h    10 x value
holding   Ambient           5        int16    -      degC    10 x value (negative too)
holding   PumpStarts        6-7      uint32   ABCD   count   value (always > 65535)
holding   Energy            8-9      int32    CDAB   kWh     value
holding   GridPower         10-11    int32    ABCD   W       value (negative too)
input     MotorCurrent      0        uint16   -      A       100 x value
input     Vibration         1-2      float32  BADC   mm/s    value
input     Speed             3-4      float32  DCBA   rpm     value
coil      LinePermissive    0        bool     -      -       value
coil      PumpRunning       1        bool     -      -       value
coil      HighLevelAlarm    2        bool     -      -       value
discrete  EStopHealthy      0        bool     -      -       value
discrete  DoorClosed        1        bool     -      -       value
========  ================  =======  =======  =====  ======  =======================

Coils and discrete inputs are stored as one 16-bit word each, so bit addresses 3..15 read as
False; from 16 on they answer with exception 2.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from bridge.connectors.modbus.codec import RegisterType, WordOrder, encode
from bridge.connectors.modbus.config import Table
from bridge.simulators.plant.physics import demo_wave

__all__ = ["REGISTER_MAP", "Signal", "engineering_values", "expected_values"]


def _tank_level(t: float) -> float:
    return 50.0 + 30.0 * demo_wave(t, 120.0)


@dataclass(frozen=True, slots=True)
class Signal:
    """One served value. ``value_at(t)`` is the engineering value at simulator time ``t``;
    the registers hold ``raw = value * scale`` (rounded) for integer types."""

    name: str
    table: Table
    address: int
    type: RegisterType
    word_order: WordOrder
    unit: str
    value_at: Callable[[float], float]
    scale: float = 1.0

    def raw_at(self, t: float) -> int | float | bool:
        """What a client decodes from the registers (with this type and order) at time ``t``."""
        value = self.value_at(t)
        if self.type == "bool":
            return bool(value)
        if self.type == "float32":
            # The value as float32 holds it, so comparisons can be exact.
            rounded: float = struct.unpack(">f", struct.pack(">f", value))[0]
            return rounded
        return round(value * self.scale)

    def registers_at(self, t: float) -> list[int]:
        """Register words (address order) at time ``t``; for bit tables a single 0/1."""
        return encode(self.raw_at(t), self.type, self.word_order)


REGISTER_MAP: tuple[Signal, ...] = (
    Signal("HeaderPressure", "holding", 0, "float32", "CDAB", "bar",
           lambda t: 6.0 + 1.5 * demo_wave(t)),
    Signal("TankLevel", "holding", 2, "float32", "ABCD", "%", _tank_level),
    Signal("FlowRate", "holding", 4, "uint16", "ABCD", "m3/h",
           lambda t: 120.0 + 25.0 * demo_wave(t), scale=10.0),
    Signal("Ambient", "holding", 5, "int16", "ABCD", "degC",
           lambda t: -5.0 + 15.0 * demo_wave(t, 300.0), scale=10.0),
    Signal("PumpStarts", "holding", 6, "uint32", "ABCD", "count",
           lambda t: 131_000 + int(t // 2)),
    Signal("Energy", "holding", 8, "int32", "CDAB", "kWh",
           lambda t: 1_234_567 + int(t)),
    Signal("GridPower", "holding", 10, "int32", "ABCD", "W",
           lambda t: round(-250_000.0 * demo_wave(t))),
    Signal("MotorCurrent", "input", 0, "uint16", "ABCD", "A",
           lambda t: 42.0 + 3.0 * demo_wave(t), scale=100.0),
    Signal("Vibration", "input", 1, "float32", "BADC", "mm/s",
           lambda t: 2.2 + 0.5 * demo_wave(t, 20.0)),
    Signal("Speed", "input", 3, "float32", "DCBA", "rpm",
           lambda t: 1480.0 + 10.0 * demo_wave(t)),
    Signal("LinePermissive", "coil", 0, "bool", "ABCD", "", lambda t: True),
    Signal("PumpRunning", "coil", 1, "bool", "ABCD", "", lambda t: demo_wave(t) > -0.5),
    Signal("HighLevelAlarm", "coil", 2, "bool", "ABCD", "", lambda t: _tank_level(t) > 75.0),
    Signal("EStopHealthy", "discrete", 0, "bool", "ABCD", "", lambda t: True),
    Signal("DoorClosed", "discrete", 1, "bool", "ABCD", "", lambda t: demo_wave(t, 20.0) > 0.0),
)  # fmt: skip


def expected_values(t: float) -> dict[str, int | float | bool]:
    """Signal name -> the value a Modbus client decodes at simulator time ``t``."""
    return {s.name: s.raw_at(t) for s in REGISTER_MAP}


def engineering_values(t: float) -> dict[str, float]:
    """Signal name -> engineering value (raw / scale, before register rounding) at time ``t``."""
    return {s.name: s.value_at(t) for s in REGISTER_MAP}
