"""A value substituted from ``${ENV}`` is never shown by a config error: neither in the issues
(`bridge validate`'s output) nor in the exception's text. The placeholder is shown instead."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import load_mapping
from bridge.errors import ConfigError

SECRET = "hunter2-Xq9-secret"

CASES = {
    # The secret lands at a key of the wrong type.
    "wrong_type": """
version: 1
sources:
  plant:
    kind: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    timeout_s: ${SECRET}
    username: operator
    password: ${SECRET}
assets: {}
""",
    # The object holding the password is refused as a whole (both password and a file).
    "object_level": """
version: 1
sources:
  plant:
    kind: opcua
    endpoint: opc.tcp://127.0.0.1:4840
    username: operator
    password: ${SECRET}
    password_file: /run/secrets/plant
assets: {}
""",
    # Credentials inside a URL that is refused.
    "url_userinfo": """
version: 1
sources: {}
assets: {}
outputs:
  mes:
    kind: mes-rest
    url: ftp://gateway:${SECRET}@mes.local/events?token=${SECRET}
""",
    # A template variable filled from the environment into a field that refuses it: the
    # value reaches the error through the template, not at the key it was written.
    "through_template": """
version: 1
sources:
  plc: {kind: modbus, host: 127.0.0.1}
templates:
  pump:
    tags:
      level:
        source: plc
        address: {table: holding, address: "{reg}"}
assets:
  p1: {template: pump, vars: {reg: "${SECRET}"}}
""",
}


def _write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "mapping.yaml"
    file.write_text(text.lstrip(), encoding="utf-8")
    return file


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error_never_shows_a_substituted_secret(tmp_path: Path, case: str) -> None:
    file = _write(tmp_path, CASES[case])
    with pytest.raises(ConfigError) as info:
        load_mapping(file, env={"SECRET": SECRET})
    text = str(info.value)
    assert info.value.issues, "the mapping must be refused"
    assert SECRET not in text
    assert all(SECRET not in f"{i.message} {i.hint} {i.key}" for i in info.value.issues)


@pytest.mark.parametrize("case", ["wrong_type", "url_userinfo"])
def test_error_shows_the_value_as_written(tmp_path: Path, case: str) -> None:
    file = _write(tmp_path, CASES[case])
    with pytest.raises(ConfigError) as info:
        load_mapping(file, env={"SECRET": SECRET})
    assert "(got '" in str(info.value)
    assert "${SECRET}" in str(info.value)


def test_template_value_is_replaced_by_its_placeholder(tmp_path: Path) -> None:
    file = _write(tmp_path, CASES["through_template"])
    with pytest.raises(ConfigError) as info:
        load_mapping(file, env={"SECRET": SECRET})
    assert "${SECRET}" in str(info.value)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bridge_validate_output_has_no_secret(tmp_path: Path, case: str) -> None:
    file = _write(tmp_path, CASES[case])
    result = CliRunner().invoke(main, ["validate", str(file)], env={"SECRET": SECRET})
    assert result.exit_code == 3, result.output
    assert "problem(s) found" in result.output
    assert SECRET not in result.output
