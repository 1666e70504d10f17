"""OPC UA events as tags (``address: {event: ...}``) against real servers on 127.0.0.1.

An asyncua server in the test stands in for a SCADA: alarm conditions of two boilers whose
events it emits (OffNormalAlarmType, a subtype of the AlarmConditionType the tags ask for),
with ConditionRefresh (asyncua's, bound with ``setup_condition_methods``) or without it. The
source gets ActiveState/Id, Severity and Message as samples, each tag only the events its
where clause selects, the active state again after a reconnect, initial values when no
condition is retained, repeats of a held state; a refused event item makes its tags Bad while
the others flow. A whole gateway runs a model on event tags; a worker process carries them;
and a node-opcua server (an independent stack with real AlarmConditionType instances) is the
event source of one test.

asyncua 2.1 servers take ``OfType`` as "exactly this type"; the gateway's own server fixes
that (``_eventfilter.install``), and so does this module's SCADA, as the standard says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from insight_models import linear_regressor
from support import free_port, wait_until

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
from bridge.connectors.opcua._eventfilter import install as spec_of_type
from bridge.connectors.opcua._eventinputs import STANDARD_EVENT_TYPES
from bridge.connectors.opcua._worker import OpcUaWorkerSource
from bridge.connectors.opcua.convert import make_node_id
from bridge.prepare import prepare
from bridge.runtime.pipeline import build_gateway
from bridge.types import Quality, SourceTag, TagSample

NS = "urn:test:scada"
ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "bench" / "nodeopcua" / "node_modules"
OFF_NORMAL = ObjectIds.OffNormalAlarmType


class Scada:
    """An asyncua server with two boilers whose alarm events the test fires."""

    def __init__(self, port: int, *, refresh: bool = True) -> None:
        self.port = port
        self.refresh = refresh
        self.server = Server()
        self.ns = 0
        self.nodes: dict[str, ua.NodeId] = {}
        self._generators: dict[tuple[str, str, str], EventGenerator] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        spec_of_type()
        server = self.server
        await server.init()
        server.set_endpoint(self.endpoint)
        if self.refresh:
            await server.iserver.setup_condition_methods()
        self.ns = ns = await server.register_namespace(NS)
        for name in ("Boiler1", "Boiler2"):
            boiler = await server.nodes.objects.add_object(make_node_id(name, ns), name)
            await boiler.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
            self.nodes[name] = boiler.nodeid
        temperature = await server.nodes.objects.add_variable(
            make_node_id("Boiler1.Temperature", ns), "Temperature", 81.5
        )
        self.nodes["Temperature"] = temperature.nodeid
        await server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def alarm(
        self,
        source: str,
        condition: str,
        *,
        active: bool,
        severity: int,
        message: str,
        notifier: str = "Server",
        etype: int = OFF_NORMAL,
    ) -> datetime:
        """Fire the condition's event (its state retained while active); returns its Time."""
        key = (source, condition, notifier)
        gen = self._generators.get(key)
        if gen is None:
            emitting = self.nodes[notifier] if notifier != "Server" else ObjectIds.Server
            gen = self._generators[key] = await self.server.get_event_generator(etype, emitting)
            gen.event.add_property(
                "NodeId", make_node_id(f"{source}.{condition}", self.ns), ua.VariantType.NodeId
            )
        ev: Any = gen.event
        ev.SourceNode = self.nodes[source]
        ev.SourceName = source
        ev.ConditionName = condition
        ev.Severity = severity
        ev.Retain = active
        ev.ActiveState = ua.LocalizedText("Active" if active else "Inactive")
        setattr(ev, "ActiveState/Id", active)
        when = datetime.now(UTC) - timedelta(seconds=1)  # not the receive time: told apart
        await gen.trigger(time_attr=when, message=message)
        return when


@contextlib.asynccontextmanager
async def scada(*, refresh: bool = True) -> AsyncIterator[Scada]:
    server = Scada(free_port(), refresh=refresh)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def event_tag(tag: str, field: str, **event: Any) -> SourceTag:
    return SourceTag(tag, OpcUaAddress.model_validate({"event": {"field": field, **event}}))


def boiler_tags(
    source: str = "Boiler1", prefix: str = "B1", initial: bool | None = None, **extra: Any
) -> list[SourceTag]:
    """Active state (with ``initial``), severity and message of a boiler's alarms."""
    where = {"type": "AlarmConditionType", "source_name": source, **extra}
    return [
        event_tag(f"{prefix}.active", "ActiveState/Id", initial=initial, **where),
        event_tag(f"{prefix}.severity", "Severity", **where),
        event_tag(f"{prefix}.message", "Message", **where),
    ]


def settings(endpoint: str, **kw: Any) -> OpcUaSourceSettings:
    return OpcUaSourceSettings.model_validate(
        {"endpoint": endpoint, "timeout_s": 2, "watchdog_s": 5, "publishing_interval_ms": 50, **kw}
    )


class Stream:
    """One source's samples, read on demand: every sample in arrival order, and the latest."""

    def __init__(self, source: OpcUaSource | OpcUaWorkerSource) -> None:
        self._it = source.samples().__aiter__()
        self.seen: list[TagSample] = []
        self.latest: dict[str, TagSample] = {}

    async def until(self, done: Callable[[], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not done():
                batch: Sequence[TagSample] = await anext(self._it)
                for sample in batch:
                    self.seen.append(sample)
                    self.latest[sample.tag] = sample

    async def values(self, wanted: dict[str, Any], within: float = 10.0) -> None:
        """Until each tag's latest sample is Good with the wanted value."""

        def reached() -> bool:
            return all(
                (s := self.latest.get(t)) is not None
                and s.quality is Quality.GOOD
                and s.value == v
                and type(s.value) is type(v)
                for t, v in wanted.items()
            )

        await self.until(reached, within)

    def of(self, tags: Iterable[str], since: int = 0) -> list[TagSample]:
        names = set(tags)
        return [s for s in self.seen[since:] if s.tag in names]


@contextlib.asynccontextmanager
async def running(source: OpcUaSource | OpcUaWorkerSource) -> AsyncIterator[Stream]:
    await source.connect()
    try:
        yield Stream(source)
    finally:
        await source.close()


def items_on_server(server: Scada) -> list[int]:
    """Monitored items per subscription on the server (asyncua's internal table)."""
    service = server.server.iserver.subscription_service
    return [len(s.monitored_item_srv._monitored_items) for s in service.subscriptions.values()]


async def test_alarm_fields_become_tags_sharing_one_event_item() -> None:
    async with scada() as plant:
        temperature = SourceTag(
            "B1.temperature", OpcUaAddress.model_validate(f"nsu={NS};s=Boiler1.Temperature")
        )
        tags = [*boiler_tags(), temperature]
        source = OpcUaSource("scada", settings(plant.endpoint), tags)
        async with running(source) as stream:
            await stream.values({"B1.temperature": 81.5})
            # One data item and one event item for the three event tags.
            assert items_on_server(plant) == [2]
            raised = await plant.alarm(
                "Boiler1", "HighTemp", active=True, severity=700, message="B1 temperature high"
            )
            await stream.values(
                {"B1.active": True, "B1.severity": 700, "B1.message": "B1 temperature high"}
            )
            for tag in ("B1.active", "B1.severity", "B1.message"):
                sample = stream.latest[tag]
                assert sample.source_time == pytest.approx(raised.timestamp(), abs=1e-3)
                # ReceiveTime: the server's time, a second after the event's Time here
                assert sample.server_time is not None and sample.server_time > raised.timestamp()
            cleared = await plant.alarm(
                "Boiler1", "HighTemp", active=False, severity=100, message="B1 back to normal"
            )
            await stream.values(
                {"B1.active": False, "B1.severity": 100, "B1.message": "B1 back to normal"}
            )
            latest = stream.latest["B1.active"]
            assert latest.source_time == pytest.approx(cleared.timestamp(), abs=1e-3)
        assert items_on_server(plant) == []  # the subscription is deleted on close


async def test_where_clause_selects_source_condition_and_notifier() -> None:
    async with scada() as plant:
        notifier = f"nsu={NS};s=Boiler2"
        tags = [
            *boiler_tags(condition="HighTemp"),
            *boiler_tags("Boiler2", "B2"),
            # Boiler2's own notifier, any event type: its events only, not the Server object's.
            event_tag("B2local.message", "Message", notifier=notifier),
        ]
        source = OpcUaSource("scada", settings(plant.endpoint), tags)
        async with running(source) as stream:
            b1 = ("B1.active", "B1.severity", "B1.message")
            await plant.alarm("Boiler2", "HighTemp", active=True, severity=500, message="B2 hot")
            # Boiler1's other condition and a plain event: no tag of this source asks for them.
            await plant.alarm("Boiler1", "LowLevel", active=True, severity=300, message="B1 low")
            base = await plant.server.get_event_generator()
            await base.trigger(message="a plain BaseEventType event")
            await plant.alarm(
                "Boiler2",
                "Flame",
                active=True,
                severity=900,
                message="B2 flame",
                notifier="Boiler2",
            )
            await stream.values(
                {"B2.active": True, "B2.severity": 500, "B2.message": "B2 hot"}, within=10
            )
            await stream.values({"B2local.message": "B2 flame"})
            # The Boiler1 tags saw nothing of the events above (they came in order, before).
            assert stream.of(b1) == []
            assert [s.value for s in stream.of(["B2local.message"])] == ["B2 flame"]
            mark = len(stream.seen)
            await plant.alarm(
                "Boiler1", "HighTemp", active=True, severity=800, message="B1 temperature high"
            )
            await stream.values({"B1.active": True, "B1.severity": 800})
            assert {s.tag for s in stream.seen[mark:]} == set(b1)


async def test_condition_refresh_gives_the_active_state_on_connect_and_reconnect() -> None:
    async with scada() as plant:
        await plant.alarm("Boiler1", "HighTemp", active=True, severity=700, message="B1 hot")
        tags = [
            *boiler_tags(initial=False),
            event_tag("B2.active", "ActiveState/Id", source_name="Boiler2", initial=False),
        ]
        source = OpcUaSource("scada", settings(plant.endpoint), tags)
        # Raised before the source connected: known at once through ConditionRefresh.
        async with running(source) as stream:
            await stream.values(
                {"B1.active": True, "B1.severity": 700, "B1.message": "B1 hot", "B2.active": False}
            )
            # B1's initial value was never emitted: its refresh event came first.
            assert [s.value for s in stream.of(["B1.active"])] == [True]
        await plant.alarm("Boiler1", "HighTemp", active=False, severity=100, message="B1 ok")
        await plant.alarm("Boiler2", "HighTemp", active=True, severity=600, message="B2 hot")
        # A reconnect: the state changed while the source was away; the refresh tells.
        async with running(source) as stream:
            await stream.values({"B1.active": False, "B2.active": True})
            assert [s.value for s in stream.of(["B2.active"])] == [True]
            # Boiler1's alarm is no longer retained: only the initial value, no old severity.
            assert [s.value for s in stream.of(["B1.active"])] == [False]
            assert stream.of(["B1.severity", "B1.message"]) == []


async def test_without_condition_refresh_initial_values_come_at_once() -> None:
    async with scada(refresh=False) as plant:
        tags = boiler_tags(initial=False)
        tags[1] = event_tag(
            "B1.severity", "Severity", type="AlarmConditionType", source_name="Boiler1", initial=0
        )
        source = OpcUaSource("scada", settings(plant.endpoint), tags)
        async with running(source) as stream:
            await stream.values({"B1.active": False, "B1.severity": 0}, within=5)
            assert "B1.message" not in stream.latest  # no initial: no value before an event
            await plant.alarm("Boiler1", "HighTemp", active=True, severity=700, message="hot")
            await stream.values({"B1.active": True, "B1.severity": 700, "B1.message": "hot"})


async def test_refused_event_items_are_bad_and_the_others_flow() -> None:
    async with scada() as plant:
        tags = [
            *boiler_tags(),
            event_tag("X.unknown_node", "Severity", notifier=f"nsu={NS};s=NoSuchObject"),
            event_tag("X.not_a_notifier", "Severity", notifier=f"nsu={NS};s=Boiler1.Temperature"),
            event_tag("X.other_ns", "Severity", notifier="nsu=urn:not:here;s=Boiler1"),
            event_tag("X.bad_type", "Severity", type="nsu=urn:not:here;i=1000"),
            # Accepted, but not a field of these events: Bad per event, its item-mates Good.
            event_tag(
                "B1.nothing", "NoSuchField", type="AlarmConditionType", source_name="Boiler1"
            ),
        ]
        source = OpcUaSource("scada", settings(plant.endpoint), tags)
        async with running(source) as stream:
            refused = {"X.unknown_node", "X.not_a_notifier", "X.other_ns", "X.bad_type"}
            await stream.until(lambda: refused <= stream.latest.keys())
            reasons = {t: stream.latest[t].reason for t in refused}
            assert all(stream.latest[t].quality is Quality.BAD for t in refused)
            assert reasons["X.unknown_node"].startswith("Bad"), reasons
            assert "event item" in reasons["X.not_a_notifier"], reasons
            assert "urn:not:here" in reasons["X.other_ns"]
            assert "urn:not:here" in reasons["X.bad_type"]
            await plant.alarm("Boiler1", "HighTemp", active=True, severity=700, message="hot")
            await stream.values({"B1.active": True, "B1.severity": 700, "B1.message": "hot"})
            nothing = stream.latest["B1.nothing"]
            assert (nothing.quality, nothing.reason) == (Quality.BAD, "null value")


async def test_repeat_keeps_a_held_state_fresh() -> None:
    async with scada() as plant:
        tags = boiler_tags(repeat_s=0.2)
        source = OpcUaSource("scada", settings(plant.endpoint), tags)
        async with running(source) as stream:
            raised = await plant.alarm("Boiler1", "HighTemp", active=True, severity=7, message="m")
            await stream.values({"B1.active": True})
            mark = len(stream.seen)
            # No new event: the same value and source time again, a few times over.
            await stream.until(lambda: len(stream.of(["B1.active"], mark)) >= 3)
            again = stream.of(["B1.active"], mark)
            assert {(s.value, s.quality) for s in again} == {(True, Quality.GOOD)}
            assert all(s.source_time == pytest.approx(raised.timestamp(), abs=1e-3) for s in again)
            assert len({s.received_time for s in again}) == len(again)


def test_event_addresses_are_checked_before_any_connection() -> None:
    def problem(address: dict[str, Any]) -> str:
        with pytest.raises(ValueError) as info:
            OpcUaAddress.model_validate(address)
        return str(info.value)

    assert "did you mean AlarmConditionType" in problem(
        {"event": {"type": "AlarmConditonType", "field": "Severity"}}
    )
    assert "takes no node" in problem(
        {"node": f"nsu={NS};s=Boiler1", "event": {"field": "Severity"}}
    )
    assert "takes no sampling_interval_ms" in problem(
        {"event": {"field": "Severity"}, "sampling_interval_ms": 100}
    )
    assert "browse names separated by '/'" in problem({"event": {"field": "ActiveState//Id"}})
    assert "namespace index" in problem({"event": {"field": "Message", "notifier": "ns=2;i=5"}})
    assert "field" in problem({"event": {"type": "AlarmConditionType"}})
    assert "repeat_s" in problem({"event": {"field": "Severity", "repeat_s": 0}})
    assert "source_name is empty" in problem({"event": {"field": "Severity", "source_name": ""}})
    ok = OpcUaAddress.model_validate({"event": {"field": "Severity", "type": "i=2041"}})
    assert ok.event is not None and ok.event.notifier == "Server"


def test_standard_event_type_table_matches_the_standard_ids() -> None:
    for name, number in STANDARD_EVENT_TYPES.items():
        assert getattr(ObjectIds, name) == number, name


MAPPING = """
version: 1
gateway: {{id: events, store: "sqlite:///{store}", api: {{enabled: false}}}}
sources:
  scada: {{kind: opcua, endpoint: "{endpoint}", publishing_interval_ms: 50, timeout_s: 2}}
templates:
  boiler:
    tags:
      alarm:
        source: scada
        address:
          event: {{type: AlarmConditionType, source_name: "{{name}}", field: ActiveState/Id,
                  initial: false, repeat_s: 0.2}}
      severity:
        source: scada
        address:
          event: {{type: AlarmConditionType, source_name: "{{name}}", field: Severity,
                  initial: 0, repeat_s: 0.2}}
      message:
        source: scada
        address: {{event: {{source_name: "{{name}}", field: Message}}}}
assets:
  boiler-1: {{template: boiler, vars: {{name: Boiler1}}}}
  boiler-2: {{template: boiler, vars: {{name: Boiler2}}}}
models:
  risk:
    file: {model}
    version: "1"
    template: boiler
    period_s: 0.2
    window_s: 1
    min_window_s: 0
    outputs: {{value: value}}
    features: [{{tag: alarm, stat: last}}, {{tag: severity, stat: max}}]
"""


async def test_event_tags_are_model_features_in_the_gateway(tmp_path: Path) -> None:
    """bool ActiveState/Id as 0/1 and the int Severity feed a model; the repeats keep its
    one-second window filled while nothing happens."""
    async with scada() as plant:
        # value = alarm + severity / 1000
        model = linear_regressor(tmp_path / "risk.onnx", [1.0, 0.001], [0.0, 0.0], [1.0, 1.0])
        text = MAPPING.format(store=tmp_path / "b.db", endpoint=plant.endpoint, model=model)
        (tmp_path / "mapping.yaml").write_text(text)
        prepared = prepare(tmp_path / "mapping.yaml")
        gateway = await build_gateway(prepared)
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop))

        def values() -> dict[str, Any]:
            return {
                p.asset: round(float(p.value), 3)
                for p in gateway.fanout.latest.values()
                if p.quality is Quality.GOOD and isinstance(p.value, float)
            }

        try:
            await asyncio.wait_for(gateway.started.wait(), 30)
            # No alarm retained: the initial values (false, 0) make the first predictions.
            await wait_until(
                lambda: values() == {"boiler-1": 0.0, "boiler-2": 0.0}, 15, what="initial"
            )
            await plant.alarm("Boiler2", "HighTemp", active=True, severity=700, message="hot")
            await wait_until(lambda: values().get("boiler-2") == 1.7, 10, what="alarm predicted")
            # Several windows later, with no event in between, the held state still counts.
            seq = max(p.seq for p in gateway.fanout.latest.values() if p.asset == "boiler-2")
            await wait_until(
                lambda: any(
                    p.asset == "boiler-2" and p.seq >= seq + 10
                    for p in gateway.fanout.latest.values()
                ),
                15,
                what="later predictions",
            )
            assert values() == {"boiler-1": 0.0, "boiler-2": 1.7}
            table = gateway.table
            assert table.get("boiler-2.message").value == "hot"
            assert table.get("boiler-1.message").quality is Quality.BAD  # no event, no initial
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


async def test_a_worker_process_carries_event_tags() -> None:
    async with scada() as plant:
        tags = boiler_tags(initial=False)
        source = OpcUaWorkerSource("scada", settings(plant.endpoint, workers=1), tags)
        async with running(source) as stream:
            await stream.values({"B1.active": False}, within=30)
            await plant.alarm("Boiler1", "HighTemp", active=True, severity=700, message="hot")
            await stream.values({"B1.active": True, "B1.severity": 700, "B1.message": "hot"})


NODE_SCADA = r"""
// A node-opcua server with one AlarmConditionType instance (Boiler1/HighTemp), reported to the
// Server object. stdin: "raise <severity> <message>" or "clear <severity> <message>";
// prints "ready" and then "done" after each command.
"use strict";
const path = require("path");
const modules = process.argv[2];
const { OPCUAServer } = require(path.join(modules, "node-opcua-server"));
const { DataType } = require(path.join(modules, "node-opcua-variant"));
const readline = require("readline");

async function main() {
  const server = new OPCUAServer({ port: Number(process.argv[3]), hostname: "127.0.0.1" });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  addressSpace.installAlarmsAndConditionsService(); // ConditionRefresh, Acknowledge, ...
  const ns = addressSpace.registerNamespace("urn:test:nodeopcua");
  const boiler = ns.addObject({
    browseName: "Boiler1",
    nodeId: "s=Boiler1",
    organizedBy: addressSpace.rootFolder.objects,
    eventSourceOf: addressSpace.rootFolder.objects.server,
    eventNotifier: 1,
  });
  const temperature = ns.addVariable({
    componentOf: boiler, browseName: "Temperature", dataType: DataType.Double,
    value: { dataType: DataType.Double, value: 80 },
  });
  const alarm = ns.instantiateAlarmCondition("AlarmConditionType", {
    browseName: "HighTemp", componentOf: boiler, conditionSource: boiler,
    inputNode: temperature, conditionName: "HighTemp",
  });
  // node-opcua reports the source's browse name with its namespace index ("2:Boiler1")
  // unless told; SCADA systems report their own names.
  alarm.sourceName.setValueFromSource({ dataType: DataType.String, value: "Boiler1" });
  await server.start();
  console.log("ready");
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [verb, severity, ...words] = line.trim().split(" ");
    if (verb === "raise") {
      alarm.activateAlarm();
    } else {
      alarm.deactivateAlarm(false);
    }
    alarm.raiseNewCondition({ severity: Number(severity), message: words.join(" "),
                              retain: verb === "raise" });
    console.log("done");
  }
  await server.shutdown(0);
  process.exit(0);
}
main().catch((err) => { console.error(err); process.exit(1); });
"""


@pytest.mark.skipif(
    not (NODE_MODULES / "node-opcua-server").is_dir(),
    reason="node-opcua not installed: run bench/setup_nodeopcua.sh (needs npm)",
)
async def test_a_nodeopcua_alarm_condition_as_event_source(tmp_path: Path) -> None:
    script = tmp_path / "scada.js"
    script.write_text(NODE_SCADA)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        str(NODE_MODULES),
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None

    async def said(word: str) -> None:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    assert proc.stderr is not None
                    err = (await proc.stderr.read()).decode(errors="replace")
                    raise AssertionError(f"node exited: {err[-2000:]}")
                if raw.decode().strip() == word:
                    return

    async def command(text: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(f"{text}\n".encode())
        await proc.stdin.drain()
        await said("done")

    try:
        await said("ready")
        await command("raise 650 Boiler1 temperature high")  # before the source connects
        where = {"type": "AlarmConditionType", "source_name": "Boiler1", "condition": "HighTemp"}
        tags = [
            event_tag("N.active", "ActiveState/Id", initial=False, **where),
            event_tag("N.severity", "Severity", **where),
            event_tag("N.message", "Message", **where),
            event_tag("N.acked", "AckedState/Id", **where),
            event_tag(
                "N.other",
                "ActiveState/Id",
                type="AlarmConditionType",
                source_name="X",
                initial=False,
            ),
        ]
        endpoint = f"opc.tcp://127.0.0.1:{port}"
        # A long timeout_s: N.other's initial value can only come in time through the
        # RefreshEnd event on its item, not through the wait that ends after timeout_s.
        source = OpcUaSource("node", settings(endpoint, timeout_s=30), tags)
        async with running(source) as stream:
            # The retained condition through ConditionRefresh (node-opcua sends RefreshStart
            # and RefreshEnd to every event item, as Part 9 says).
            await stream.values(
                {
                    "N.active": True,
                    "N.severity": 650,
                    "N.message": "Boiler1 temperature high",
                    "N.acked": False,
                    "N.other": False,
                },
                within=20,
            )
            await command("clear 200 Boiler1 back to normal")
            await stream.values(
                {"N.active": False, "N.severity": 200, "N.message": "Boiler1 back to normal"}
            )
            assert [s.value for s in stream.of(["N.other"])] == [False]  # none of source X
            assert all(s.quality is Quality.GOOD for s in stream.seen)
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
