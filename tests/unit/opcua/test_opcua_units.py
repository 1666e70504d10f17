"""EngineeringUnits of the gateway's OPC UA server: UNECE code when known, else the text."""

from __future__ import annotations

from bridge import units
from bridge.connectors.opcua.units import eu_information


def test_a_unece_unit_names_the_unece_namespace_and_code() -> None:
    eu = eu_information("°C", "urn:bridge:predictions")
    assert eu.NamespaceUri == units.UNECE_NAMESPACE
    assert eu.UnitId == 0x43454C  # "CEL", OPC UA Part 8: one byte per character
    assert eu.DisplayName.Text == "°C"
    assert eu.Description.Text == "°C (UNECE CEL)"
    assert eu_information("bar", "x").UnitId == 0x424152  # "BAR"


def test_a_unit_without_a_code_keeps_its_text() -> None:
    eu = eu_information("furlong/fortnight", "urn:bridge:predictions")
    assert (eu.NamespaceUri, eu.UnitId) == ("urn:bridge:predictions", -1)
    assert eu.DisplayName.Text == "furlong/fortnight"
