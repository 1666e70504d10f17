"""Event filters whose ``OfType`` matches subtypes, as OPC UA Part 4 (7.7.3) says.

asyncua 2.1's ``WhereClauseEvaluator`` takes ``OfType T`` as "the event's type is exactly T".
HMIs filter their alarm lists on a supertype: node-opcua's ``installAlarmMonitoring`` asks for
``OfType AcknowledgeableConditionType`` and got none of the gateway's ``OffNormalAlarmType``
events, not even the RefreshStart/RefreshEnd of its ConditionRefresh. ``install`` replaces the
evaluator asyncua builds for every event item (its monitored item service looks the class up in
its module when an item is created) with one that walks the type's HasSubtype chain; the events
history (``_alarmhistory``) uses the same class. It reaches into asyncua: re-check on upgrades.
"""

from __future__ import annotations

from typing import Any

from asyncua import ua
from asyncua.server import monitored_item_service
from asyncua.server.address_space import AddressSpace
from asyncua.server.monitored_item_service import WhereClauseEvaluator
from asyncua.ua.object_ids import ObjectIds

from bridge.connectors.opcua.convert import make_node_id

__all__ = ["SubtypeWhereClause", "install"]

_HAS_SUBTYPE = make_node_id(ObjectIds.HasSubtype, 0)
# A type hierarchy deeper than this is a loop in a broken address space, not a type.
_MAX_DEPTH = 64


def supertypes(aspace: AddressSpace, type_id: ua.NodeId) -> list[ua.NodeId]:
    """``type_id`` and its supertypes, nearest first, from the inverse HasSubtype references."""
    chain = [type_id]
    current: ua.NodeId | None = type_id
    while current is not None and len(chain) < _MAX_DEPTH:
        node = aspace.get(current)
        current = None
        for ref in node.references if node is not None else ():
            if not ref.IsForward and ref.ReferenceTypeId == _HAS_SUBTYPE:
                current = ref.NodeId
                chain.append(current)
                break
    return chain


class SubtypeWhereClause(WhereClauseEvaluator):
    """asyncua's where-clause evaluator with ``OfType`` true for the type and its subtypes."""

    def __init__(self, logger: Any, aspace: AddressSpace, whereclause: ua.ContentFilter) -> None:
        super().__init__(logger, aspace, whereclause)
        self._chains: dict[ua.NodeId, frozenset[ua.NodeId]] = {}

    def _eval_el(self, index: int, event: Any) -> Any:
        el = self.elements[index]
        if el.FilterOperator != ua.FilterOperator.OfType:
            return super()._eval_el(index, event)
        wanted = self._eval_op(el.FilterOperands[0], event)
        event_type = event.EventType
        chain = self._chains.get(event_type)
        if chain is None:  # a handful of event types per item: walked once each
            chain = self._chains[event_type] = frozenset(supertypes(self._aspace, event_type))
        return wanted in chain


def install() -> None:
    """Every event item created from now on, on every asyncua server of this process, gets
    ``SubtypeWhereClause``: the standard's meaning of OfType (idempotent)."""
    monitored_item_service.WhereClauseEvaluator = SubtypeWhereClause  # type: ignore[misc]
