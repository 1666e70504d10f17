"""The lakehouse destination's settings: validated without deltalake or pyarrow, clear errors,
and which mode each tag gets."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from bridge.connectors.lakehouse.config import Downsample, LakehouseSettings

LEVELS = {"enterprise": "acme", "site": "dallas", "area": "packaging", "line": "line-4"}


def _settings(**values: object) -> LakehouseSettings:
    return LakehouseSettings.model_validate(
        {"uri": "s3://plant-lake/bridge", "spool_dir": "var/lake", **LEVELS, **values}
    )


def test_registration_and_settings_import_neither_deltalake_nor_pyarrow() -> None:
    code = (
        "import sys\n"
        "from bridge.connectors.lakehouse import register, LakehouseSettings\n"
        "register()\n"
        "from bridge import plugins\n"
        "assert 'lakehouse' in plugins.destination_kinds()\n"
        "LakehouseSettings(uri='/x', spool_dir='/y', enterprise='a', site='b', area='c',\n"
        "                  line='d')\n"
        "loaded = [m for m in ('deltalake', 'pyarrow', 'polars') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_object_store_uris_and_local_paths_are_accepted() -> None:
    for uri in ("s3://b/p", "abfss://c@a.dfs.core.windows.net/p", "gs://b/p", "/data/lake", "lake"):
        assert _settings(uri=uri).uri == uri


def test_an_unknown_scheme_names_the_ones_that_work() -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(uri="ftp://host/lake")
    message = str(caught.value)
    assert "'ftp' is not an object store" in message and "s3://" in message


def test_the_levels_are_required_and_checked() -> None:
    with pytest.raises(ValidationError, match="line"):
        LakehouseSettings.model_validate({"uri": "/x", "spool_dir": "/y", **LEVELS, "line": "a/b"})


def test_a_tag_id_wins_over_its_name_and_the_name_over_the_default() -> None:
    s = _settings(
        telemetry={
            "default": {"downsample": {"every_s": 60}},
            "tags": {"vibration": {"downsample": {"every_s": 10}}, "pump-01.vibration": "raw"},
        }
    )
    t = s.telemetry
    assert t.mode_of("pump-01.vibration", "vibration") == "raw"
    assert t.mode_of("pump-02.vibration", "vibration") == Downsample(every_s=10)
    other = t.mode_of("pump-02.speed", "speed")
    assert isinstance(other, Downsample) and other.every_s == 60
    assert other.aggregates == ["last", "mean", "min", "max"]


def test_an_unknown_aggregate_is_refused() -> None:
    with pytest.raises(ValidationError, match="median"):
        _settings(telemetry={"default": {"downsample": {"every_s": 10, "aggregates": ["median"]}}})


def test_backoff_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="initial_backoff_s"):
        _settings(initial_backoff_s=10, max_backoff_s=1)


def test_without_deltalake_building_the_destination_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['deltalake'] = None  # as if the extra were not installed\n"
        "from bridge.connectors.lakehouse import register\n"
        "from bridge.destination import DestinationContext\n"
        "from bridge.errors import ConnectorError\n"
        "from bridge import plugins\n"
        "register()\n"
        "kind = plugins.destination_kinds()['lakehouse']\n"
        "s = kind.settings_model(uri='/x', spool_dir='/y', enterprise='a', site='b', area='c',\n"
        "                        line='d')\n"
        "try:\n"
        "    kind.factory('lake', s, DestinationContext('gw'))\n"
        "except ConnectorError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    assert "outputs.lake: kind 'lakehouse' needs the package 'deltalake'" in done.stdout
    assert "pip install bridge-gateway[lakehouse]" in done.stdout
