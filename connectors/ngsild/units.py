"""``unitCode`` of a Property: the UN/CEFACT Recommendation 20 common code of the mapping's unit.

The codes come from the gateway's one table (``bridge.units.unece``, which the OPC UA server's
EUInformation uses too), so a unit means the same code on every output: ``degC`` -> CEL,
``bar`` -> BAR, ``mm/s`` -> C16, ``%`` -> P1, ``m3/h`` -> MQH, ``psi`` -> PS, ``rpm`` -> RPM.
A unit without a code is sent without ``unitCode`` and logged once.
"""

from __future__ import annotations

import threading

import structlog

from bridge.units import unece

__all__ = ["UnitCodes"]

log = structlog.get_logger(__name__)


class UnitCodes:
    """Unit text -> common code (or None), looked up once per unit; thread-safe (``encode``
    may run in the store writer's thread)."""

    def __init__(self, destination: str) -> None:
        self._destination = destination
        self._codes: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def code(self, unit: str | None) -> str | None:
        if not unit:
            return None
        try:
            return self._codes[unit]
        except KeyError:
            pass
        found = unece(unit)
        code = found[0] if found is not None else None
        with self._lock:
            if unit not in self._codes and code is None:
                log.warning(
                    "ngsild_unit_without_code",
                    destination=self._destination,
                    unit=unit,
                    hint="the Property is sent without unitCode; add the unit's UN/CEFACT "
                    "Rec. 20 code to bridge.units",
                )
            self._codes[unit] = code
        return code
