"""Configuration of a Modbus TCP source and of one tag's Modbus address.

The ``description=`` of each field is the user documentation: docs and the JSON Schema that
editors use are generated from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.modbus.codec import RegisterType, WordOrder, register_count

__all__ = ["BIT_TABLES", "ModbusAddress", "ModbusSourceSettings", "Table"]

Table = Literal["holding", "input", "coil", "discrete"]
BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})


class ModbusSourceSettings(BaseModel):
    """A ``sources.<name>`` block with ``kind: modbus`` (the ``kind`` key itself is not here)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Host name or IP address of the Modbus TCP server (PLC).")
    port: int = Field(502, ge=1, le=65535, description="TCP port of the Modbus server.")
    unit: int = Field(
        1,
        ge=0,
        le=247,
        description="Modbus unit (device / slave) id, 0..247; gateways route on it.",
    )
    poll_interval_ms: int = Field(
        1000,
        ge=10,
        description="Time between the starts of two poll cycles, in milliseconds. A slow cycle "
        "is never overlapped: the next one starts when it ends.",
    )
    timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="Connect timeout and per-request response timeout, in seconds.",
    )
    max_gap: int = Field(
        10,
        ge=0,
        le=124,
        description="Unused registers (or bits) allowed between two tags for them to still be "
        "read in one request. 0 merges only adjacent tags.",
    )
    max_registers_per_read: int = Field(
        125,
        ge=1,
        le=125,
        description="Largest number of registers asked for in one request (the protocol "
        "allows 125; some devices want less).",
    )


class ModbusAddress(BaseModel):
    """A tag's ``address`` block for a Modbus source."""

    model_config = ConfigDict(extra="forbid")

    table: Table = Field(
        description="Register table: holding (FC3), input (FC4), coil (FC1), discrete (FC2)."
    )
    address: int = Field(
        ge=0,
        le=65535,
        description="0-based protocol address (holding register 40001 is address 0).",
    )
    type: RegisterType = Field(
        "uint16",
        description="Data type in the registers. 32-bit types use two consecutive registers. "
        "Coils and discrete inputs are always bool (the default there).",
    )
    word_order: WordOrder = Field(
        "ABCD",
        description="Byte order of 32-bit values as sent, A = most significant byte: ABCD "
        "big-endian, CDAB word swap, BADC byte swap, DCBA reversed. Ignored for 16-bit types.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bits_default_to_bool(cls, data: Any) -> Any:
        # Bit tables hold nothing but bools, so a mapping need not say so.
        if isinstance(data, dict) and data.get("table") in BIT_TABLES and "type" not in data:
            return {**data, "type": "bool"}
        return data

    @model_validator(mode="after")
    def _check_type_and_range(self) -> ModbusAddress:
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(
                f"a {self.table} is a single bit: type must be 'bool' (or left out), "
                f"not {self.type!r}"
            )
        last = self.address + self.register_count - 1
        if last > 65535:
            raise ValueError(
                f"{self.type} at address {self.address} runs past the last address 65535"
            )
        return self

    @property
    def register_count(self) -> int:
        """Registers (or bits, for coil/discrete) the value occupies: 1 or 2."""
        return 1 if self.table in BIT_TABLES else register_count(self.type)

    @property
    def is_bit(self) -> bool:
        return self.table in BIT_TABLES
