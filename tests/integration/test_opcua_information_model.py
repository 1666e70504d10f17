"""The HMI server's information model (docs/opcua-information-model.md) against a real asyncua
client: every prediction object is a ``PredictionType``, the type's declarations are what the
documentation's table says, the instances carry them under the node ids the server has always
used, units and ranges read back; the checked-in NodeSet2 file is a fresh export of the demo
mapping's server and re-imports into a fresh asyncua server.

The server has the feedback, history and alarm services ``bridge run`` gives it, on a real
SQLite store (the address space does not depend on the store's backend).
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import pytest_asyncio
from asyncua import Client, Server, ua
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds
from stores import temp_store
from support import free_port

from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua.cli import opcua
from bridge.connectors.opcua.nodeset import canonical
from bridge.runtime.alarms import StoreAlarms
from bridge.runtime.insight_wiring import StoreFeedback
from bridge.store.alerts import AlertRepository
from bridge.store.db import Store
from bridge.store.hmihistory import StoreHmiHistory
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.types import PredictionSlot, SinkContext

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "opcua-information-model.md"
NODESET = ROOT / "docs" / "opcua" / "bridge-predictions.NodeSet2.xml"
DEMO = ROOT / "mappings" / "demo.yaml"
REGENERATE = "bridge opcua nodeset mappings/demo.yaml -o docs/opcua/bridge-predictions.NodeSet2.xml"
NS = "urn:test:model"
TYPE = "Types.PredictionType"
SLOTS = (
    PredictionSlot("P1", "bearing", "1.0.0", "a" * 64, labels=("ok", "fault")),
    PredictionSlot("P1", "rul", "2.0.0", "b" * 64, unit="h"),  # UNECE HUR
    PredictionSlot("P2", "rul", "2.0.0", "b" * 64),  # no unit: no Value/EngineeringUnits
)
CURRENT_READ = ua.AccessLevel.CurrentRead.mask
HISTORY_READ = ua.AccessLevel.HistoryRead.mask
RULES = {
    "Mandatory": ObjectIds.ModellingRule_Mandatory,
    "Optional": ObjectIds.ModellingRule_Optional,
}

# The async tests share the module's server (asyncua's init takes seconds).
in_module_loop = pytest.mark.asyncio(loop_scope="module")


# --- what the documentation says ----------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One row of the documentation's PredictionType table."""

    name: str
    node_id: str
    data_type: str
    value_rank: int
    type_definition: int
    rule: int
    access: int
    units: str


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(heading: str, first_column: str) -> list[list[str]]:
    """The rows of the first table after ``heading`` whose header starts with
    ``first_column``."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    header = next(i for i in range(start, len(lines)) if lines[i].startswith(f"| {first_column} |"))
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def _access(text: str) -> int:
    names = {"CurrentRead": CURRENT_READ, "HistoryRead": HISTORY_READ}
    return sum(names[part.strip()] for part in text.split(","))


def documented_variables() -> list[Row]:
    rows = []
    for cells in _table("## `PredictionType`", "BrowseName"):
        name, node_id, data_type, rank, type_def, rule, access, units = cells[:8]
        rows.append(
            Row(
                name.strip("`"),
                node_id.strip("`"),
                data_type.split()[0],
                {"Scalar": ua.ValueRank.Scalar}[rank],
                getattr(ObjectIds, type_def),
                RULES[rule],
                _access(access),
                units,
            )
        )
    return rows


# --- the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with temp_store("sqlite", tmp_path_factory.mktemp("model")) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(store: Store) -> AsyncIterator[PredictionServer]:
    """Built as bridge.runtime.outputs builds it: feedback, history and alarms on the store."""
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        namespace=NS,
        allow_anonymous=True,
        security_policies=["None"],
    )
    context = SinkContext(
        "gw1",
        SLOTS,
        feedback=StoreFeedback(LabelRepository(store, "gw1"), LineageRepository(store)),
        history=StoreHmiHistory(store, 5.0),
        alarms=StoreAlarms(AlertRepository(store, 5.0, gateway="gw1"), OutboxRepository(store)),
    )
    sink = PredictionServer("hmi", settings, context)
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(server: PredictionServer) -> AsyncIterator[Client]:
    c = Client(server._settings.endpoint, timeout=4)
    await c.connect()
    try:
        yield c
    finally:
        await c.disconnect()


async def _ns(client: Client) -> int:
    return int(await client.get_namespace_index(NS))


def _id(node: Node) -> Any:
    return node.nodeid.Identifier


async def _children(node: Node, refs: int) -> dict[str, Node]:
    found = await node.get_children(refs=refs)
    return {(await n.read_browse_name()).Name: n for n in found}


async def _rule(node: Node) -> int | None:
    rules = await node.get_referenced_nodes(refs=ObjectIds.HasModellingRule)
    return rules[0].nodeid.Identifier if rules else None


async def _type_definition(node: Node) -> ua.NodeId:
    found = await node.read_type_definition()
    assert found is not None, node
    return found


async def _objects(client: Client) -> dict[tuple[str, str], Node]:
    ns = await _ns(client)
    root = await client.nodes.objects.get_child(f"{ns}:Predictions")
    out = {}
    for asset in await root.get_children(refs=ObjectIds.Organizes):
        for obj in await asset.get_children(refs=ObjectIds.Organizes):
            asset_name = (await asset.read_browse_name()).Name
            out[(asset_name, (await obj.read_browse_name()).Name)] = obj
    return out


# --- the type and its instances -----------------------------------------------------------


@in_module_loop
async def test_every_prediction_object_is_a_prediction_type(client: Client) -> None:
    ns = await _ns(client)
    base = client.get_node(ua.NodeId(ObjectIds.BaseObjectType))
    ptype = await base.get_child(f"{ns}:PredictionType")
    assert ptype.nodeid == ua.NodeId(TYPE, ns)
    assert await ptype.read_node_class() == ua.NodeClass.ObjectType
    abstract = await ptype.read_attribute(ua.AttributeIds.IsAbstract)
    assert abstract.Value.Value is False
    objects = await _objects(client)
    assert set(objects) == {(s.asset, s.model) for s in SLOTS}
    for (asset, model), obj in objects.items():
        assert _id(obj) == f"Predictions.{asset}.{model}"
        assert await _type_definition(obj) == ptype.nodeid


@in_module_loop
async def test_type_declarations_are_what_the_documentation_says(client: Client) -> None:
    ns = await _ns(client)
    ptype = client.get_node(ua.NodeId(TYPE, ns))
    declared = await _children(ptype, ObjectIds.HasComponent)
    rows = documented_variables()
    heading = "## `PredictionType`"
    methods = {c[0].strip("`"): RULES[c[1]] for c in _table(heading, "Method")}
    objects = {c[0].strip("`"): RULES[c[2]] for c in _table(heading, "Object")}
    assert set(declared) == {r.name for r in rows} | set(methods) | set(objects)
    for row in rows:
        node = declared[row.name]
        assert _id(node) == f"{TYPE}.{row.name}"
        assert await node.read_node_class() == ua.NodeClass.Variable, row.name
        assert await node.read_data_type() == ua.NodeId(getattr(ObjectIds, row.data_type))
        assert await node.read_value_rank() == row.value_rank, row.name
        assert (await _type_definition(node)).Identifier == row.type_definition, row.name
        assert await _rule(node) == row.rule, row.name
        props = await _children(node, ObjectIds.HasProperty)
        wanted = {p for p in ("EURange", "EngineeringUnits") if row.units.startswith(p)}
        assert set(props) == wanted, row.name
        for prop in props.values():
            optional = "(Optional)" in row.units
            assert await _rule(prop) == RULES["Optional" if optional else "Mandatory"]
    for name, rule in {**methods, **objects}.items():
        assert await _rule(declared[name]) == rule, name
    for name in methods:
        assert await declared[name].read_node_class() == ua.NodeClass.Method
        args = await _children(declared[name], ObjectIds.HasProperty)
        inputs = await args["InputArguments"].read_value()
        outputs = await args["OutputArguments"].read_value()
        assert [a.Name for a in inputs] == ["PredictionId", "Comment"]
        assert [a.Name for a in outputs] == ["PredictionId"]
    alarm_type = await _type_definition(declared["Alarm"])
    assert alarm_type.Identifier == ObjectIds.OffNormalAlarmType


@in_module_loop
async def test_instances_carry_the_declarations_under_their_node_ids(client: Client) -> None:
    ns = await _ns(client)
    rows = {r.name: r for r in documented_variables()}
    objects = await _objects(client)
    for slot in SLOTS:
        obj = objects[(slot.asset, slot.model)]
        base = f"Predictions.{slot.asset}.{slot.model}"
        variables = {
            n: c
            for n, c in (await _children(obj, ObjectIds.HasComponent)).items()
            if await c.read_node_class() == ua.NodeClass.Variable
        }
        assert set(variables) == set(rows), slot
        for name, node in variables.items():
            row = rows[name]
            expected_id = row.node_id.replace("<asset>", slot.asset).replace("<model>", slot.model)
            assert _id(node) == expected_id == f"{base}.{name}"
            assert node.nodeid.NamespaceIndex == ns
            data_type = await node.read_data_type()
            if name == "Value":  # the abstract declaration, made concrete per slot
                kind = ObjectIds.String if slot.labels else ObjectIds.Double
                assert data_type == ua.NodeId(kind)
            else:
                assert data_type == ua.NodeId(getattr(ObjectIds, row.data_type)), name
            assert (await _type_definition(node)).Identifier == row.type_definition, name
            assert await node.read_value_rank() == row.value_rank
            access = await node.read_attribute(ua.AttributeIds.AccessLevel)
            assert access.Value.Value == row.access, name
            user = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
            assert user.Value.Value == row.access, name
            assert await _rule(node) is None  # instances carry no ModellingRule
        methods = await _children(obj, ObjectIds.HasComponent)
        assert {"Acknowledge", "Confirm", "Reject"} <= set(methods)
        assert ("Alarm" in methods) == bool(slot.labels)
        unit = await _children(variables["Value"], ObjectIds.HasProperty)
        assert ("EngineeringUnits" in unit) == bool(slot.unit)


async def _walk(node: Node, seen: list[tuple[str, str, str]]) -> None:
    for child in await node.get_children():
        name = (await child.read_browse_name()).Name
        seen.append((str(_id(node)), name, str(_id(child))))
        if isinstance(_id(child), str):
            await _walk(child, seen)


@in_module_loop
async def test_children_are_named_parent_id_dot_browse_name(client: Client) -> None:
    """The node id rule asyncua's instantiate follows, for everything under the objects
    (alarm included); numeric ids are the method arguments asyncua's add_method makes."""
    seen: list[tuple[str, str, str]] = []
    for obj in (await _objects(client)).values():
        await _walk(obj, seen)
    named = [(parent, name, child) for parent, name, child in seen if not child.isdigit()]
    assert len(named) > 3 * 11
    assert [t for t in named if t[2] != f"{t[0]}.{t[1]}"] == []


@in_module_loop
async def test_units_and_ranges_read_back(client: Client) -> None:
    ns = await _ns(client)

    async def read(identifier: str) -> Any:
        return await client.get_node(ua.NodeId(identifier, ns)).read_value()

    for where in ("Predictions.P1.bearing", "Predictions.P2.rul", TYPE):
        for field in ("Score", "DriftScore"):
            rng = await read(f"{where}.{field}.EURange")
            assert (rng.Low, rng.High) == (0.0, 1.0), (where, field)
        age = await read(f"{where}.InputAge.EngineeringUnits")
        assert age.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
        # UNECE "SEC" as Part 8 packs it: one byte per character.
        assert age.UnitId == int.from_bytes(b"SEC", "big")
        assert age.DisplayName.Text == "s"
    hours = await read("Predictions.P1.rul.Value.EngineeringUnits")
    assert hours.UnitId == int.from_bytes(b"HUR", "big")
    assert hours.DisplayName.Text == "h"


# --- the NodeSet2 export ------------------------------------------------------------------


def nodeset_command(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`bridge opcua nodeset ARGS` in a process of its own. The command is added to `bridge`
    as its `bridge.commands` entry point adds it: this checkout's installed metadata may
    predate the entry point (it is read at install time)."""
    environ = {k: v for k, v in os.environ.items() if k != "OPS_PASSWORD"}
    environ["PYTHONPATH"] = str(ROOT)
    environ.update(env or {})
    code = (
        "from bridge.cli import main; from bridge.connectors.opcua.cli import opcua; "
        "main.add_command(opcua); main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "opcua", "nodeset", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def fresh_export(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The command the documentation gives, run on the demo mapping now."""
    out = tmp_path_factory.mktemp("nodeset") / "demo.NodeSet2.xml"
    done = nodeset_command(str(DEMO), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip() == f"wrote {out} (8 objects of PredictionType)"
    return out.read_text(encoding="utf-8")


def test_checked_in_nodeset_is_what_the_server_exposes(fresh_export: str) -> None:
    checked_in = NODESET.read_text(encoding="utf-8")
    if canonical(checked_in) != canonical(fresh_export):
        diff = difflib.unified_diff(
            checked_in.splitlines(), fresh_export.splitlines(), "checked in", "fresh", n=1
        )
        shown = "\n".join(list(diff)[:60])
        pytest.fail(f"the address space changed: regenerate with `{REGENERATE}`\n{shown}")
    assert REGENERATE in DOC.read_text(encoding="utf-8")
    # The file is the demo's: eight pump objects of the type, and the type itself.
    instances = re.findall(r'<UAObject NodeId="ns=1;s=Predictions\.([^".]+)\.([^".]+)"', checked_in)
    assert sorted(instances) == [(f"pump-0{i}", "pump-health") for i in range(1, 9)]
    assert '<UAObjectType NodeId="ns=1;s=Types.PredictionType"' in checked_in


@in_module_loop
async def test_nodeset_imports_into_a_fresh_server() -> None:
    server = Server()
    await server.init()
    try:
        added = await server.import_xml(str(NODESET))  # strict: any failure raises
        text = NODESET.read_text(encoding="utf-8")
        assert len(added) == len(re.findall(r"<UA(?:Object|Variable|Method|ObjectType) ", text))
        ns = await server.get_namespace_index("urn:bridge:predictions")
        obj = server.get_node(ua.NodeId("Predictions.pump-03.pump-health", ns))
        assert await obj.read_type_definition() == ua.NodeId(TYPE, ns)
        rng = await server.get_node(
            ua.NodeId("Predictions.pump-03.pump-health.Score.EURange", ns)
        ).read_value()
        assert (rng.Low, rng.High) == (0.0, 1.0)
        age = await server.get_node(ua.NodeId(f"{TYPE}.InputAge.EngineeringUnits", ns)).read_value()
        assert age.UnitId == int.from_bytes(b"SEC", "big")
    finally:
        await server.stop()


TWO_SERVERS = """
version: 1
gateway: {id: t, store: "sqlite:///var/t.db", api: {enabled: false}}
sources:
  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
assets:
  line:
    tags:
      level: {source: plant, address: "nsu=urn:x;s=Level"}
outputs:
  a: {kind: opcua-server, endpoint: "opc.tcp://127.0.0.1:4851", security_policies: ["None"]}
  b:
    kind: opcua-server
    endpoint: opc.tcp://127.0.0.1:4852
    namespace: urn:test:b
    security_policies: ["None"]
    users: [{username: ops, password: "${OPS_PASSWORD}", role: operator}]
"""


def test_nodeset_command_exports_the_chosen_server(tmp_path: Path) -> None:
    mapping = tmp_path / "two.yaml"
    mapping.write_text(TWO_SERVERS, encoding="utf-8")
    both = nodeset_command(str(mapping))
    assert both.returncode == 2
    assert "several opcua-server outputs (a, b): choose one with --server" in both.stderr
    unknown = nodeset_command(str(mapping), "--server", "hmi")
    assert unknown.returncode == 2
    assert "no opcua-server output 'hmi' (there: a, b)" in unknown.stderr
    # b names a secret that is not set: the export needs none. No model: the type alone.
    done = nodeset_command(str(mapping), "--server", "b")
    assert done.returncode == 0, done.stderr
    assert "<Uri>urn:test:b</Uri>" in done.stdout
    assert 'NodeId="ns=1;s=Types.PredictionType"' in done.stdout
    assert "s=Predictions." not in done.stdout
    assert not (tmp_path / "var").exists()  # no store opened
    broken = nodeset_command(str(tmp_path / "missing.yaml"))
    assert broken.returncode == 3


def test_nodeset_command_and_options_have_help() -> None:
    """What test_cli_operable checks for every command, for this one before the checkout's
    installed metadata names it."""
    command = opcua.commands["nodeset"]
    assert opcua.help and command.help
    options = [p for p in command.params if isinstance(p, click.Option)]
    assert {o.name for o in options} == {"output", "server_name"}
    assert all(o.help for o in options)
