"""Modbus TCP source: polls holding/input registers, coils and discrete inputs.

Only this package imports pymodbus; the core finds it through ``register()``.
"""

from __future__ import annotations

from connectors.modbus.config import ModbusAddress, ModbusSourceSettings
from connectors.modbus.source import ModbusSource

__all__ = ["ModbusAddress", "ModbusSource", "ModbusSourceSettings", "register"]


def register() -> None:
    """Make ``kind: modbus`` known to the registry (called through the entry point)."""
    from bridge.registry import SourceKind, register_source

    register_source(
        SourceKind(
            kind="modbus",
            settings_model=ModbusSourceSettings,
            address_model=ModbusAddress,
            factory=ModbusSource,
            description="Modbus TCP polling: holding/input registers, coils, discrete inputs; "
            "16/32-bit integers and float32 in any byte/word order.",
        )
    )
