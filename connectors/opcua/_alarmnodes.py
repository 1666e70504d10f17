"""The address-space side of the prediction alarms: one ``OffNormalAlarmType`` instance per
classifier's prediction object, and the references that make the objects event notifiers.

Layout (string node ids in the gateway's namespace, ``<p>`` = ``Predictions.<asset>.<model>``)::

    Server ─HasNotifier→ Predictions ─HasNotifier→ <asset> ─HasEventSource→ <model>
    <model> ─HasComponent→ <p>.Alarm  (and <model> ─HasCondition→ <p>.Alarm)
    <p>.Alarm: the type's mandatory children (<p>.Alarm.ActiveState, .ActiveState.Id,
               .AckedState, .Acknowledge, ...), the optional ConfirmedState (+ .Id) and Confirm,
               and in the gateway's namespace PredictionId, ModelVersion, NormalLabel.

Building it: asyncua's ``instantiate`` browses the type hierarchy for every child and took
~50 ms per alarm on the 2-core box (100 s for 2,000 assets); replaying its AddNodes items still
cost ~12 ms per alarm (asyncua builds every attribute's Variant and DataValue again for each of
the 43 nodes: +24 s on a 24 s start at 2,000 assets). So the first alarm is instantiated through
a session that records what it adds (``_Recorder``), and every other one is a copy of those
nodes as the address space holds them (``NodeData``: attributes and references, node ids
renamed), put in with the address space's public item assignment. The same nodes, browse names,
attributes, type definitions and references; this reaches into asyncua's node storage (pinned
``~=2.1``, like ``_batch``): tests/integration/test_opcua_alarms.py browses a copied alarm.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from asyncua import ua
from asyncua.common.instantiate_util import instantiate
from asyncua.common.node import Node
from asyncua.server.address_space import AttributeValue, NodeData
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.encode import node_string
from bridge.errors import ConnectorError

__all__ = ["ALARM", "NOTIFIER", "AlarmIds", "AlarmNodes", "source_name"]

ALARM = "Alarm"
# SubscribeToEvents and HistoryRead (events history of the alarms below the object).
NOTIFIER = int(ua.EventNotifierType.SubscribeToEvents | ua.EventNotifierType.HistoryRead)
_SERVER = make_node_id(ObjectIds.Server, 0)


@dataclass(frozen=True, slots=True)
class AlarmIds:
    """Node ids of one alarm and of the nodes its events name."""

    alarm: ua.NodeId  # the condition (ConditionId)
    source: ua.NodeId  # the prediction object (SourceNode)
    asset: ua.NodeId  # the asset folder
    value: ua.NodeId  # the prediction's Value (InputNode)
    normal: ua.NodeId  # NormalLabel, the variable NormalState points to
    acknowledge: ua.NodeId  # the instance's own methods
    confirm: ua.NodeId

    def child(self, path: str) -> ua.NodeId:
        """``ActiveState.Id`` -> ``<p>.Alarm.ActiveState.Id``."""
        return make_node_id(f"{_ident(self.alarm)}.{path}", self.alarm.NamespaceIndex)

    def notifiers(self, root: ua.NodeId) -> tuple[ua.NodeId, ...]:
        """Where an event of this alarm is reported: the Server object, the Predictions folder,
        the asset folder and the prediction object (asyncua delivers an event only to monitored
        items on the node it is emitted from: each notifier gets its copy)."""
        return (_SERVER, root, self.asset, self.source)


def _ident(nodeid: ua.NodeId) -> str:
    return cast(str, nodeid.Identifier)


def source_name(asset: str, model: str) -> str:
    """The alarms' SourceName: which asset, which model."""
    return f"{asset}/{model}"


class _Recorder:
    """asyncua's internal session, keeping a copy of every AddNodes item it is given."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.items: list[ua.AddNodesItem] = []

    async def add_nodes(self, items: list[ua.AddNodesItem]) -> list[ua.AddNodesResult]:
        results: list[ua.AddNodesResult] = await self._session.add_nodes(items)
        self.items.extend(items)
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


# Where a copied reference points: another node of the alarm (its id suffix), the prediction
# object (PARENT) or, unchanged, a node outside the alarm (None: the type, data types, ...).
_PARENT = "\0parent"


@dataclass(frozen=True, slots=True)
class _Node:
    suffix: str  # "" for the alarm, ".ActiveState.Id", ...
    attributes: tuple[tuple[Any, ua.DataValue], ...]  # NodeId's left out: made per copy
    references: tuple[tuple[ua.ReferenceDescription, str | None], ...]


class _Template:
    """The recorded alarm's nodes as asyncua holds them, to copy for every other alarm."""

    def __init__(
        self, prefix: str, parent: ua.NodeId, nodes: Sequence[NodeData], link: Any
    ) -> None:
        def where(target: ua.NodeId) -> str | None:
            if target == parent:
                return _PARENT
            ident: object = target.Identifier
            if target.NamespaceIndex != parent.NamespaceIndex or not isinstance(ident, str):
                return None
            if ident == prefix or ident.startswith(prefix + "."):
                return ident[len(prefix) :]
            return None

        self._nodes = tuple(
            _Node(
                where(node.nodeid) or "",
                tuple(
                    (a, cast(ua.DataValue, v.value))
                    for a, v in node.attributes.items()
                    if a != AttributeIds.NodeId
                ),
                tuple((ref, where(ref.NodeId)) for ref in node.references),
            )
            for node in nodes
        )
        self._link: ua.ReferenceDescription = link

    def clone(self, alarm: ua.NodeId, parent: ua.NodeId) -> tuple[list[NodeData], Any]:
        """Copies of the nodes for ``alarm``, below ``parent``, and the reference from
        ``parent`` to the alarm. Each node gets its own NodeData and AttributeValues (asyncua
        writes a value by replacing ``AttributeValue.value``, and keeps its monitored items'
        callbacks there); the DataValues themselves, never changed in place, are shared."""
        prefix, ns = _ident(alarm), alarm.NamespaceIndex
        ids = {n.suffix: make_node_id(prefix + n.suffix, ns) for n in self._nodes}
        ids[_PARENT] = parent
        out = []
        for node in self._nodes:
            nodeid = ids[node.suffix]
            copied = NodeData(nodeid)
            attributes = copied.attributes
            attributes[AttributeIds.NodeId] = AttributeValue(
                ua.DataValue(ua.Variant(nodeid, ua.VariantType.NodeId))
            )
            for attribute, dv in node.attributes:
                attributes[attribute] = AttributeValue(dv)
            refs = copied.references
            for ref, target in node.references:
                if target is None:
                    refs.append(ref)
                else:
                    moved = copy.copy(ref)
                    moved.NodeId = ids[target]
                    refs.append(moved)
            out.append(copied)
        link = copy.copy(self._link)
        link.NodeId = alarm
        return out, link


def _argument(name: str, datatype: int, description: str) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = make_node_id(datatype, 0)
    arg.ValueRank = -1
    arg.Description = ua.LocalizedText(description)
    return arg


def _confirm_items(alarm: ua.NodeId) -> list[ua.AddNodesItem]:
    """The optional Confirm method (Part 9, 5.7.4: EventId, Comment) with string node ids:
    asyncua's ``add_method`` numbers its InputArguments, which a copy could not rename."""
    ns = alarm.NamespaceIndex
    method = make_node_id(f"{_ident(alarm)}.Confirm", ns)
    mattrs = ua.MethodAttributes()
    mattrs.DisplayName = ua.LocalizedText("Confirm")
    mattrs.Description = ua.LocalizedText("Confirm")
    mattrs.Executable = mattrs.UserExecutable = True
    vattrs = ua.VariableAttributes()
    vattrs.DisplayName = ua.LocalizedText("InputArguments")
    vattrs.Description = ua.LocalizedText("InputArguments")
    vattrs.DataType = make_node_id(ObjectIds.Argument, 0)
    vattrs.ValueRank = ua.ValueRank.OneDimension
    vattrs.ArrayDimensions = [0]
    vattrs.AccessLevel = vattrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    args = [
        _argument("EventId", ObjectIds.ByteString, "EventId of the event being confirmed"),
        _argument("Comment", ObjectIds.LocalizedText, "Comment applied to the condition"),
    ]
    vattrs.Value = ua.Variant(args, ua.VariantType.ExtensionObject)
    return [
        ua.AddNodesItem(
            ParentNodeId=alarm,
            ReferenceTypeId=make_node_id(ObjectIds.HasComponent, 0),
            RequestedNewNodeId=method,
            BrowseName=ua.QualifiedName("Confirm", 0),
            NodeClass=ua.NodeClass.Method,
            NodeAttributes=mattrs,
        ),
        ua.AddNodesItem(
            ParentNodeId=method,
            ReferenceTypeId=make_node_id(ObjectIds.HasProperty, 0),
            RequestedNewNodeId=make_node_id(f"{_ident(alarm)}.Confirm.InputArguments", ns),
            BrowseName=ua.QualifiedName("InputArguments", 0),
            NodeClass=ua.NodeClass.Variable,
            NodeAttributes=vattrs,
            TypeDefinition=make_node_id(ObjectIds.PropertyType, 0),
        ),
    ]


def _confirmed_state(
    recorded: Sequence[ua.AddNodesItem], alarm: ua.NodeId
) -> list[ua.AddNodesItem]:
    """The optional ConfirmedState (and its Id): a TwoStateVariable like the mandatory
    AckedState, so made from AckedState's recorded items with the name changed."""
    acked = f"{_ident(alarm)}.AckedState"
    out = []
    for item in recorded:
        ident = item.RequestedNewNodeId.Identifier
        if ident not in (acked, f"{acked}.Id"):
            continue
        clone = copy.copy(item)
        clone.RequestedNewNodeId = make_node_id(
            cast(str, ident).replace(".AckedState", ".ConfirmedState"), alarm.NamespaceIndex
        )
        if ident == acked:
            attrs = copy.copy(item.NodeAttributes)
            attrs.DisplayName = attrs.Description = ua.LocalizedText("ConfirmedState")
            clone.NodeAttributes = attrs
            clone.BrowseName = ua.QualifiedName("ConfirmedState", 0)
        else:
            clone.ParentNodeId = make_node_id(
                f"{_ident(alarm)}.ConfirmedState", alarm.NamespaceIndex
            )
        out.append(clone)
    return out


_TYPEDEF = make_node_id(ObjectIds.HasTypeDefinition, 0)


def _value(attribute: AttributeValue | None) -> Any:
    dv = attribute.value if attribute is not None else None
    return dv.Value.Value if dv is not None and dv.Value is not None else None


class AlarmNodes:
    """Creates (and forgets) the alarm nodes of one server."""

    def __init__(self, server: Server, ns: int, nid: Callable[[str], ua.NodeId]) -> None:
        self._server = server
        self._ns = ns
        self._nid = nid
        self._template: _Template | None = None
        self._notifying: set[ua.NodeId] = set()  # folders and objects made notifiers
        self._waiting: list[ua.NodeId] = []  # asset folders to link (see ``flush``)
        self._started = False
        self.root = nid("Predictions")

    async def prepare(self) -> None:
        """The Server object and the Predictions folder report the alarms' events."""
        server_node = self._server.get_node(_SERVER)
        current = await server_node.read_attribute(AttributeIds.EventNotifier)
        bits = int(current.Value.Value or 0) if current.Value is not None else 0
        await self._notifier(_SERVER, bits | NOTIFIER)
        self._link(_SERVER, ObjectIds.HasNotifier, self.root)
        await self._notifier(self.root, NOTIFIER)

    def ids(self, asset: str, model: str) -> AlarmIds:
        """The node ids of the alarm of ``asset``/``model`` (made or not)."""
        ns = self._ns
        alarm = self._nid(node_string(asset, model, ALARM))
        prefix = _ident(alarm)
        return AlarmIds(
            alarm=alarm,
            source=self._nid(node_string(asset, model)),
            asset=self._nid(f"Predictions.{asset}"),
            value=self._nid(node_string(asset, model, "Value")),
            normal=make_node_id(f"{prefix}.NormalLabel", ns),
            acknowledge=make_node_id(f"{prefix}.Acknowledge", ns),
            confirm=make_node_id(f"{prefix}.Confirm", ns),
        )

    async def add(self, asset: str, model: str) -> AlarmIds:
        """The alarm of ``asset``/``model`` (its prediction object exists already)."""
        ids = self.ids(asset, model)
        source, asset_id, alarm = ids.source, ids.asset, ids.alarm
        if self._template is None:
            self._template = await self._record(source, alarm)
        else:
            self._copy(self._template, source, alarm)
        self._link(source, ObjectIds.HasCondition, alarm)
        if source not in self._notifying:
            self._link(asset_id, ObjectIds.HasEventSource, source)
            await self._notifier(source, NOTIFIER)
        if asset_id not in self._notifying:
            self._waiting.append(asset_id)
            await self._notifier(asset_id, NOTIFIER)
            if self._started:
                self.flush()
        self._notifying |= {asset_id, source}
        return ids

    def flush(self) -> None:
        """The Predictions folder's HasNotifier references to the asset folders added since.
        Held back while the server is built: the folder's references are scanned by asyncua
        for every asset folder added to it, and these would double that list."""
        self._started = True
        for asset_id in self._waiting:
            self._link(self.root, ObjectIds.HasNotifier, asset_id)
        self._waiting.clear()

    def _link(self, source: ua.NodeId, kind: int, target: ua.NodeId) -> None:
        """A forward reference, appended to the source's list as asyncua's AddReferences
        would make it, without its scan for a duplicate (O(references) per call: quadratic
        over 2,000 asset folders); ``_notifying`` keeps each reference added once."""
        aspace = self._server.iserver.aspace
        node, to = aspace.get(source), aspace.get(target)
        if node is None or to is None:
            raise ConnectorError(f"cannot link {source.to_string()} to {target.to_string()}")
        attributes = to.attributes
        ref = ua.ReferenceDescription()
        ref.ReferenceTypeId = make_node_id(kind, 0)
        ref.IsForward = True
        ref.NodeId = target
        ref.NodeClass = _value(attributes.get(AttributeIds.NodeClass))
        ref.BrowseName = _value(attributes.get(AttributeIds.BrowseName))
        ref.DisplayName = _value(attributes.get(AttributeIds.DisplayName))
        ref.TypeDefinition = next(
            (r.NodeId for r in to.references if r.IsForward and r.ReferenceTypeId == _TYPEDEF),
            ua.NodeId(),
        )
        node.references.append(ref)

    def _copy(self, template: _Template, source: ua.NodeId, alarm: ua.NodeId) -> None:
        aspace = self._server.iserver.aspace
        parent = aspace.get(source)
        if parent is None:
            raise ConnectorError(f"cannot add {alarm.to_string()}: no {source.to_string()}")
        nodes, link = template.clone(alarm, source)
        if any(node.nodeid in aspace for node in nodes):
            raise ConnectorError(f"cannot add {alarm.to_string()}: its nodes exist already")
        for node in nodes:
            aspace[node.nodeid] = node
        parent.references.append(link)

    def forget(self, asset: str, model: str, asset_gone: bool) -> None:
        """The prediction object (and the alarm under it) was deleted, maybe its asset too."""
        self._notifying.discard(self._nid(node_string(asset, model)))
        if asset_gone:
            self._notifying.discard(self._nid(f"Predictions.{asset}"))

    async def _record(self, source: ua.NodeId, alarm: ua.NodeId) -> _Template:
        ns = self._ns
        recorder = _Recorder(self._server.iserver.isession)
        parent = Node(cast(Any, recorder), source)
        alarm_type = Node(cast(Any, recorder), make_node_id(ObjectIds.OffNormalAlarmType, 0))
        await instantiate(
            parent,
            alarm_type,
            nodeid=alarm,
            bname=ua.QualifiedName(ALARM, ns),
            instantiate_optional=False,
        )
        node = Node(cast(Any, recorder), alarm)
        optional = _confirmed_state(recorder.items, alarm) + _confirm_items(alarm)
        for result in await recorder.add_nodes(optional):
            result.StatusCode.check()
        for name, vtype in _OWN_PROPERTIES:
            await node.add_property(
                make_node_id(f"{_ident(alarm)}.{name}", ns),
                ua.QualifiedName(name, ns),
                ua.get_default_value(vtype),
                vtype,
            )
        aspace = self._server.iserver.aspace
        nodes = tuple(aspace[item.RequestedNewNodeId] for item in recorder.items)
        link = next(r for r in aspace[source].references if r.IsForward and r.NodeId == alarm)
        return _Template(_ident(alarm), source, nodes, link)

    async def _notifier(self, node: ua.NodeId, bits: int) -> None:
        dv = ua.DataValue(ua.Variant(bits, ua.VariantType.Byte))
        # The address space's own call: the server's wrapper drops the StatusCode.
        aspace = self._server.iserver.aspace
        (await aspace.write_attribute_value(node, AttributeIds.EventNotifier, dv)).check()


# Properties of the alarm in the gateway's namespace: the alert's raising prediction and its
# model version (also event fields a client selects by browse name), and the normal label
# (the variable NormalState points to).
_OWN_PROPERTIES = (
    ("PredictionId", ua.VariantType.String),
    ("ModelVersion", ua.VariantType.String),
    ("NormalLabel", ua.VariantType.String),
)
