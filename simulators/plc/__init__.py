"""Modbus TCP PLC simulator: a small process line whose values change over time."""

from __future__ import annotations

from bridge.simulators.plc.register_map import (
    REGISTER_MAP,
    Signal,
    engineering_values,
    expected_values,
)
from bridge.simulators.plc.server import PlcSimulator, RequestRecord, serve_forever

__all__ = [
    "REGISTER_MAP",
    "PlcSimulator",
    "RequestRecord",
    "Signal",
    "engineering_values",
    "expected_values",
    "serve_forever",
]
