"""Walk a live OPC UA server and write a mapping scaffold (``bridge browse``).

Breadth-first over hierarchical references, one Browse request per level chunk (not one per
node), bounded by depth and node count, with every call under a timeout. Variables are written
as tags with ``nsu=`` node ids (never a namespace index), their data type and their engineering
unit (the standard ``EngineeringUnits`` property); each tag goes under the asset named after its
parent object. The session may be secured and authenticated like a source's (same settings,
same trust store).

A variable whose DataType is a structure gets its fields from the DataTypeDefinition attributes
(nested structures too, a few levels deep, batched like the rest): the scaffold has a tag per
scalar field (``address: {node, field}``) and lists the structures, indented, in a closing
comment.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from bridge.connectors.opcua._identity import apply_identity
from bridge.connectors.opcua._refusal import Attempt, explain
from bridge.connectors.opcua._structures import parse_field_path
from bridge.connectors.opcua.config import OpcUaSourceSettings
from bridge.connectors.opcua.convert import make_node_id
from bridge.errors import ConnectorError

__all__ = ["BrowsedVariable", "StructureField", "browse_server", "scaffold_yaml"]

_CHUNK = 100  # nodes per Browse / Read request; servers commonly allow >= 1,000
# Structures nested deeper than this are listed without their fields (and cut a cycle short).
_MAX_NESTING = 6
_LAST_BUILTIN = 29  # ns=0;i=1..29 are the built-in types: none has a DataTypeDefinition
_HIERARCHICAL = make_node_id(ObjectIds.HierarchicalReferences, 0)
_KINDS = {
    ua.NodeIdType.TwoByte: "i",
    ua.NodeIdType.FourByte: "i",
    ua.NodeIdType.Numeric: "i",
    ua.NodeIdType.String: "s",
    ua.NodeIdType.Guid: "g",
    ua.NodeIdType.ByteString: "b",
}


@dataclass(frozen=True)
class StructureField:
    """One field of a structure's DataTypeDefinition, as the server names it."""

    name: str
    data_type: str
    array: bool = False
    optional: bool = False
    fields: tuple[StructureField, ...] = ()  # of a field that is a structure itself


@dataclass
class BrowsedVariable:
    node: str  # nsu=<uri>;s=...
    path: tuple[str, ...]  # browse names from the root
    data_type: str = ""
    unit: str = ""
    node_id: ua.NodeId = field(default_factory=ua.NodeId, repr=False)
    fields: tuple[StructureField, ...] = ()  # its DataType is a structure with these fields
    array: bool = False  # its value is an array (read for structures only)


@dataclass
class _Walk:
    namespaces: list[str]
    timeout: float
    max_nodes: int
    progress: Callable[[int, int], None]
    seen: int = 0
    variables: list[BrowsedVariable] = field(default_factory=list)
    units: dict[int, ua.NodeId] = field(default_factory=dict)  # variable index -> EU property


async def browse_server(
    endpoint: str,
    *,
    root: str | None = None,
    max_depth: int = 6,
    max_nodes: int = 10_000,
    timeout_s: float = 5.0,
    progress: Callable[[int, int], None] = lambda nodes, variables: None,
    settings: OpcUaSourceSettings | None = None,
) -> list[BrowsedVariable]:
    """Variables under ``root`` (a ``/``-separated browse-name path below Objects).

    ``settings`` gives security and identity (its endpoint must be ``endpoint``); default:
    anonymous on a None channel. A failed connection raises ``ConnectorError`` naming the OPC UA
    status and what to do.
    """
    if settings is None:
        settings = OpcUaSourceSettings(endpoint=endpoint)
    elif settings.endpoint != endpoint:
        raise ValueError(f"settings are for {settings.endpoint}, not {endpoint}")
    client = Client(endpoint, timeout=timeout_s)
    client.session_timeout = 60_000  # a crashed browse must not hold a session for long
    attempt = Attempt()
    try:
        async with asyncio.timeout(timeout_s * 2):
            await apply_identity(client, settings, attempt)
        async with asyncio.timeout(timeout_s * 2):
            await client.connect()
    except Exception as exc:
        client.disconnect_socket()
        raise ConnectorError(explain(exc, settings, attempt)) from exc
    try:
        async with asyncio.timeout(timeout_s):
            namespaces: list[str] = await client.get_namespace_array()
        walk = _Walk(namespaces, timeout_s, max_nodes, progress)
        start = make_node_id(ObjectIds.ObjectsFolder, 0)
        start_path: tuple[str, ...] = ()
        for name in [p for p in (root or "").split("/") if p]:
            children = await _browse_level(client, walk, [(start, start_path)])
            match = [c for c in children if c[2].Name == name]
            if not match:
                raise LookupError(f"no child {name!r} under {'/'.join(start_path) or 'Objects'}")
            start, start_path = match[0][0], (*start_path, name)
        await _walk(client, walk, start, start_path, max_depth)
        await _read_types_and_units(client, walk)
        return walk.variables
    finally:
        try:
            async with asyncio.timeout(timeout_s):
                await client.disconnect()
        finally:
            client.disconnect_socket()


async def _browse_level(
    client: Client, walk: _Walk, parents: list[tuple[ua.NodeId, tuple[str, ...]]]
) -> list[tuple[ua.NodeId, tuple[str, ...], ua.QualifiedName, ua.NodeClass, tuple[str, ...]]]:
    """Children of every parent: (node id, path, browse name, class, parent path)."""
    found = []
    for start in range(0, len(parents), _CHUNK):
        chunk = parents[start : start + _CHUNK]
        params = ua.BrowseParameters()
        params.RequestedMaxReferencesPerNode = 1000
        params.NodesToBrowse = [_describe(node) for node, _ in chunk]
        async with asyncio.timeout(walk.timeout):
            results = await client.uaclient.browse(params)
        for (_, path), result in zip(chunk, results, strict=True):
            refs = list(result.References or [])
            point = result.ContinuationPoint
            while point:  # the server split a long child list
                next_params = ua.BrowseNextParameters()
                next_params.ContinuationPoints = [point]
                async with asyncio.timeout(walk.timeout):
                    (more,) = await client.uaclient.browse_next(next_params)
                refs.extend(more.References or [])
                point = more.ContinuationPoint
            for ref in refs:
                child = ref.NodeId.NodeId if hasattr(ref.NodeId, "NodeId") else ref.NodeId
                name = ref.BrowseName
                found.append((child, (*path, name.Name), name, ref.NodeClass, path))
    return found


def _describe(node: ua.NodeId) -> ua.BrowseDescription:
    desc = ua.BrowseDescription()
    desc.NodeId = node
    desc.BrowseDirection = ua.BrowseDirection.Forward
    desc.ReferenceTypeId = _HIERARCHICAL
    desc.IncludeSubtypes = True
    desc.NodeClassMask = int(ua.NodeClass.Object) | int(ua.NodeClass.Variable)
    desc.ResultMask = int(ua.BrowseResultMask.All)
    return desc


async def _walk(
    client: Client, walk: _Walk, start: ua.NodeId, path: tuple[str, ...], max_depth: int
) -> None:
    level = [(start, path)]
    variable_at: dict[tuple[str, ...], int] = {}  # browse path -> index in walk.variables
    for _ in range(max_depth):
        if not level or walk.seen >= walk.max_nodes:
            return
        children = await _browse_level(client, walk, level)
        level = []
        for node, child_path, name, node_class, parent_path in children:
            if walk.seen >= walk.max_nodes:
                break
            walk.seen += 1
            parent_var = variable_at.get(parent_path)
            if parent_var is not None:
                # children of a variable are its properties; only the unit is of interest
                if name.Name == "EngineeringUnits":
                    walk.units[parent_var] = node
                continue
            if node.NamespaceIndex == 0:
                continue  # the standard Server object and its diagnostics, not process data
            if node_class == ua.NodeClass.Variable:
                variable_at[child_path] = len(walk.variables)
                walk.variables.append(
                    BrowsedVariable(_nsu(node, walk.namespaces), child_path, node_id=node)
                )
            level.append((node, child_path))
        walk.progress(walk.seen, len(walk.variables))


async def _read_types_and_units(client: Client, walk: _Walk) -> None:
    variables = walk.variables
    type_ids = await _read(client, walk, [v.node_id for v in variables], AttributeIds.DataType)
    type_names = await _read(
        client, walk, [t for t in type_ids if isinstance(t, ua.NodeId)], AttributeIds.BrowseName
    )
    name_of = {
        t: n.Name
        for t, n in zip([t for t in type_ids if isinstance(t, ua.NodeId)], type_names, strict=True)
        if isinstance(n, ua.QualifiedName)
    }
    for var, type_id in zip(variables, type_ids, strict=True):
        var.data_type = name_of.get(type_id, "") if isinstance(type_id, ua.NodeId) else ""
    await _read_structures(client, walk, type_ids, name_of)
    indexes = list(walk.units)
    units = await _read(client, walk, [walk.units[i] for i in indexes], AttributeIds.Value)
    for i, eu in zip(indexes, units, strict=True):
        if isinstance(eu, ua.EUInformation) and eu.DisplayName is not None:
            variables[i].unit = eu.DisplayName.Text or ""


async def _read_structures(
    client: Client, walk: _Walk, type_ids: list[Any], known: Mapping[ua.NodeId, str]
) -> None:
    """Fields of the variables whose DataType is a structure, nested levels read in batches."""
    name_of = dict(known)  # data type -> browse name, the fields' types added
    definitions: dict[ua.NodeId, ua.StructureDefinition] = {}
    asked: set[ua.NodeId] = set()
    wanted = {t for t in type_ids if isinstance(t, ua.NodeId) and not _builtin(t)}
    for _ in range(_MAX_NESTING):
        todo = [t for t in wanted if t not in asked]
        if not todo:
            break
        asked.update(todo)
        found = await _read(client, walk, todo, AttributeIds.DataTypeDefinition)
        wanted = set()
        for type_id, definition in zip(todo, found, strict=True):
            if isinstance(definition, ua.StructureDefinition):
                definitions[type_id] = definition
                wanted.update(
                    f.DataType for f in definition.Fields or [] if not _builtin(f.DataType)
                )
        unnamed = list(
            {f.DataType for d in definitions.values() for f in d.Fields or []} - name_of.keys()
        )
        names = await _read(client, walk, unnamed, AttributeIds.BrowseName)
        name_of.update(
            (t, n.Name)
            for t, n in zip(unnamed, names, strict=True)
            if isinstance(n, ua.QualifiedName)
        )
    if not definitions:
        return

    def fields_of(type_id: ua.NodeId, depth: int) -> tuple[StructureField, ...]:
        definition = definitions.get(type_id)
        if definition is None or depth >= _MAX_NESTING:
            return ()
        return tuple(
            StructureField(
                f.Name,
                name_of.get(f.DataType, f.DataType.to_string()),
                array=f.ValueRank >= 0 or bool(f.ArrayDimensions),
                optional=bool(f.IsOptional),
                fields=fields_of(f.DataType, depth + 1),
            )
            for f in definition.Fields or []
        )

    structured = [
        (var, t) for var, t in zip(walk.variables, type_ids, strict=True) if t in definitions
    ]
    ranks = await _read(client, walk, [v.node_id for v, _ in structured], AttributeIds.ValueRank)
    for (var, type_id), rank in zip(structured, ranks, strict=True):
        var.fields = fields_of(type_id, 0)
        var.array = isinstance(rank, int) and rank >= 0


def _builtin(type_id: ua.NodeId) -> bool:
    ident = type_id.Identifier
    return type_id.NamespaceIndex == 0 and isinstance(ident, int) and ident <= _LAST_BUILTIN


async def _read(client: Client, walk: _Walk, nodes: list[ua.NodeId], attr: int) -> list[Any]:
    values: list[Any] = []
    for start in range(0, len(nodes), _CHUNK):
        params = ua.ReadParameters()
        params.NodesToRead = [
            ua.ReadValueId(NodeId=n, AttributeId=attr) for n in nodes[start : start + _CHUNK]
        ]
        async with asyncio.timeout(walk.timeout):
            results = await client.uaclient.read(params)
        values.extend(dv.Value.Value if dv.Value is not None else None for dv in results)
    return values


def _nsu(node: ua.NodeId, namespaces: list[str]) -> str:
    uri = namespaces[node.NamespaceIndex]
    kind = _KINDS[node.NodeIdType]
    ident = node.Identifier
    text = base64.b64encode(ident).decode() if isinstance(ident, bytes) else str(ident)
    return f"nsu={uri};{kind}={text}"


def _name(text: str, lower: bool) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    if lower:
        cleaned = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cleaned).lower()
    if not cleaned or not cleaned[0].isalpha():
        cleaned = ("t_" if lower else "n") + cleaned
    return cleaned


def scaffold_yaml(
    variables: list[BrowsedVariable],
    endpoint: str,
    source: str = "server",
    connection: dict[str, Any] | None = None,
) -> str:
    """A model-less mapping: one source, one asset per parent object, one tag per variable.

    ``connection``: extra keys of the source block (security, identity), written as given.
    """
    assets: dict[str, dict[str, Any]] = {}
    for var in variables:
        asset = _name(var.path[-2] if len(var.path) > 1 else "root", lower=False)
        tags = assets.setdefault(asset, {"tags": {}})["tags"]
        leaves = [] if var.array else list(_leaves(var.fields, ""))
        if not leaves:
            entry: dict[str, Any] = {"source": source, "address": var.node}
            if var.unit:
                entry["unit"] = var.unit
            entry["description"] = f"{var.data_type or 'unknown type'}; {'/'.join(var.path)}"
            tags[_unique(_name(var.path[-1], lower=True), tags)] = entry
        for path, leaf in leaves:
            tag = _unique(_name(f"{var.path[-1]}_{path.replace('.', '_')}", lower=True), tags)
            tags[tag] = {
                "source": source,
                "address": {"node": var.node, "field": path},
                "description": f"{leaf.data_type}; {'/'.join(var.path)} field {path}",
            }
    mapping = {
        "version": 1,
        "sources": {source: {"kind": "opcua", "endpoint": endpoint, **(connection or {})}},
        "assets": assets,
    }
    header = (
        "# Scaffold written by `bridge browse`: check names and units, add models and outputs.\n"
    )
    body = yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True, width=100)
    return header + body + _structures_comment(variables)


def _unique(tag: str, taken: dict[str, Any]) -> str:
    while tag in taken:
        tag += "_"
    return tag


def _leaves(
    fields: tuple[StructureField, ...], prefix: str
) -> Iterator[tuple[str, StructureField]]:
    """(field path, field) of every scalar field a tag can read; arrays need an index."""
    for f in fields:
        path = f"{prefix}.{f.name}" if prefix else f.name
        try:
            parse_field_path(path)
        except ValueError:
            continue  # a name with "." or white space cannot be written in a field path
        if f.array:
            continue
        if f.fields:
            yield from _leaves(f.fields, path)
        else:
            yield path, f


def _structures_comment(variables: list[BrowsedVariable]) -> str:
    """The structure variables with their fields indented below, as YAML comments."""
    shown = [v for v in variables if v.fields]
    if not shown:
        return ""
    lines = [
        "",
        "# Structures: a tag reads one field with `field:` (array elements as [i], e.g. Axes[0].X)",
    ]

    def add(fields: tuple[StructureField, ...], depth: int) -> None:
        for f in fields:
            marks = ("[]" if f.array else "") + (" (optional)" if f.optional else "")
            lines.append(f"# {'  ' * depth}{f.name}: {f.data_type}{marks}")
            add(f.fields, depth + 1)

    for var in shown:
        lines.append(f"# {'/'.join(var.path)}: {var.data_type}{'[]' if var.array else ''}")
        add(var.fields, 1)
    return "\n".join(lines) + "\n"
