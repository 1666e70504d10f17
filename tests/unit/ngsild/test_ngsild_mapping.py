"""An ``ngsi-ld`` output in a mapping file: a bad entity type is one issue at its key with its
line, before anything runs; template types are said at start to be unused where the gateway
told the destination no assets (a tool, a test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.config import load_mapping
from bridge.connectors import ngsild
from bridge.connectors.ngsild import NgsiLdDestination, NgsiLdSettings
from bridge.destination import DestinationContext
from bridge.errors import ConfigError
from bridge.types import AssetInfo

MAPPING = """version: 1
sources: {{}}
assets: {{}}
outputs:
  twin:
    kind: ngsi-ld
    url: http://127.0.0.1:1026
    enterprise: acme
    site: dallas
    area: packaging
    line: line-4
{extra}
"""


@pytest.fixture(autouse=True)
def registered() -> None:
    ngsild.register()  # as the entry point does once the package is installed


def test_a_valid_block_loads(tmp_path: Path) -> None:
    file = tmp_path / "mapping.yaml"
    file.write_text(MAPPING.format(extra="    asset_types: {pump-03: BoosterPump}"))
    mapping = load_mapping(file, env={})
    settings = mapping.outputs["twin"].settings
    assert isinstance(settings, NgsiLdSettings)
    assert settings.asset_types == {"pump-03": "BoosterPump"}


def test_an_entity_type_ngsi_ld_refuses_is_an_issue_at_its_key(tmp_path: Path) -> None:
    file = tmp_path / "mapping.yaml"
    file.write_text(MAPPING.format(extra="    asset_types: {pump-03: Booster Pump}"))
    with pytest.raises(ConfigError) as info:
        load_mapping(file, env={})
    [issue] = info.value.issues
    assert issue.key.startswith("outputs.twin.asset_types"), issue.key
    assert issue.line == 12
    assert "'Booster Pump' is not an NGSI-LD entity type" in issue.message


def test_template_types_without_templates_from_the_core_are_reported() -> None:
    settings = NgsiLdSettings(
        url="http://127.0.0.1:1026",
        enterprise="acme",
        site="dallas",
        area="packaging",
        line="line-4",
        template_types={"pump": "CentrifugalPump"},
    )
    with capture_logs() as logs:
        NgsiLdDestination("twin", settings, DestinationContext("gw"))
    (warning,) = [e for e in logs if e["event"] == "ngsild_template_types_unused"]
    assert "outputs.twin.asset_types" in warning["hint"]


def test_template_types_with_templates_from_the_core_are_not_reported() -> None:
    settings = NgsiLdSettings(
        url="http://127.0.0.1:1026",
        enterprise="acme",
        site="dallas",
        area="packaging",
        line="line-4",
        template_types={"pump": "CentrifugalPump"},
    )
    context = DestinationContext("gw", assets=(AssetInfo("pump-01", "pump"),))
    with capture_logs() as logs:
        NgsiLdDestination("twin", settings, context)
    assert not [e for e in logs if e["event"] == "ngsild_template_types_unused"]
