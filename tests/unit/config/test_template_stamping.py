from __future__ import annotations

from pathlib import Path

from bridge.config import load_mapping

_MAPPING = """
version: 1
sources:
  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
templates:
  pump:
    tags:
      speed:
        source: plant
        address: "nsu=urn:x;s={area}/P{n}.Speed{1}"
        description: "{asset} at {area} {}"
      flow: {source: plant, address: "nsu=urn:x;i=7", unit: "m3/h"}
assets:
  p1: {template: pump, vars: {n: 1, area: "{hall}"}}
  p2:
    template: pump
    vars: {n: "02", area: north}
    tags:
      flow: {source: plant, address: "nsu=urn:x;s=P2.Flow"}
"""


def test_placeholders_are_filled_and_other_braces_kept(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(_MAPPING)
    tags = load_mapping(path).tags
    assert tags["p1.speed"].address.node == "nsu=urn:x;s={hall}/P1.Speed{1}"
    assert tags["p1.speed"].description == "p1 at {hall} {}"
    assert tags["p2.speed"].address.node == "nsu=urn:x;s=north/P02.Speed{1}"
    assert tags["p1.flow"].address.node == "nsu=urn:x;i=7"
    assert tags["p1.flow"].unit == "m3/h"
    # An asset's own tag replaces the template's, in the template's place.
    assert tags["p2.flow"].address.node == "nsu=urn:x;s=P2.Flow"
    assert tags["p2.flow"].unit == ""
    assert list(load_mapping(path).assets["p2"]) == ["p2.speed", "p2.flow"]
