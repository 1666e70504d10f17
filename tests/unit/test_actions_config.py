"""`actions:` in the mapping: each mistake is reported with file, line, key and a fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bridge.config import load_mapping
from bridge.errors import ConfigError, ConfigIssue

ROOT = Path(__file__).resolve().parents[2]
HEAD = """version: 1
sources:
  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
  plc: {kind: modbus, host: 127.0.0.1}
templates:
  pump:
    tags:
      speed: {source: plant, address: "nsu=urn:p;s=Pump{n}.Speed"}
      running: {source: plant, address: "nsu=urn:p;s=Pump{n}.Running"}
      vibration: {source: plant, address: "nsu=urn:p;s=Pump{n}.Vibration"}
      speed_sp: {source: plc, address: {table: holding, address: 10, type: float32}}
assets:
  pump-01: {template: pump, vars: {n: "01"}}
models:
  pump-health:
    file: models/pump_health.onnx
    version: 1.0.0
    template: pump
    labels: [healthy, bearing_fault]
    features: [{tag: vibration, stat: mean}]
actions:
  slow-down:
    asset: pump-01
"""
GOOD = """    target: {modbus: {source: plc, table: holding, address: 20, type: float32}}
    trigger: {model: pump-health, label: bearing_fault, min_score: 0.8}
    value: {expression: "tags.speed - 50"}
    limits: {min: 800, max: 1500, max_rate_per_min: 100}
    interlocks: ["running == true", "speed < 1500"]
    mode: confirm
    confirm_timeout_s: 30
"""


def _load(tmp_path: Path, body: str) -> list[ConfigIssue]:
    shutil.copytree(ROOT / "mappings" / "models", tmp_path / "models", dirs_exist_ok=True)
    path = tmp_path / "mapping.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    return info.value.issues


def _line(body: str, needle: str) -> int:
    lines = (HEAD + body).splitlines()
    return next(i for i, text in enumerate(lines, 1) if needle in text)


def test_a_valid_action_resolves(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "mappings" / "models", tmp_path / "models")
    (tmp_path / "mapping.yaml").write_text(HEAD + GOOD)
    action = load_mapping(tmp_path / "mapping.yaml").actions["slow-down"]
    assert action.value_type == "float32" and action.mode == "confirm"
    assert [c.tag for c in action.interlocks] == ["pump-01.running", "pump-01.speed"]
    assert action.expression_tags == {"speed": "pump-01.speed"}
    assert action.max_age_s["pump-01.running"] == 10.0


CASES = [
    # (replace this, with that, key, text in the message, line holding)
    (
        '"speed < 1500"',
        '"sped < 1500"',
        "actions.slow-down.interlocks.1",
        "unknown tag 'sped'",
        "interlocks:",
    ),
    (
        '"running == true"',
        '"running ~ 1"',
        "actions.slow-down.interlocks.0",
        "not a condition",
        "interlocks:",
    ),
    (
        "label: bearing_fault",
        "label: bearing",
        "actions.slow-down.trigger.label",
        "no label 'bearing'",
        "trigger:",
    ),
    (
        "model: pump-health",
        "model: pump-heath",
        "actions.slow-down.trigger.model",
        "unknown model",
        "trigger:",
    ),
    (
        "min: 800, max: 1500",
        "min: 1800, max: 1500",
        "actions.slow-down.limits",
        "above max",
        "limits:",
    ),
    (
        'expression: "tags.speed - 50"',
        "constant: 2000",
        "actions.slow-down.value.constant",
        "outside the limits",
        "value:",
    ),
    (
        'expression: "tags.speed - 50"',
        'expression: "__import__(1)"',
        "actions.slow-down.value",
        "only min, max, abs",
        "value:",
    ),
    (
        'expression: "tags.speed - 50"',
        'expression: "speed - 50"',
        "actions.slow-down.value",
        "unknown field 'speed'",
        "value:",
    ),
    (
        'expression: "tags.speed - 50"',
        'expression: "tags.sped - 50"',
        "actions.slow-down.value.expression",
        "unknown tag 'sped'",
        "value:",
    ),
    (
        "    confirm_timeout_s: 30\n",
        "",
        "actions.slow-down.confirm_timeout_s",
        "needs `confirm_timeout_s`",
        "slow-down:",
    ),
    (
        "confirm_timeout_s: 30",
        "confirm_timeout_s: -1",
        "actions.slow-down.confirm_timeout_s",
        "greater than 0",
        "confirm_timeout_s",
    ),
    (
        "address: 20, type: float32",
        "address: 11, type: float32",
        "actions.slow-down.target.modbus",
        "not declared writable",
        "target:",
    ),
    (
        "source: plc, table: holding",
        "source: plant, table: holding",
        "actions.slow-down.target.modbus.source",
        "kind opcua",
        "target:",
    ),
    (
        "table: holding, address: 20, type: float32",
        "table: coil, address: 20",
        "actions.slow-down.value",
        "takes `constant: true`",
        "value:",
    ),
    (
        "table: holding, address: 20, type: float32",
        "table: coil, address: 20, type: uint16",
        "actions.slow-down.target.modbus",
        "a coil is a single bit",
        "target:",
    ),
    (
        "table: holding, address: 20, type: float32",
        "table: input, address: 20",
        "actions.slow-down.target.modbus.table",
        "",
        "target:",
    ),
    ("type: float32}}", "type: int16}}", "actions.slow-down.limits", "", "limits:"),
    (
        "min: 800, max: 1500",
        "min: 800, max: 1.0e+39",
        "actions.slow-down.limits",
        "exceed what a float32",
        "limits:",
    ),
]


@pytest.mark.parametrize("old,new,key,text,line", CASES, ids=[c[2] + ":" + c[3] for c in CASES])
def test_mistakes_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, key: str, text: str, line: str
) -> None:
    if new == "type: int16}}":
        new, text = "type: int16}}", ""
        body = GOOD.replace(old, new).replace("min: 800, max: 1500", "min: 800, max: 99999")
        text = "exceed what a int16"
    else:
        assert old in GOOD
        body = GOOD.replace(old, new)
    issues = _load(tmp_path, body)
    rendered = "\n".join(map(str, issues))
    assert all(i.file.endswith("mapping.yaml") and i.hint for i in issues), rendered
    matching = [i for i in issues if i.key == key and text in i.message]
    assert len(matching) == 1, rendered
    assert matching[0].line == _line(body, line), rendered


def test_a_writable_tag_may_be_a_target(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "mappings" / "models", tmp_path / "models")
    head = HEAD.replace("type: float32}}", "type: float32}, writable: true}")
    (tmp_path / "mapping.yaml").write_text(head + GOOD.replace("address: 20", "address: 10"))
    assert "slow-down" in load_mapping(tmp_path / "mapping.yaml").actions


SECOND = """  pump-02-slow-down:
    asset: {asset}
    target: {{modbus: {{source: plc, table: holding, address: {address}, type: float32}}}}
    trigger: {{model: pump-health, label: bearing_fault}}
    value: {{constant: 900}}
    limits: {{min: 800, max: 1500}}
"""


def test_two_assets_may_not_write_one_place(tmp_path: Path) -> None:
    """A fleet lets one gateway act for an asset: two assets' actions on one register could be
    written by two gateways at once."""
    head = HEAD.replace(
        'pump-01: {template: pump, vars: {n: "01"}}',
        'pump-01: {template: pump, vars: {n: "01"}}\n  pump-02: {template: pump, vars: {n: "02"}}',
    )
    # Registers 20-21 (float32) against 21-22: they share register 21.
    body = GOOD + SECOND.format(asset="pump-02", address=21)
    shutil.copytree(ROOT / "mappings" / "models", tmp_path / "models")
    path = tmp_path / "mapping.yaml"
    path.write_text(head + body)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    [issue] = info.value.issues
    assert issue.key == "actions.pump-02-slow-down.target.modbus"
    assert "where action 'slow-down' (asset 'pump-01') writes" in issue.message
    lines = (head + body).splitlines()
    assert issue.line == next(i for i, t in enumerate(lines, 1) if "address: 21" in t), str(issue)
    # The same asset may: its gateway serialises its actions' writes.
    path.write_text(head + GOOD + SECOND.format(asset="pump-01", address=21))
    assert set(load_mapping(path).actions) == {"slow-down", "pump-02-slow-down"}
    # Next to each other, not overlapping: fine.
    path.write_text(head + GOOD + SECOND.format(asset="pump-02", address=22))
    assert len(load_mapping(path).actions) == 2


def test_an_rtu_source_cannot_be_written_through(tmp_path: Path) -> None:
    head = HEAD.replace(
        "plc: {kind: modbus, host: 127.0.0.1}",
        "plc: {kind: modbus, host: 127.0.0.1, transport: rtu-over-tcp}",
    )
    shutil.copytree(ROOT / "mappings" / "models", tmp_path / "models")
    path = tmp_path / "mapping.yaml"
    path.write_text(head + GOOD)
    with pytest.raises(ConfigError) as info:
        load_mapping(path)
    [issue] = info.value.issues
    assert issue.key == "actions.slow-down.target.modbus.source"
    assert "Modbus rtu-over-tcp" in issue.message and "TCP gateway" in issue.hint
    lines = (head + GOOD).splitlines()
    assert issue.line == next(i for i, t in enumerate(lines, 1) if "address: 20" in t)
