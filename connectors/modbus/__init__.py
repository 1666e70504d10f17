"""Modbus source (TCP, RTU-over-TCP, RTU serial): polls holding/input registers, coils and
discrete inputs of one or more units per connection; over Modbus TCP it also writes holding
registers and coils for write-back actions (``write.py``).

Only this package imports pymodbus; the core finds it through ``register()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bridge.connectors.modbus.config import ModbusAddress, ModbusSourceSettings
from bridge.types import Source, SourceTag, TargetWriter

if TYPE_CHECKING:
    from bridge.connectors.modbus.source import ModbusSource

__all__ = ["ModbusAddress", "ModbusSource", "ModbusSourceSettings", "register"]


def __getattr__(name: str) -> Any:
    # Registration and the config models import no pymodbus (a ``bridge validate`` needs only
    # the models): the source module loads on first use.
    if name == "ModbusSource":
        from bridge.connectors.modbus.source import ModbusSource

        return ModbusSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _source(name: str, settings: Any, tags: Sequence[SourceTag]) -> Source:
    from bridge.connectors.modbus.source import ModbusSource

    return ModbusSource(name, settings, tags)


def _writer(name: str, settings: Any) -> TargetWriter:
    from bridge.connectors.modbus.write import ModbusWriter

    return ModbusWriter(name, settings)


def register() -> None:
    """Make ``kind: modbus`` known to the registry (called through the entry point)."""
    from bridge.plugins import SourceKind, register_source

    register_source(
        SourceKind(
            kind="modbus",
            settings_model=ModbusSourceSettings,
            address_model=ModbusAddress,
            factory=_source,
            writer=_writer,
            description="Modbus polling over TCP, RTU-over-TCP or an RTU serial line: "
            "holding/input registers, coils, discrete inputs of several units; 16/32/64-bit "
            "integers, float32/64, strings and bit fields in any byte/word order.",
        )
    )
