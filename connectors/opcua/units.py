"""The OPC UA ``EngineeringUnits`` property (EUInformation) of a unit written in the mapping.

A unit with a UNECE Recommendation 20 code (``bridge.units.unece``) is described as OPC UA
Part 8 asks: the UNECE namespace and the code as ``UnitId``, so an HMI can recognise it
without reading the text. Any other unit keeps its text, ``UnitId`` -1 and the server's own
namespace.
"""

from __future__ import annotations

from asyncua import ua

from bridge import units

__all__ = ["eu_information"]


def eu_information(unit: str, namespace: str) -> ua.EUInformation:
    known = units.unece(unit)
    if known is None:
        return ua.EUInformation(
            NamespaceUri=namespace,
            UnitId=-1,
            DisplayName=ua.LocalizedText(unit),
            Description=ua.LocalizedText(unit),
        )
    code, unit_id = known
    return ua.EUInformation(
        NamespaceUri=units.UNECE_NAMESPACE,
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(f"{unit} (UNECE {code})"),
    )
