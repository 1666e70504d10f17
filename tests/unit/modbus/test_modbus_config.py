"""Validation of the Modbus source settings and tag addresses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bridge.connectors.modbus import ModbusAddress, ModbusSource, ModbusSourceSettings, register


def test_settings_defaults() -> None:
    s = ModbusSourceSettings(host="plc1")
    assert (s.port, s.unit, s.poll_interval_ms, s.timeout_s) == (502, 1, 1000, 2.0)
    assert (s.max_gap, s.max_registers_per_read) == (10, 125)


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "modbus"},
        {"unit": 248},
        {"unit": -1},
        {"poll_interval_ms": 9},
        {"max_registers_per_read": 126},
        {"max_registers_per_read": 0},
        {"timeout_s": 0},
        {"port": 0},
        {"max_gap": -1},
    ],
)
def test_settings_reject(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ModbusSourceSettings.model_validate({"host": "plc1", **changes})


def test_every_setting_and_address_field_is_documented() -> None:
    for model in (ModbusSourceSettings, ModbusAddress):
        schema = model.model_json_schema()
        assert schema.get("additionalProperties") is False
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{model.__name__}.{name} has no description"


def test_register_address_defaults_and_sizes() -> None:
    a = ModbusAddress.model_validate({"table": "holding", "address": 10})
    assert (a.type, a.word_order, a.register_count) == ("uint16", "ABCD", 1)
    f = ModbusAddress.model_validate(
        {"table": "input", "address": 3, "type": "float32", "word_order": "CDAB"}
    )
    assert f.register_count == 2


@pytest.mark.parametrize("table", ["coil", "discrete"])
def test_bit_tables_default_to_bool(table: str) -> None:
    a = ModbusAddress.model_validate({"table": table, "address": 7})
    assert a.type == "bool" and a.register_count == 1 and a.is_bit


@pytest.mark.parametrize("table", ["coil", "discrete"])
def test_bit_tables_reject_register_types_clearly(table: str) -> None:
    with pytest.raises(ValidationError, match="type must be 'bool'"):
        ModbusAddress.model_validate({"table": table, "address": 0, "type": "float32"})


@pytest.mark.parametrize(
    "data",
    [
        {"table": "holding", "address": 65535, "type": "float32"},
        {"table": "holding", "address": 65536},
        {"table": "holding", "address": -1},
        {"table": "memory", "address": 0},
        {"table": "holding", "address": 65533, "type": "float64"},
        {"table": "holding", "address": 0, "type": "string"},
        {"table": "holding", "address": 0, "type": "bool"},
        {"table": "holding", "address": 0, "bit": 15, "bits": 2},
        {"table": "holding", "address": 0, "bit": 3, "bits": 2, "type": "bool"},
        {"table": "coil", "address": 0, "bit": 3},
        {"table": "holding", "address": 0, "expect": {"value": 1, "tolerance": -1}},
        {"table": "holding", "address": 0, "word_order": "BACD"},
        {"table": "holding", "address": 0, "bit": 16},
        {"address": 0},
    ],
)
def test_address_rejects(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ModbusAddress.model_validate(data)


def test_register_makes_modbus_kind_known(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import entry_points

    import bridge.plugins

    registered: list[bridge.plugins.SourceKind] = []
    monkeypatch.setattr(bridge.plugins, "register_source", registered.append)
    register()
    (kind,) = registered
    assert kind.kind == "modbus"
    assert kind.settings_model is ModbusSourceSettings
    assert kind.address_model is ModbusAddress
    # The factory imports the source (and pymodbus) only when a source is built.
    assert isinstance(kind.factory("m", ModbusSourceSettings(host="plc1"), []), ModbusSource)
    assert kind.description
    points = {ep.name: ep.value for ep in entry_points(group="bridge.connectors")}
    assert points.get("modbus") == "bridge.connectors.modbus:register"
