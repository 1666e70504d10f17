"""One synchronous pass that writes many Value attributes of the gateway's own address space.

asyncua 2.1's fast path, ``Server.write_attribute_value``, is a coroutine per node: it awaits
``AddressSpace.write_attribute_value``, which awaits every monitored item's
``MonitoredItemService.datachange_callback``, which deep-copies the DataValue before comparing
it with the previous one (``copy.deepcopy`` of a DataValue: 30-65 µs measured on the 2-core
box, most of a 2,000-prediction batch's ~1 s when an HMI watched every Value node). None of
those awaits ever suspends unless a subscription publishes with a 0 ms interval.

:class:`BatchWriter` does the same work in one plain loop over a batch:

- stores the DataValue in the node's ``AttributeValue`` (resolved once per node id through the
  public ``AddressSpace.get``, at start for the whole namespace (``prepare``), and kept: whoever
  deletes or re-creates nodes calls ``prune`` afterwards, or a deleted node goes on taking
  values unseen),
  with asyncua's rules: a Bad status nulls the value, a variant of another type than the
  variable's is refused with ``BadTypeMismatch``;
- for every monitored item of every client subscription, keeps the DataValue as the item's
  current value **without** the deep copy (the DataValues come from
  ``bridge.connectors.opcua.encode``, are built fresh per write and never mutated afterwards),
  applies asyncua's own change/deadband checks (``_is_data_changed``/``_is_deadband_exceeded``)
  and queues the notification in the subscription the way
  ``InternalSubscription._enqueue_event`` does (queue size per item);
- collects what cannot be done synchronously: subscriptions with a publishing interval <= 0
  (publish at once) and callbacks of another kind; :meth:`BatchWriter.settle` awaits those once
  per batch, after the pass, and wakes the subscriptions that got a first notification
  (``bridge.connectors.opcua._publishing``: an idle one sends it at once).

This reaches into asyncua's private monitored-item and subscription state (pinned ``~=2.1``):
when that state is not what this module expects, the node falls back to asyncua's own coroutine
for that callback (counted in ``fallbacks``), so an asyncua upgrade costs speed, not notifications.
Re-check ``MonitoredItemService.datachange_callback`` and ``InternalSubscription._enqueue_event``
on every asyncua upgrade; tests/integration/test_opcua_server_batch.py fails if a field is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog
from asyncua import ua
from asyncua.server.address_space import AddressSpace, AttributeValue, NodeData
from asyncua.server.monitored_item_service import MonitoredItemService
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua._publishing import Publishing

__all__ = ["BatchWriter", "WriteFailure"]

log = structlog.get_logger(__name__)

_VALUE = AttributeIds.Value
_DISABLED = ua.MonitoringMode.Disabled
_STATUS_VALUE = ua.DataChangeTrigger.StatusValue
_NULL_VARIANT = ua.Variant(None, ua.VariantType.Null)
_OWN_CALLBACK = MonitoredItemService.datachange_callback
# Built-in data types are numbered like the variant types (DataType ns=0;i=1..25).
_BUILTIN_MAX = 25

WriteFailure = tuple[ua.NodeId, int]
"""A node that was not written and the status code why."""


class _Target:
    """A resolved Value attribute and the variant type a Good write must carry."""

    __slots__ = ("attval", "node", "vtype")

    def __init__(
        self, node: NodeData, attval: AttributeValue, vtype: ua.VariantType | None
    ) -> None:
        self.node = node
        self.attval = attval
        self.vtype = vtype


class BatchWriter:
    """Writes batches of ``(node id, DataValue)`` to one server's Value attributes."""

    def __init__(self, server: Server, publishing: Publishing | None = None) -> None:
        self._aspace: AddressSpace = server.iserver.aspace
        self._server = server
        self._publishing = publishing
        self._targets: dict[ua.NodeId, _Target] = {}
        self._immediate: set[Any] = set()
        self._woken: set[Any] = set()
        self._deferred: list[tuple[Callable[..., Awaitable[None]], int, ua.DataValue]] = []
        self._library: list[tuple[ua.NodeId, ua.DataValue]] = []
        self.fallbacks = 0

    def write(self, items: Iterable[tuple[ua.NodeId, ua.DataValue]]) -> list[WriteFailure]:
        """Store every value and queue its notifications, no await; returns the nodes refused.
        Call :meth:`settle` once afterwards (it awaits only what a 0 ms subscription or a
        foreign callback needs)."""
        failures: list[WriteFailure] = []
        targets = self._targets
        for nodeid, dv in items:
            try:  # one bad node must not stop the batch (a try costs nothing in 3.11)
                target = targets.get(nodeid)
                if target is None:
                    target = self._resolve(nodeid)
                    if target is None:
                        failures.append((nodeid, StatusCodes.BadNodeIdUnknown))
                        continue
                attval = target.attval
                if attval.value_callback is not None or attval.value_setter is not None:
                    # A callback or setter was installed on this node: asyncua's path honours it.
                    self._library.append((nodeid, dv))
                    continue
                status = dv.StatusCode
                if status is not None and status.value & 0x80000000:  # Bad (severity 10 or 11)
                    # As asyncua does (Part 4, 7.7.1): a Bad value is stored as null.
                    dv = ua.DataValue(
                        _NULL_VARIANT,
                        status,
                        dv.SourceTimestamp,
                        dv.ServerTimestamp,
                        dv.SourcePicoseconds,
                        dv.ServerPicoseconds,
                    )
                elif target.vtype is not None and (
                    dv.Value is None or dv.Value.VariantType != target.vtype
                ):
                    failures.append((nodeid, StatusCodes.BadTypeMismatch))
                    continue
                attval.value = dv
                callbacks = attval.datachange_callbacks
                if callbacks:
                    self._notify(callbacks, dv)
            except Exception as exc:
                log.warning("node_write_failed", node=str(nodeid), error=repr(exc))
                failures.append((nodeid, StatusCodes.BadInternalError))
        return failures

    async def settle(self) -> list[WriteFailure]:
        """Await what the last :meth:`write` left: nodes with a callback or setter (asyncua's
        own write), subscriptions that publish at once (interval <= 0), foreign callbacks."""
        failures: list[WriteFailure] = []
        library, self._library = self._library, []
        for nodeid, dv in library:
            result = await self._aspace.write_attribute_value(nodeid, _VALUE, dv)
            if not result.is_good():
                failures.append((nodeid, result.value))
        deferred, self._deferred = self._deferred, []
        for callback, handle, dv in deferred:
            try:
                await callback(handle, dv)
            except Exception as exc:  # asyncua logs and goes on; so does this
                log.warning("datachange_callback_failed", handle=handle, error=repr(exc))
        woken, self._woken = self._woken, set()
        if woken and self._publishing is not None:
            self._publishing.wake(woken)
        immediate, self._immediate = self._immediate, set()
        for isub in immediate:
            await isub._trigger_publish()
        return failures

    def prepare(self, namespace_index: int) -> int:
        """Resolve every Value attribute of the namespace now; returns how many. Called at
        start-up, before the gateway moves what start-up built out of the cyclic collector's
        reach (``gc.freeze``): resolved lazily, the ~10 targets per prediction slot would be
        young objects that every full collection walks again."""
        for nodeid in list(self._aspace.keys()):
            if nodeid.NamespaceIndex == namespace_index and nodeid not in self._targets:
                self._resolve(nodeid)
        return len(self._targets)

    def prune(self) -> int:
        """Drop what was resolved for nodes deleted (or deleted and made again) since; returns
        how many. A later write to a deleted node fails BadNodeIdUnknown; a node made again is
        resolved afresh."""
        aspace, targets = self._aspace, self._targets
        stale = [n for n, t in targets.items() if aspace.get(n) is not t.node]
        for nodeid in stale:
            del targets[nodeid]
        return len(stale)

    def _resolve(self, nodeid: ua.NodeId) -> _Target | None:
        node = self._aspace.get(nodeid)
        if node is None:
            return None
        attval = node.attributes.get(_VALUE)
        if attval is None:
            return None
        target = _Target(node, attval, _expected_type(node.attributes, attval))
        self._targets[nodeid] = target
        return target

    def _notify(self, callbacks: dict[int, Callable[..., Any]], dv: ua.DataValue) -> None:
        """MonitoredItemService.datachange_callback + InternalSubscription._enqueue_event,
        synchronous and without the deep copy."""
        for handle, callback in callbacks.items():
            service = getattr(callback, "__self__", None)
            if getattr(callback, "__func__", None) is not _OWN_CALLBACK or not isinstance(
                service, MonitoredItemService
            ):
                self._deferred.append((callback, handle, dv))
                continue
            try:
                mid = service._monitored_datachange[handle]
                mdata = service._monitored_items[mid]
                if mdata.mode == _DISABLED:
                    continue
                values = mdata.mvalue
                values.old_dvalue = values.current_dvalue
                values.current_dvalue = dv
                flt = mdata.filter
                if flt:
                    changed = service._is_data_changed(
                        values, flt.Trigger
                    ) and service._is_deadband_exceeded(values, flt)
                else:
                    changed = service._is_data_changed(values, _STATUS_VALUE)
                if not changed:
                    continue
                isub = service.isub
                queue: dict[int, list[Any]] = isub._triggered_datachanges
                event = ua.MonitoredItemNotification(mdata.client_handle, dv)
                pending = queue.get(mid)
                if pending is None:
                    queue[mid] = [event]
                    if isub.data.RevisedPublishingInterval <= 0.0:
                        self._immediate.add(isub)
                    else:
                        self._woken.add(isub)
                    continue
                size = mdata.queue_size
                if size != 0 and len(pending) >= size:
                    pending.pop(0)
                pending.append(event)
            except (AttributeError, KeyError) as exc:
                # asyncua's private state is not what this module knows: its own coroutine.
                self.fallbacks += 1
                if self.fallbacks == 1:
                    log.warning("batch_write_fallback", error=repr(exc))
                self._deferred.append((callback, handle, dv))


def _expected_type(
    attributes: dict[AttributeIds, AttributeValue], attval: AttributeValue
) -> ua.VariantType | None:
    """The variant type asyncua would require (``_is_expected_variant_type``): the type of the
    current value, else the variable's built-in DataType when the value is null; None when it
    cannot tell (then any type is taken, as asyncua does)."""
    current = attval.value
    variant = current.Value if current is not None else None
    if variant is not None and variant.VariantType != ua.VariantType.Null:
        return variant.VariantType
    dtype_av = attributes.get(AttributeIds.DataType)
    dtype = None
    if dtype_av is not None and dtype_av.value is not None and dtype_av.value.Value is not None:
        dtype = dtype_av.value.Value.Value
    if (
        isinstance(dtype, ua.NodeId)
        and dtype.NamespaceIndex == 0
        and isinstance(dtype.Identifier, int)
        and 0 < dtype.Identifier <= _BUILTIN_MAX
    ):
        return ua.VariantType(dtype.Identifier)
    return None
