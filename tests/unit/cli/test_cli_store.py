"""``bridge.cli.store``: every command opens the store one way, with the mapping's durability."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from bridge.cli import main
from bridge.cli.store import opened_store
from bridge.store.db import Store

MAPPING = """
version: 1
gateway:
  id: cli
  store: "sqlite:///{store}"
  durability: {{sqlite_synchronous: FULL}}
sources:
  plc: {{kind: modbus, host: 127.0.0.1, port: 5020}}
assets:
  line:
    tags:
      pressure: {{source: plc, address: {{table: holding, address: 0, type: uint16}}}}
"""


def _synchronous(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text("PRAGMA synchronous")).scalar_one())


def _mapping(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.format(store=tmp_path / "m.db"), encoding="utf-8")
    return path


def test_a_mapping_opens_its_store_with_its_durability_settings(tmp_path: Path) -> None:
    with opened_store(_mapping(tmp_path), None, create=True) as opened:
        assert opened.mapping is not None and opened.mapping.gateway.id == "cli"
        assert _synchronous(opened.store) == 2  # FULL, as the mapping says
    assert (tmp_path / "m.db").exists()


def test_a_url_opens_the_store_with_the_defaults(tmp_path: Path) -> None:
    with opened_store(None, f"sqlite:///{tmp_path / 'u.db'}", create=True) as opened:
        assert opened.mapping is None
        assert _synchronous(opened.store) == 1  # NORMAL


@pytest.mark.parametrize("both", [True, False])
def test_exactly_one_of_mapping_and_store(tmp_path: Path, both: bool) -> None:
    mapping = _mapping(tmp_path) if both else None
    url = f"sqlite:///{tmp_path / 'u.db'}" if both else None
    with (
        pytest.raises(click.UsageError, match="exactly one of --mapping FILE or --store URL"),
        opened_store(mapping, url),
    ):
        pass


@pytest.mark.parametrize("command", [["apikeys", "list"], ["outbox", "list"], ["models", "list"]])
def test_every_store_command_reports_a_bad_mapping_the_same_way(
    tmp_path: Path, command: list[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MAPPING.format(store=tmp_path / "m.db").replace("id: cli", "idd: cli"))
    result = CliRunner().invoke(main, [*command, "--mapping", str(bad)])
    assert result.exit_code == 3, result.output
    assert "gateway.idd" in result.stderr and "problem(s) found" in result.stderr
    assert not (tmp_path / "m.db").exists()  # nothing opened
