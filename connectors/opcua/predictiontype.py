"""``PredictionType``: the ObjectType every prediction object of the HMI server is an instance of.

An HMI templates one faceplate on the type and binds it to any asset's object by browse name
(``Value``, ``Score``, ...): every instance has the same children, with the same data types,
type definitions and units, under the node ids the server has always used::

    nsu=<namespace>;s=Types.PredictionType                  the ObjectType (BaseObjectType subtype)
    nsu=<namespace>;s=Types.PredictionType.Score.EURange    an instance declaration's property
    nsu=<namespace>;s=Predictions.<asset>.<model>           an instance (HasTypeDefinition)
    nsu=<namespace>;s=Predictions.<asset>.<model>.Score     its child: <object id>.<BrowseName>

Instances are not made with asyncua's ``instantiate``: it reads the type back node by node
and adds each child in a call of its own (10.9 ms of CPU per object, against 1.9 ms for the same
nodes in one AddNodes call: ``python -m bench.opcua_start``), and it copies the declarations'
attributes, while an instance needs its own DataType for ``Value`` (String for a classifier,
Double for a regressor) and its own unit. ``instance_nodes`` gives the AddNodes items of one
object; Part 3 lets instances be made any way as long as they carry what the type declares.
``tests/integration/test_opcua_information_model.py`` checks each instance against the
declarations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from bridge.connectors.opcua._alarmnodes import ALARM
from bridge.connectors.opcua._feedback import FEEDBACK_METHODS
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.encode import FIELDS
from bridge.connectors.opcua.units import eu_information
from bridge.errors import ConnectorError

__all__ = [
    "DECLARATIONS",
    "TYPE_ID",
    "Declaration",
    "add_nodes",
    "add_prediction_type",
    "folder_node",
    "instance_nodes",
]

TYPE_ID = "Types.PredictionType"
TYPE_NAME = "PredictionType"

_MANDATORY = ObjectIds.ModellingRule_Mandatory
_OPTIONAL = ObjectIds.ModellingRule_Optional
_DATA_TYPES = {
    ua.VariantType.Double: ObjectIds.Double,
    ua.VariantType.String: ObjectIds.String,
    ua.VariantType.DateTime: ObjectIds.DateTime,
}
_READ = ua.AccessLevel.CurrentRead.mask
_METHOD = ua.NodeClass.Method


@dataclass(frozen=True, slots=True)
class Declaration:
    """One variable of ``PredictionType`` (every one is Mandatory)."""

    name: str
    data_type: int  # namespace 0; Value's is abstract on the type, concrete on each instance
    type_definition: int
    meaning: str
    eu_range: tuple[float, float] | None = None
    # A fixed unit ("s"); "" when the instance's unit comes from the mapping (Value: the
    # model's `outputs.unit`, EngineeringUnits Optional); None when it has none.
    unit: str | None = None


_VARIABLE = ObjectIds.BaseDataVariableType


def _decl(
    name: str,
    type_definition: int,
    meaning: str,
    eu_range: tuple[float, float] | None = None,
    unit: str | None = None,
) -> Declaration:
    data_type = ObjectIds.BaseDataType if name == "Value" else _DATA_TYPES[FIELDS[name]]
    return Declaration(name, data_type, type_definition, meaning, eu_range, unit)


# In the order of encode.FIELDS, the order the server adds and writes them in.
DECLARATIONS: tuple[Declaration, ...] = (
    _decl(
        "Value",
        _VARIABLE,
        "The prediction: the class label (String) of a classifier or the value (Double) of a "
        "regressor. Its StatusCode is the prediction's quality.",
        unit="",
    ),
    _decl(
        "Score",
        ObjectIds.AnalogItemType,
        "Confidence of Value, 0..1 (the probability of the predicted class).",
        eu_range=(0.0, 1.0),
    ),
    _decl("ModelName", _VARIABLE, "Name of the model in the mapping."),
    _decl("ModelVersion", _VARIABLE, "Version of the model that made the prediction."),
    _decl("ModelSha256", _VARIABLE, "SHA-256 of the ONNX file that made the prediction (hex)."),
    _decl("Quality", _VARIABLE, "Quality of the prediction: Good, Uncertain or Bad."),
    _decl("Timestamp", _VARIABLE, "When the prediction was made (UTC)."),
    _decl(
        "InputAge",
        ObjectIds.AnalogUnitType,
        "Age of the oldest input when the model ran.",
        unit="s",
    ),
    _decl(
        "Explanation",
        _VARIABLE,
        "One line for operators: the inputs that contributed most, e.g. "
        "'bearing temperature +18 °C above normal'.",
    ),
    # PSI is 0 for the training distribution and unbounded above in theory (~9.2 at most with
    # bridge.drift.psi's floors): EURange is the display range Part 8 describes (0.1 slight,
    # 0.25 significant drift), not a clamp.
    _decl(
        "DriftScore",
        ObjectIds.AnalogItemType,
        "The asset's drift score: the largest population stability index (PSI) of the model "
        "inputs against the training data; 0.1 slight, 0.25 significant.",
        eu_range=(0.0, 1.0),
    ),
    _decl(
        "PredictionId",
        _VARIABLE,
        "Id of the prediction shown: what Acknowledge, Confirm and Reject take.",
    ),
)

_METHOD_MEANINGS = {
    "Acknowledge": "The operator has seen the prediction.",
    "Confirm": "The operator judges the prediction right.",
    "Reject": "The operator judges the prediction wrong (an override).",
}
_INPUTS = (
    ("PredictionId", "Id of the prediction the operator answers"),
    ("Comment", "Free text (may be empty)"),
)
_OUTPUTS = (("PredictionId", "Id of the prediction the feedback is stored for"),)


def _nid(identifier: str, ns: int) -> ua.NodeId:
    return make_node_id(identifier, ns, ua.NodeIdType.String)


def _ns0(identifier: int) -> ua.NodeId:
    return make_node_id(identifier, 0)


def _text(text: str) -> ua.LocalizedText:
    return ua.LocalizedText(cast(Any, text))


def _item(
    nodeid: ua.NodeId,
    name: ua.QualifiedName,
    node_class: ua.NodeClass,
    parent: ua.NodeId,
    reference: int,
    type_definition: ua.NodeId | None,
    attributes: Any,
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = name
    item.NodeClass = node_class
    item.ParentNodeId = parent
    item.ReferenceTypeId = _ns0(reference)
    if type_definition is not None:
        item.TypeDefinition = type_definition
    item.NodeAttributes = attributes
    return item


def _variable(
    nodeid: ua.NodeId,
    name: ua.QualifiedName,
    parent: ua.NodeId,
    *,
    data_type: int,
    value: ua.Variant,
    description: str,
    prop: bool = False,
    type_definition: int = ObjectIds.BaseDataVariableType,
    value_rank: int = ua.ValueRank.Scalar,
    dimensions: list[int] | None = None,
) -> ua.AddNodesItem:
    attrs = ua.VariableAttributes()
    attrs.DisplayName = _text(name.Name)
    attrs.Description = _text(description)
    attrs.DataType = _ns0(data_type)
    attrs.Value = value
    attrs.ValueRank = value_rank
    attrs.ArrayDimensions = cast(Any, dimensions)
    attrs.AccessLevel = attrs.UserAccessLevel = _READ
    attrs.WriteMask = attrs.UserWriteMask = 0
    if prop:
        return _item(
            nodeid,
            name,
            ua.NodeClass.Variable,
            parent,
            ObjectIds.HasProperty,
            _ns0(ObjectIds.PropertyType),
            attrs,
        )
    return _item(
        nodeid,
        name,
        ua.NodeClass.Variable,
        parent,
        ObjectIds.HasComponent,
        _ns0(type_definition),
        attrs,
    )


def _properties(
    base: str, ns: int, decl: Declaration, unit: str | None, namespace: str
) -> list[ua.AddNodesItem]:
    """EURange and EngineeringUnits of the variable ``base`` (BrowseNames in namespace 0, as
    Part 8 defines them and HMIs look them up)."""
    variable = _nid(base, ns)
    out = []
    if decl.eu_range is not None:
        low, high = decl.eu_range
        out.append(
            _variable(
                _nid(f"{base}.EURange", ns),
                ua.QualifiedName("EURange", 0),
                variable,
                data_type=ObjectIds.Range,
                value=ua.Variant(ua.Range(Low=low, High=high)),
                description="Display range of the value (OPC UA Part 8).",
                prop=True,
            )
        )
    if unit:
        out.append(
            _variable(
                _nid(f"{base}.EngineeringUnits", ns),
                ua.QualifiedName("EngineeringUnits", 0),
                variable,
                data_type=ObjectIds.EUInformation,
                value=ua.Variant(eu_information(unit, namespace)),
                description="Unit of the value (UNECE code where it has one).",
                prop=True,
            )
        )
    return out


def instance_nodes(
    parent: ua.NodeId,
    identifier: str,
    ns: int,
    model: str,
    value_type: ua.VariantType,
    unit: str,
    namespace: str,
) -> list[ua.AddNodesItem]:
    """AddNodes items of one prediction object (string id ``identifier`` in namespace
    ``ns``, BrowseName ``model``, in ``parent``, a folder) and its variables with their
    properties; children's ids are ``<identifier>.<BrowseName>``. ``value_type``: Value's
    DataType; ``unit``: Value's unit (the model's `outputs.unit`, "" for none)."""
    object_id = _nid(identifier, ns)
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = attrs.Description = _text(model)
    attrs.EventNotifier = 0
    attrs.WriteMask = attrs.UserWriteMask = 0
    items = [
        _item(
            object_id,
            ua.QualifiedName(model, ns),
            ua.NodeClass.Object,
            parent,
            ObjectIds.Organizes,
            _nid(TYPE_ID, ns),
            attrs,
        )
    ]
    for decl in DECLARATIONS:
        child = f"{identifier}.{decl.name}"
        data_type = _DATA_TYPES[value_type] if decl.name == "Value" else decl.data_type
        items.append(
            _variable(
                _nid(child, ns),
                ua.QualifiedName(decl.name, ns),
                object_id,
                data_type=data_type,
                value=ua.Variant(),  # the server writes the initial value with its status
                description=decl.meaning,
                type_definition=decl.type_definition,
            )
        )
        items += _properties(child, ns, decl, unit if decl.unit == "" else decl.unit, namespace)
    return items


def folder_node(parent: ua.NodeId, nodeid: ua.NodeId, name: str) -> ua.AddNodesItem:
    """A FolderType object organized by ``parent`` (an asset's folder under Predictions)."""
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = attrs.Description = _text(name)
    attrs.EventNotifier = 0
    attrs.WriteMask = attrs.UserWriteMask = 0
    return _item(
        nodeid,
        ua.QualifiedName(name, nodeid.NamespaceIndex),
        ua.NodeClass.Object,
        parent,
        ObjectIds.Organizes,
        _ns0(ObjectIds.FolderType),
        attrs,
    )


async def add_nodes(server: Server, items: Sequence[ua.AddNodesItem]) -> None:
    """Add ``items`` in one call (in order: a parent before its children); the first refusal
    raises with the node it concerns."""
    results = await server.iserver.isession.add_nodes(list(items))
    for item, result in zip(items, results, strict=True):
        if not result.StatusCode.is_good():
            raise ConnectorError(
                f"cannot add node {item.RequestedNewNodeId.to_string()}: {result.StatusCode.name}"
            )


def _arguments(args: Sequence[tuple[str, str]]) -> ua.Variant:
    out = []
    for name, description in args:
        arg = ua.Argument()
        arg.Name = name
        arg.DataType = _ns0(ObjectIds.String)
        arg.ValueRank = ua.ValueRank.Scalar
        arg.Description = _text(description)
        out.append(arg)
    return ua.Variant(out, ua.VariantType.ExtensionObject)


def _method_nodes(type_id: ua.NodeId) -> tuple[list[ua.AddNodesItem], list[ua.NodeId]]:
    """The feedback methods as Optional declarations (present when the gateway stores
    feedback, i.e. it has a store: always under `bridge run`), with their arguments."""
    ns = type_id.NamespaceIndex
    items: list[ua.AddNodesItem] = []
    mandatory: list[ua.NodeId] = []
    for method in FEEDBACK_METHODS:
        nodeid = _nid(f"{TYPE_ID}.{method}", ns)
        attrs = ua.MethodAttributes()
        attrs.DisplayName = _text(method)
        attrs.Description = _text(f"{_METHOD_MEANINGS[method]} Operator role only.")
        attrs.Executable = attrs.UserExecutable = True
        attrs.WriteMask = attrs.UserWriteMask = 0
        items.append(
            _item(
                nodeid,
                ua.QualifiedName(method, ns),
                ua.NodeClass.Method,
                type_id,
                ObjectIds.HasComponent,
                None,
                attrs,
            )
        )
        for prop, args in (("InputArguments", _INPUTS), ("OutputArguments", _OUTPUTS)):
            prop_id = _nid(f"{TYPE_ID}.{method}.{prop}", ns)
            items.append(
                _variable(
                    prop_id,
                    ua.QualifiedName(prop, 0),
                    nodeid,
                    data_type=ObjectIds.Argument,
                    value=_arguments(args),
                    description=prop,
                    prop=True,
                    value_rank=ua.ValueRank.OneDimension,
                    dimensions=[len(args)],
                )
            )
            mandatory.append(prop_id)
    return items, mandatory


def _alarm_node(type_id: ua.NodeId) -> ua.AddNodesItem:
    """The off-normal alarm a classifier's object has (``_alarmnodes``): Optional, declared
    by its type alone (the children come from OffNormalAlarmType)."""
    ns = type_id.NamespaceIndex
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = _text(ALARM)
    attrs.Description = _text(
        "Off-normal alarm of a classifier: active while the label is not the normal one."
    )
    attrs.EventNotifier = 0
    attrs.WriteMask = attrs.UserWriteMask = 0
    return _item(
        _nid(f"{TYPE_ID}.{ALARM}", ns),
        ua.QualifiedName(ALARM, ns),
        ua.NodeClass.Object,
        type_id,
        ObjectIds.HasComponent,
        _ns0(ObjectIds.OffNormalAlarmType),
        attrs,
    )


async def add_prediction_type(server: Server, ns: int, namespace: str) -> ua.NodeId:
    """Add ``PredictionType`` under BaseObjectType, with its declarations and their
    ModellingRules; returns its node id."""
    type_id = _nid(TYPE_ID, ns)
    attrs = ua.ObjectTypeAttributes()
    attrs.DisplayName = _text(TYPE_NAME)
    attrs.Description = _text(
        "A model's prediction for one asset, with the model that made it, its quality, "
        "explanation and drift score: one faceplate serves every asset."
    )
    attrs.IsAbstract = False
    attrs.WriteMask = attrs.UserWriteMask = 0
    items = [
        _item(
            type_id,
            ua.QualifiedName(TYPE_NAME, ns),
            ua.NodeClass.ObjectType,
            _ns0(ObjectIds.BaseObjectType),
            ObjectIds.HasSubtype,
            None,
            attrs,
        )
    ]
    rules: list[tuple[ua.NodeId, int]] = []
    for decl in DECLARATIONS:
        declaration = f"{TYPE_ID}.{decl.name}"
        nodeid = _nid(declaration, ns)
        items.append(
            _variable(
                nodeid,
                ua.QualifiedName(decl.name, ns),
                type_id,
                data_type=decl.data_type,
                value=ua.Variant(),
                description=decl.meaning,
                type_definition=decl.type_definition,
            )
        )
        rules.append((nodeid, _MANDATORY))
        props = _properties(declaration, ns, decl, decl.unit, namespace)
        if decl.unit == "":  # the model's unit: the type only says an instance may have one
            props.append(
                _variable(
                    _nid(f"{declaration}.EngineeringUnits", ns),
                    ua.QualifiedName("EngineeringUnits", 0),
                    nodeid,
                    data_type=ObjectIds.EUInformation,
                    value=ua.Variant(),
                    description="Unit of the value, when the model's outputs.unit is set.",
                    prop=True,
                )
            )
        for prop in props:
            optional = decl.unit == "" and prop.BrowseName.Name == "EngineeringUnits"
            rules.append((prop.RequestedNewNodeId, _OPTIONAL if optional else _MANDATORY))
        items += props
    methods, arguments = _method_nodes(type_id)
    items += methods
    rules += [(m.RequestedNewNodeId, _OPTIONAL) for m in methods if m.NodeClass == _METHOD]
    rules += [(a, _MANDATORY) for a in arguments]
    alarm = _alarm_node(type_id)
    items.append(alarm)
    rules.append((alarm.RequestedNewNodeId, _OPTIONAL))
    await add_nodes(server, items)
    refs = []
    for nodeid, rule in rules:
        ref = ua.AddReferencesItem()
        ref.SourceNodeId = nodeid
        ref.ReferenceTypeId = _ns0(ObjectIds.HasModellingRule)
        ref.TargetNodeId = _ns0(rule)
        ref.TargetNodeClass = ua.NodeClass.Object
        ref.IsForward = True
        refs.append(ref)
    for status in await server.iserver.isession.add_references(refs):
        status.check()
    return type_id
