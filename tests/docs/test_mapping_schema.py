"""The committed JSON Schema (mappings/bridge-mapping.schema.json, what editors load through the
``# yaml-language-server: $schema=`` line) accepts the mappings we ship and the docs' samples,
as written (``${NAME}`` placeholders unsubstituted, like an editor sees them), and flags what
`bridge validate` refuses where an editor can show it: an unknown ``kind`` on that key, a
setting the kind does not have. That it matches `bridge schema` is
tests/integration/test_cli.py::test_committed_schema_is_current."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema_rs
import pytest
import yaml
from doc_samples import ROOT, Sample, samples

from bridge import plugins

SCHEMA = json.loads((ROOT / "mappings" / "bridge-mapping.schema.json").read_text())
VALIDATOR = jsonschema_rs.validator_for(SCHEMA)
DEMO: dict[str, Any] = yaml.safe_load((ROOT / "mappings" / "demo.yaml").read_text())


def _errors(mapping: Any) -> list[tuple[str, str]]:
    """(where, message) of every schema error, where as a dotted key path."""
    return [
        (".".join(str(p) for p in err.instance_path), err.message)
        for err in VALIDATOR.iter_errors(mapping)
    ]


def _demo_with(section: str, name: str, key: str, value: Any) -> dict[str, Any]:
    mapping = copy.deepcopy(DEMO)
    mapping[section][name][key] = value
    return mapping


def test_the_schema_is_a_valid_json_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema_rs.meta.validate(SCHEMA)


@pytest.mark.parametrize("path", sorted((ROOT / "mappings").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_mappings_pass_the_schema(path: Any) -> None:
    assert _errors(yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("sample", samples(), ids=lambda s: s.id)
def test_doc_samples_pass_the_schema(sample: Sample) -> None:
    assert _errors(sample.mapping()) == []


def test_the_schema_knows_every_registered_kind() -> None:
    def kinds(section: str) -> set[str]:
        entry = next(iter(SCHEMA["properties"][section]["patternProperties"].values()))
        return set(entry["properties"]["kind"]["enum"])

    assert kinds("sources") == set(plugins.source_kinds())
    assert kinds("outputs") == set(plugins.output_kinds())


@pytest.mark.parametrize(("section", "name"), [("sources", "plant"), ("outputs", "hmi")])
def test_an_unknown_kind_is_flagged_on_its_key(section: str, name: str) -> None:
    errors = _errors(_demo_with(section, name, "kind", "modbuss"))
    assert errors, "kind: modbuss passed the schema"
    assert {where for where, _ in errors} == {f"{section}.{name}.kind"}
    assert all("is not one of" in message for _, message in errors)


@pytest.mark.parametrize(
    ("section", "name", "key"),
    [("sources", "plant", "publishing_interval"), ("outputs", "mes", "retries")],
)
def test_a_setting_the_kind_does_not_have_is_flagged(section: str, name: str, key: str) -> None:
    errors = _errors(_demo_with(section, name, key, 5))
    assert [where for where, _ in errors] == [f"{section}.{name}"]
    assert f"'{key}' was unexpected" in errors[0][1]


def test_settings_are_those_of_the_entrys_kind() -> None:
    # `unit` is a Modbus setting: on an OPC UA source it is a mistake.
    assert _errors(_demo_with("sources", "line-plc", "unit", 3)) == []
    errors = _errors(_demo_with("sources", "plant", "unit", 3))
    assert [where for where, _ in errors] == ["sources.plant"]


def test_numbers_may_be_environment_placeholders() -> None:
    placeholder = _demo_with("sources", "plant", "publishing_interval_ms", "${INTERVAL:-100}")
    assert _errors(placeholder) == []
    word = _demo_with("sources", "plant", "publishing_interval_ms", "fast")
    assert [where for where, _ in _errors(word)] == ["sources.plant.publishing_interval_ms"]


def test_a_patterned_string_may_be_an_environment_placeholder() -> None:
    """Each gateway of a fleet runs the same mapping with its own ``id`` from the environment."""
    mapping = copy.deepcopy(DEMO)
    mapping["gateway"]["id"] = "${BRIDGE_GATEWAY_ID}"
    assert _errors(mapping) == []
    mapping["gateway"]["id"] = "9 gateways"
    assert [where for where, _ in _errors(mapping)] == ["gateway.id"]


def test_entry_names_the_loader_refuses_are_flagged() -> None:
    mapping = copy.deepcopy(DEMO)
    mapping["outputs"]["mes 2"] = mapping["outputs"]["mes"]
    assert [where for where, _ in _errors(mapping)] == ["outputs"]
