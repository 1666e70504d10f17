"""Configuration of a Modbus source (TCP, RTU-over-TCP or RTU on a serial line) and of one
tag's Modbus address.

The ``description=`` of each field is the user documentation: docs and the JSON Schema that
editors use are generated from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.connectors.modbus.codec import RegisterType, WordOrder, register_count

__all__ = [
    "BIT_TABLES",
    "DeviceSettings",
    "ExpectedValue",
    "ModbusAddress",
    "ModbusSourceSettings",
    "SerialSettings",
    "Table",
    "Transport",
]

Table = Literal["holding", "input", "coil", "discrete"]
Transport = Literal["tcp", "rtu-over-tcp", "rtu"]
BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})


class SerialSettings(BaseModel):
    """The serial line of an RTU source."""

    model_config = ConfigDict(extra="forbid")

    port: str = Field(description="Serial device, e.g. /dev/ttyUSB0 or COM3.")
    baudrate: int = Field(19200, ge=300, le=921600, description="Line speed in bit/s.")
    parity: Literal["N", "E", "O"] = Field("E", description="Parity: N none, E even, O odd.")
    stopbits: Literal[1, 2] = Field(1, description="Stop bits.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits per character.")


class DeviceSettings(BaseModel):
    """One unit behind this source that polls at its own rate."""

    model_config = ConfigDict(extra="forbid")

    unit: int = Field(ge=0, le=247, description="Modbus unit (device / slave) id of the device.")
    poll_interval_ms: int = Field(
        ge=10, description="Time between the starts of two polls of this device, in milliseconds."
    )


class ModbusSourceSettings(BaseModel):
    """A ``sources.<name>`` block with ``kind: modbus`` (the ``kind`` key itself is not here).

    One source is one connection (a TCP socket or a serial line); every unit reached through
    it shares it, one request at a time.
    """

    model_config = ConfigDict(extra="forbid")

    transport: Transport = Field(
        "tcp",
        description="tcp: Modbus TCP (MBAP header). rtu-over-tcp: RTU frames (CRC, no "
        "transaction id) over a TCP socket, as serial-to-Ethernet converters speak. rtu: RTU on "
        "a serial line (give `serial:`).",
    )
    host: str | None = Field(
        None,
        description="Host name or IP address of the Modbus server or gateway (tcp transports).",
    )
    port: int = Field(502, ge=1, le=65535, description="TCP port of the Modbus server.")
    serial: SerialSettings | None = Field(None, description="The serial line (transport rtu).")
    unit: int = Field(
        1,
        ge=0,
        le=247,
        description="Default Modbus unit (device / slave) id, 0..247, for tags whose address "
        "names none; gateways route on it.",
    )
    poll_interval_ms: int = Field(
        1000,
        ge=10,
        description="Time between the starts of two poll cycles of a device, in milliseconds. A "
        "slow cycle is never overlapped: the next one starts when it ends.",
    )
    devices: list[DeviceSettings] = Field(
        default_factory=list,
        description="Units polled at their own rate; units not listed use `poll_interval_ms`.",
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
    breaker_failures: int = Field(
        3,
        ge=1,
        le=1000,
        description="Failed polls in a row (timeouts, exception or invalid replies) after which a "
        "unit is skipped for a while, so a dead unit does not eat the line's time.",
    )
    breaker_backoff_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="First pause of a failing unit; it doubles on every failed probe.",
    )
    breaker_max_backoff_s: float = Field(
        60.0, gt=0, le=86400, description="Longest pause of a failing unit."
    )

    @model_validator(mode="after")
    def _check_transport(self) -> ModbusSourceSettings:
        if self.transport == "rtu":
            if self.serial is None:
                raise ValueError("transport rtu needs `serial:` (port, baudrate, ...)")
        elif not self.host:
            raise ValueError(f"transport {self.transport} needs `host:`")
        units = [d.unit for d in self.devices]
        if len(units) != len(set(units)):
            raise ValueError("a unit is listed twice under `devices:`")
        return self

    def interval_s(self, unit: int) -> float:
        """Poll interval of ``unit``, in seconds."""
        for device in self.devices:
            if device.unit == unit:
                return device.poll_interval_ms / 1000.0
        return self.poll_interval_ms / 1000.0


class ExpectedValue(BaseModel):
    """A value the tag is known to have (a golden vector for `bridge verify --live`)."""

    model_config = ConfigDict(extra="forbid")

    value: bool | int | float | str = Field(
        description="The engineering value (after scale and offset) the tag shows now, e.g. "
        "read off the PLC's panel."
    )
    tolerance: float = Field(
        0.0,
        ge=0,
        description="Largest accepted difference; 0 allows float32 rounding only.",
    )


def _shorthand_in_schema(schema: dict[str, Any]) -> None:
    # `expect: 50.0` is short for `expect: {value: 50.0}` (ModbusAddress._shorthands): the JSON
    # Schema editors use must accept it too.
    schema["anyOf"].insert(0, {"type": ["boolean", "number", "string"]})


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
        description="Data type in the registers. 32-bit types use two consecutive registers, "
        "64-bit types four, strings `length`/2. Coils and discrete inputs are always bool (the "
        "default there).",
    )
    word_order: WordOrder = Field(
        "ABCD",
        description="Byte order of 32/64-bit values as sent, A = most significant byte: ABCD "
        "big-endian, CDAB word swap, BADC byte swap, DCBA reversed (for 64-bit: word order "
        "reversed and/or bytes swapped). Strings: BADC/DCBA put the low byte first. Ignored for "
        "16-bit types.",
    )
    unit: int | None = Field(
        None,
        ge=0,
        le=247,
        description="Unit id of the device holding this tag (default: the source's `unit`).",
    )
    bit: int | None = Field(
        None,
        ge=0,
        le=15,
        description="Bit field: first bit (0 = least significant) of a holding/input register. "
        "With `bits: 1` (default) the type is bool, wider fields are uint16.",
    )
    bits: int = Field(1, ge=1, le=16, description="Width of the bit field starting at `bit`.")
    length: int = Field(
        0, ge=0, le=250, description="Characters of a string (two per register; required there)."
    )
    expect: ExpectedValue | None = Field(
        None,
        description="Known value for `bridge verify --live`: a number, bool or text, or "
        "{value, tolerance}.",
        json_schema_extra=_shorthand_in_schema,
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # Bit tables hold nothing but bools, so a mapping need not say so.
        if data.get("table") in BIT_TABLES and "type" not in data:
            data = {**data, "type": "bool"}
        # A bit field of one bit is a bool unless the mapping says otherwise.
        if data.get("bit") is not None and "type" not in data:
            data = {**data, "type": "bool" if data.get("bits", 1) == 1 else "uint16"}
        expect = data.get("expect")
        if expect is not None and not isinstance(expect, dict):
            data = {**data, "expect": {"value": expect}}
        return data

    @model_validator(mode="after")
    def _check_type_and_range(self) -> ModbusAddress:
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(
                f"a {self.table} is a single bit: type must be 'bool' (or left out), "
                f"not {self.type!r}"
            )
        if self.bit is not None:
            self._check_bit_field()
        elif self.type == "bool" and self.table not in BIT_TABLES:
            raise ValueError("a bool in a register needs `bit:` (which bit of the register)")
        if self.type == "string" and self.length == 0:
            raise ValueError("a string needs `length:` (number of characters)")
        last = self.address + self.register_count - 1
        if last > 65535:
            raise ValueError(
                f"{self.type} at address {self.address} runs past the last address 65535"
            )
        return self

    def _check_bit_field(self) -> None:
        assert self.bit is not None
        if self.table in BIT_TABLES:
            raise ValueError(f"`bit:` selects a bit of a register; a {self.table} is one bit")
        if self.bit + self.bits > 16:
            raise ValueError(f"bit field {self.bit}+{self.bits} runs past bit 15")
        wanted = "bool" if self.bits == 1 else "uint16"
        if self.type != wanted:
            raise ValueError(f"a {self.bits}-bit field has type {wanted!r}, not {self.type!r}")

    @property
    def register_count(self) -> int:
        """Registers (or bits, for coil/discrete) the value occupies."""
        if self.table in BIT_TABLES or self.bit is not None:
            return 1
        return register_count(self.type, self.length)

    @property
    def is_bit(self) -> bool:
        return self.table in BIT_TABLES
