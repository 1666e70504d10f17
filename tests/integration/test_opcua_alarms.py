"""Predictions raise OPC UA alarms (Part 9 OffNormalAlarmType) on the gateway's HMI server.

A real ``PredictionServer`` whose ``AlarmService`` is the gateway's (``StoreAlarms``) and the
gateway's alert writer (``AlertSink``) are handed the same predictions, over a real store
(SQLite file; PostgreSQL where the store decides: acknowledgements, history, restarts); real
asyncua clients subscribe to events over TCP on 127.0.0.1, call Acknowledge, Confirm and
ConditionRefresh, and read the events history; acknowledgements from elsewhere go through the
real REST API (uvicorn). Every wait is bounded (``support.wait_until`` / ``asyncio.wait_for``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client, ua
from asyncua.common.events import get_filter_from_event_type
from asyncua.ua.status_codes import StatusCodes
from stores import BACKENDS, temp_store
from support import LOOPBACK, free_port, wait_until

from bridge.api import ApiServices
from bridge.api.view import ModelInfo, TagState
from bridge.auth import Scope
from bridge.config.spec import AlertConfig, ApiSettings
from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua.server_config import OpcUaServerUser
from bridge.console.app import create_gateway_app
from bridge.runtime.alarms import StoreAlarms
from bridge.runtime.alertsink import AlertSink
from bridge.runtime.apiserver import ApiServer
from bridge.store import Store
from bridge.store.alerts import Alert, AlertFilter, AlertRepository, NewAlert
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.audit import AuditFilter, AuditRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.types import (
    AlarmPolicy,
    ComponentHealth,
    Explanation,
    Prediction,
    PredictionSlot,
    Quality,
    SinkContext,
)

pytestmark = pytest.mark.timeout(120)

NS = "urn:test:alarms"
GATEWAY = "gw-alarms"
LABELS = ("healthy", "bearing_fault", "cavitation")
SEVERITY = 700
OPS = ("ops", "0ps-pw")  # operator
HMI = ("hmi", "hmi-pw")  # reader
OFF_NORMAL = ua.NodeId(ua.ObjectIds.OffNormalAlarmType)
ACKABLE = ua.ObjectIds.AcknowledgeableConditionType
ALARM_TYPE = ua.ObjectIds.AlarmConditionType
LIMIT = ua.ObjectIds.ExclusiveLimitAlarmType
ACKNOWLEDGE = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
CONFIRM = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Confirm)


def slots(hold: int = 1) -> tuple[PredictionSlot, ...]:
    policy = AlarmPolicy(SEVERITY, hold, hold)
    return (
        PredictionSlot("P1", "health", "1.2.0", "a" * 64, LABELS, alarm=policy),
        PredictionSlot("P2", "health", "1.2.0", "a" * 64, LABELS, alarm=policy),
        PredictionSlot("P1", "rul", "1.0.0", "b" * 64),  # a regressor: no alarm
    )


def pred(asset: str, seq: int, label: str, *, model: str = "health") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"alarms/{asset}/{model}/{seq}/{time.time()}")),
        seq=seq,
        asset=asset,
        model=model,
        version="1.2.0",
        sha256="a" * 64,
        value=label,
        score=0.9,
        quality=Quality.GOOD,
        timestamp=time.time(),
        input_age_s=0.1,
        explanation=Explanation("bearing temperature +18 degC above normal", ()),
    )


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "alarms.db", prefix="bridge_alarms") as s:
        yield s


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    with temp_store("sqlite", tmp_path, "alarms.db") as s:
        yield s


@dataclass
class Rig:
    server: PredictionServer
    sink: AlertSink
    store: Store
    url: str

    @property
    def alerts(self) -> AlertRepository:
        return AlertRepository(self.store, gateway=GATEWAY)

    async def write(self, batch: Sequence[Prediction]) -> None:
        """As the gateway's fan-out does: the alert writer first, then the HMI server; the
        predictions are stored too (the alarm's model version and reason after a restart)."""
        PredictionRepository(self.store).add_many(list(batch))
        await self.sink.write(batch)
        await self.server.write(batch)

    async def stored(self, prediction_id: str) -> Alert:
        async def found() -> bool:
            return bool(await asyncio.to_thread(self.alerts.of_predictions, [prediction_id]))

        await wait_until(found, 10, what=f"the alert of {prediction_id} in the store")
        return self.alerts.of_predictions([prediction_id])[0]


def alert_writer(store: Store, hold: int = 1, seeded: bool = False) -> AlertSink:
    """``seeded``: as ``bridge run`` builds it, continuing from the store's last predictions."""
    repo = AlertRepository(store, gateway=GATEWAY)
    hold_of = {"health": AlertConfig(raise_after=hold, clear_after=hold)}
    latest = OutboxRepository(store).latest_predictions if seeded else None
    return AlertSink(repo, slots(hold), alerts=hold_of, latest=latest)


@contextlib.asynccontextmanager
async def rig_on(
    store: Store, hold: int = 1, url: str | None = None, sink: AlertSink | None = None
) -> AsyncIterator[Rig]:
    """A server and an alert writer over ``store``; ``sink``: an alert writer that runs on
    (a server restarted alone, as a reload that changes its settings does)."""
    url = url or f"opc.tcp://127.0.0.1:{free_port()}"
    settings = OpcUaServerSettings(
        endpoint=url,
        namespace=NS,
        security_policies=["None"],
        users=[
            OpcUaServerUser(username=OPS[0], password=OPS[1], role="operator"),
            OpcUaServerUser(username=HMI[0], password=HMI[1], role="reader"),
        ],
    )
    alarms = StoreAlarms(AlertRepository(store, gateway=GATEWAY), OutboxRepository(store))
    server = PredictionServer("hmi", settings, SinkContext(GATEWAY, slots(hold), alarms=alarms))
    own = sink is None
    writer = alert_writer(store, hold) if sink is None else sink
    if own:
        await writer.start()
    await server.start()
    try:
        yield Rig(server, writer, store, url)
    finally:
        await server.close()
        if own:
            await writer.close()


@contextlib.asynccontextmanager
async def client_of(url: str, user: tuple[str, str] = OPS) -> AsyncIterator[Client]:
    client = Client(url, timeout=10)
    client.set_user(user[0])
    client.set_password(user[1])
    async with client:
        yield client


class Heard:
    """An event subscription's handler: every event, in arrival order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        self.queue.put_nowait(event)

    async def next(self, within_s: float = 10.0) -> Any:
        return await asyncio.wait_for(self.queue.get(), within_s)

    async def alarm(self, kind: str, within_s: float = 10.0) -> Any:
        """The next alarm event whose EventId says ``kind`` (skipping others)."""
        deadline = time.monotonic() + within_s
        while True:
            event = await self.next(max(0.01, deadline - time.monotonic()))
            if getattr(event, "EventType", None) == OFF_NORMAL and event.EventId.endswith(
                f":{kind}".encode()
            ):
                return event


async def alarm_filter(client: Client, ns: int, *, where: bool = True) -> ua.EventFilter:
    """OffNormalAlarmType's fields (with the ConditionId) and the gateway's own two."""
    evfilter = await get_filter_from_event_type([client.get_node(OFF_NORMAL)], where)
    for name in ("PredictionId", "ModelVersion"):
        op = ua.SimpleAttributeOperand()
        op.TypeDefinitionId = OFF_NORMAL
        op.BrowsePath = [ua.QualifiedName(name, ns)]
        op.AttributeId = ua.AttributeIds.Value
        evfilter.SelectClauses.append(op)
    return evfilter


def of_type(type_id: int) -> ua.ContentFilter:
    """A where clause ``OfType type_id``, as HMIs filter their alarm lists."""
    operand = ua.LiteralOperand(Value=ua.Variant(ua.NodeId(type_id, 0)))
    element = ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.OfType, FilterOperands=[operand]
    )
    return ua.ContentFilter(Elements=[element])


async def listen(
    client: Client, *nodes: ua.NodeId, where: bool = True
) -> tuple[Any, Heard, list[int]]:
    ns = await client.get_namespace_index(NS)
    heard = Heard()
    sub = await client.create_subscription(20, heard)
    evfilter = await alarm_filter(client, ns, where=where)
    handles = [await sub.subscribe_events(n, evfilter=evfilter) for n in nodes]
    return sub, heard, handles


async def tree(client: Client, node: Any, path: str = "") -> dict[str, tuple[Any, ...]]:
    """Every node below ``node`` by browse path: node class, type definition, data type."""
    out: dict[str, tuple[Any, ...]] = {}
    for ref in await node.get_references(ua.ObjectIds.HierarchicalReferences):
        if not ref.IsForward:
            continue
        child = client.get_node(ref.NodeId)
        name = f"{path}/{ref.BrowseName.Name}" if path else ref.BrowseName.Name
        data_type = None
        if ref.NodeClass == ua.NodeClass.Variable:
            data_type = await child.read_data_type()
        out[name] = (ref.NodeClass, ref.TypeDefinition, data_type, ref.ReferenceTypeId)
        out.update(await tree(client, child, name))
    return out


def nid(ns: int, identifier: str) -> ua.NodeId:
    return ua.NodeId(identifier, ns)


def field(event: Any, name: str) -> Any:
    return getattr(event, name)


async def acknowledge(
    client: Client,
    ns: int,
    asset: str,
    event_id: bytes,
    comment: str,
    method: ua.NodeId = ACKNOWLEDGE,
) -> Any:
    alarm = client.get_node(nid(ns, f"Predictions.{asset}.health.Alarm"))
    return await alarm.call_method(
        method, ua.Variant(event_id, ua.VariantType.ByteString), ua.LocalizedText(comment)
    )


async def confirm(client: Client, ns: int, asset: str, event_id: bytes, comment: str) -> Any:
    alarm = client.get_node(nid(ns, f"Predictions.{asset}.health.Alarm"))
    return await alarm.call_method(
        CONFIRM, ua.Variant(event_id, ua.VariantType.ByteString), ua.LocalizedText(comment)
    )


async def refused(call: Any) -> int:
    with pytest.raises(ua.UaStatusCodeError) as caught:
        await call
    return caught.value.code


# -- the REST API, for acknowledgements made elsewhere ------------------------------------


class View:
    gateway_id = GATEWAY

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return [ComponentHealth("store", "ok")]

    def started_at(self) -> float:
        return time.time()


@contextlib.asynccontextmanager
async def rest_api(store: Store) -> AsyncIterator[tuple[str, dict[str, str]]]:
    _, key = ApiKeyRepository(store).create("shift-lead", Scope.OPERATE)
    settings = ApiSettings(host=LOOPBACK, port=free_port())
    app = create_gateway_app(ApiServices.from_store(View(), store, settings))
    server = ApiServer(app, settings.host, settings.port)
    await server.start()
    try:
        yield server.url, {"Authorization": f"Bearer {key}"}
    finally:
        await server.stop()


# -- tests ----------------------------------------------------------------------------------


async def test_a_fault_raises_an_alarm_seen_on_the_server_object_and_on_the_asset(
    sqlite_store: Store,
) -> None:
    async with rig_on(sqlite_store) as rig, client_of(rig.url, HMI) as client:
        ns = await client.get_namespace_index(NS)
        asset = nid(ns, "Predictions.P1")
        _, heard, _ = await listen(client, client.nodes.server.nodeid, asset)
        normal = [pred("P1", 1, "healthy"), pred("P2", 1, "healthy")]
        await rig.write(normal)
        fault = pred("P1", 2, "bearing_fault")
        await rig.write([fault, pred("P2", 2, "healthy")])

        first, second = await heard.alarm("raised"), await heard.alarm("raised")
        stored = await rig.stored(fault.id)
        for event in (first, second):  # one per monitored item: Server object and asset
            assert field(event, "PredictionId") == fault.id == stored.prediction_id
            assert field(event, "ModelVersion") == "1.2.0"
            assert event.Severity == SEVERITY
            assert event.Message.Text == (
                f"P1/health: bearing_fault (was healthy); bearing temperature +18 degC above "
                f"normal; model 1.2.0; prediction {fault.id}"
            )
            assert (field(event, "ActiveState/Id"), field(event, "AckedState/Id")) == (True, False)
            assert event.Retain is True
            assert event.SourceNode == nid(ns, "Predictions.P1.health")
            assert event.SourceName == "P1/health"
            assert field(event, "NodeId") == nid(ns, "Predictions.P1.health.Alarm")
            assert event.ConditionName == "Alarm"
            assert field(event, "NormalState") == nid(ns, "Predictions.P1.health.Alarm.NormalLabel")
        assert heard.queue.empty()  # P2 stayed healthy: no event

        # The condition's own variables say the same; the normal label is where NormalState
        # points; the regressor has no alarm; the references make the tree of notifiers.
        alarm = client.get_node(nid(ns, "Predictions.P1.health.Alarm"))
        assert await alarm.read_type_definition() == OFF_NORMAL
        assert await client.get_node(
            nid(ns, "Predictions.P1.health.Alarm.ActiveState.Id")
        ).read_value()
        assert (
            await client.get_node(nid(ns, "Predictions.P1.health.Alarm.NormalLabel")).read_value()
            == "healthy"
        )
        assert (
            await client.get_node(nid(ns, "Predictions.P1.health.Alarm.PredictionId")).read_value()
            == fault.id
        )
        with pytest.raises(ua.UaStatusCodeError):
            await client.get_node(nid(ns, "Predictions.P1.rul.Alarm")).read_browse_name()
        obj = client.get_node(nid(ns, "Predictions.P1.health"))
        conditions = await obj.get_referenced_nodes(ua.ObjectIds.HasCondition)
        assert [c.nodeid for c in conditions] == [alarm.nodeid]
        sources = await client.get_node(asset).get_referenced_nodes(ua.ObjectIds.HasEventSource)
        assert {s.nodeid for s in sources} == {obj.nodeid, nid(ns, "Predictions.P1.rul")} - {
            nid(ns, "Predictions.P1.rul")
        }
        notifier = await client.get_node(asset).read_attribute(ua.AttributeIds.EventNotifier)
        assert notifier.Value.Value == 5  # SubscribeToEvents | HistoryRead

        # P1's alarm was instantiated from the type, P2's copied from it: the same nodes.
        p1 = await tree(client, alarm)
        assert p1 == await tree(client, client.get_node(nid(ns, "Predictions.P2.health.Alarm")))
        assert {"ConfirmedState", "ConfirmedState/Id", "Confirm", "Acknowledge"} <= set(p1)
        assert p1["ActiveState"][1] == ua.NodeId(ua.ObjectIds.TwoStateVariableType)

        # Back to normal: inactive, still retained (nobody acknowledged it).
        await rig.write([pred("P1", 3, "healthy")])
        inactive = await heard.alarm("inactive")
        assert (field(inactive, "ActiveState/Id"), inactive.Retain) == (False, True)
        assert field(inactive, "PredictionId") == fault.id


async def test_the_hold_raises_on_the_prediction_the_alert_writer_stores(
    sqlite_store: Store,
) -> None:
    async with rig_on(sqlite_store, hold=3) as rig, client_of(rig.url) as client:
        _, heard, _ = await listen(client, client.nodes.server.nodeid)
        # A flip at the decision boundary raises nothing; three in a row do, on the third.
        flips = [pred("P1", 1, "bearing_fault"), pred("P1", 2, "healthy")]
        held = [pred("P1", s, "bearing_fault") for s in (3, 4, 5)]
        # One batch larger than the server's chunk: every prediction still counts.
        rig.server.chunk = 2
        await rig.write([*flips, *held])
        event = await heard.alarm("raised")
        assert field(event, "PredictionId") == held[2].id
        stored = await rig.stored(held[2].id)
        (only,) = rig.alerts.page(AlertFilter(), 10)
        assert only.id == stored.id


async def test_operator_acknowledges_and_confirms_the_alert_the_rest_api_lists(
    store: Store,
) -> None:
    async with rig_on(store) as rig, rest_api(store) as (api, auth):
        async with client_of(rig.url) as client:
            ns = await client.get_namespace_index(NS)
            _, heard, _ = await listen(client, nid(ns, "Predictions.P1"))
            fault = pred("P1", 1, "bearing_fault")
            await rig.write([fault])
            raised = await heard.alarm("raised")

            # Refused: a wrong EventId, a confirmation before the acknowledgement.
            code = await refused(acknowledge(client, ns, "P1", b"nope", ""))
            assert code == StatusCodes.BadEventIdUnknown
            code = await refused(confirm(client, ns, "P1", raised.EventId, ""))
            assert code == StatusCodes.BadInvalidState

            assert await acknowledge(client, ns, "P1", raised.EventId, "bearing ordered") is None
            acked = await heard.alarm("acknowledged")
            assert (field(acked, "AckedState/Id"), field(acked, "ConfirmedState/Id")) == (
                True,
                False,
            )
            assert (acked.ClientUserId, acked.Comment.Text, acked.Retain) == (
                "ops",
                "bearing ordered",
                True,
            )
            code = await refused(acknowledge(client, ns, "P1", acked.EventId, "again"))
            assert code == StatusCodes.BadConditionBranchAlreadyAcked

            # Back to normal, acknowledged but not confirmed: still retained (Part 9).
            await rig.write([pred("P1", 2, "healthy")])
            inactive = await heard.alarm("inactive")
            assert (field(inactive, "ActiveState/Id"), inactive.Retain) == (False, True)
            assert await confirm(client, ns, "P1", inactive.EventId, "bearing replaced") is None
            done = await heard.alarm("confirmed")
            assert (field(done, "ConfirmedState/Id"), done.Retain) == (True, False)
            code = await refused(confirm(client, ns, "P1", done.EventId, ""))
            assert code == StatusCodes.BadConditionBranchAlreadyConfirmed

        # The alert the REST API lists is the one acknowledged, once; time to acknowledge
        # counts it once.
        async with httpx.AsyncClient(base_url=api, timeout=10) as http:
            listed = (await http.get("/api/v1/alerts", headers=auth)).json()["items"]
            metrics = (await http.get("/api/v1/alerts/metrics", headers=auth)).json()
        assert [(a["prediction_id"], a["acked_by"], a["ack_comment"]) for a in listed] == [
            (fault.id, "ops", "bearing ordered")
        ]
        assert (metrics["total"], metrics["acknowledged"], metrics["open"]) == (1, 1, 0)
        (alert,) = rig.alerts.of_predictions([fault.id])
        assert (alert.confirmed_by, alert.confirm_comment) == ("ops", "bearing replaced")
        assert alert.acked_key is None
        ledger = AuditRepository(store, GATEWAY)
        for action, reason in (
            ("alert.acknowledged", "bearing ordered"),
            ("alert.confirmed", "bearing replaced"),
        ):
            (entry,) = ledger.page(AuditFilter(action=action), 10)
            assert (entry.actor, entry.channel, entry.subject, entry.reason) == (
                "opcua:ops",
                "opcua",
                f"alert:{alert.id}",
                reason,
            )


async def test_the_methods_answer_on_the_instance_and_refuse_readers_and_strangers(
    sqlite_store: Store,
) -> None:
    async with rig_on(sqlite_store) as rig:
        fault = pred("P1", 1, "bearing_fault")
        await rig.write([fault, pred("P2", 1, "cavitation")])
        await rig.stored(fault.id)
        async with client_of(rig.url, HMI) as reader:
            ns = await reader.get_namespace_index(NS)
            event_id = f"{fault.id}:raised".encode()
            code = await refused(acknowledge(reader, ns, "P1", event_id, "reader"))
            assert code == StatusCodes.BadUserAccessDenied
        assert rig.alerts.of_predictions([fault.id])[0].acked_at is None
        async with client_of(rig.url) as client:
            # P2's own Acknowledge method called on P1's alarm: not that alarm's method.
            p2_method = nid(ns, "Predictions.P2.health.Alarm.Acknowledge")
            code = await refused(acknowledge(client, ns, "P1", event_id, "", p2_method))
            assert code == StatusCodes.BadMethodInvalid
            # The prediction object is not a condition.
            obj = client.get_node(nid(ns, "Predictions.P1.health"))
            code = await refused(
                obj.call_method(
                    ACKNOWLEDGE,
                    ua.Variant(event_id, ua.VariantType.ByteString),
                    ua.LocalizedText(""),
                )
            )
            assert code == StatusCodes.BadNodeIdUnknown
            # Missing arguments; Enable is not supported (always enabled).
            alarm = client.get_node(nid(ns, "Predictions.P1.health.Alarm"))
            code = await refused(
                alarm.call_method(ACKNOWLEDGE, ua.Variant(event_id, ua.VariantType.ByteString))
            )
            assert code == StatusCodes.BadArgumentsMissing
            code = await refused(alarm.call_method(nid(ns, "Predictions.P1.health.Alarm.Enable")))
            assert code == StatusCodes.BadNotSupported
            # The instance's own method acknowledges, as the type's does.
            own = nid(ns, "Predictions.P1.health.Alarm.Acknowledge")
            assert await acknowledge(client, ns, "P1", event_id, "via instance", own) is None
        assert rig.alerts.of_predictions([fault.id])[0].ack_comment == "via instance"
        # The three refusals that reached the handler (the reader's stopped at the service).
        assert rig.server.health().counters["alarm_calls_refused"] == 3


async def test_an_acknowledgement_over_rest_shows_on_the_condition(store: Store) -> None:
    async with rig_on(store) as rig, rest_api(store) as (api, auth):
        async with client_of(rig.url, HMI) as client:
            ns = await client.get_namespace_index(NS)
            _, heard, _ = await listen(client, client.nodes.server.nodeid)
            fault = pred("P2", 1, "cavitation")
            await rig.write([fault])
            await heard.alarm("raised")
            alert = await rig.stored(fault.id)
            async with httpx.AsyncClient(base_url=api, timeout=10) as http:
                r = await http.post(
                    f"/api/v1/alerts/{alert.id}/ack",
                    json={"by": "Dana (shift B)", "comment": "seen on the console"},
                    headers=auth,
                )
                assert r.status_code == 200, r.text
            acked = await heard.alarm("acknowledged")
            assert field(acked, "AckedState/Id") is True
            assert (acked.ClientUserId, acked.Comment.Text) == (
                "Dana (shift B)",
                "seen on the console",
            )
            node = client.get_node(nid(ns, "Predictions.P2.health.Alarm.AckedState.Id"))
            assert await node.read_value() is True
        # The operator's Acknowledge now finds it acknowledged: one acknowledgement.
        async with client_of(rig.url) as client:
            code = await refused(acknowledge(client, ns, "P2", acked.EventId, "late"))
            assert code == StatusCodes.BadConditionBranchAlreadyAcked
        assert rig.alerts.metrics().acknowledged == 1


async def test_an_acknowledgement_waits_for_the_alert_writer_to_store_the_alert(
    sqlite_store: Store,
) -> None:
    async with rig_on(sqlite_store) as rig, client_of(rig.url) as client:
        ns = await client.get_namespace_index(NS)
        _, heard, _ = await listen(client, client.nodes.server.nodeid)
        fault = pred("P1", 1, "bearing_fault")
        await rig.server.write([fault])  # the HMI sees it; the alert is not stored yet
        raised = await heard.alarm("raised")
        call = asyncio.create_task(acknowledge(client, ns, "P1", raised.EventId, "quick"))
        await asyncio.sleep(0.5)
        assert not call.done()
        rig.alerts.add_many(
            [NewAlert(fault.id, "P1", "health", "bearing_fault", "healthy", 0.9, fault.timestamp)]
        )
        assert await asyncio.wait_for(call, 10) is None
        assert rig.alerts.of_predictions([fault.id])[0].acked_by == "ops"


async def test_condition_refresh_gives_a_late_client_the_retained_alarms(
    sqlite_store: Store,
) -> None:
    async with rig_on(sqlite_store) as rig:
        fault, other = pred("P1", 1, "bearing_fault"), pred("P2", 1, "cavitation")
        await rig.write([fault, other])
        await rig.stored(fault.id)
        async with client_of(rig.url, HMI) as client:  # a reader may refresh
            ns = await client.get_namespace_index(NS)
            sub, heard, handles = await listen(
                client, client.nodes.server.nodeid, nid(ns, "Predictions.P1"), where=False
            )
            assert heard.queue.empty()  # subscribing alone delivers nothing of the past
            condition_type = client.get_node(ua.NodeId(ua.ObjectIds.ConditionType))
            await condition_type.call_method(
                ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                ua.Variant(sub.subscription_id, ua.VariantType.UInt32),
            )
            # Each event item: RefreshStart, the retained alarms it watches, RefreshEnd. Both
            # retained alarms on the Server object, P1's also on its asset folder.
            markers, alarms = [], []
            while markers.count("end") < 2:
                event = await heard.next()
                if event.EventType == OFF_NORMAL:
                    alarms.append((event.SourceName, field(event, "PredictionId")))
                elif event.EventType == ua.NodeId(ua.ObjectIds.RefreshStartEventType):
                    markers.append("start")
                elif event.EventType == ua.NodeId(ua.ObjectIds.RefreshEndEventType):
                    markers.append("end")
            assert sorted(markers) == ["end", "end", "start", "start"]
            assert sorted(alarms) == sorted(
                [("P1/health", fault.id), ("P1/health", fault.id), ("P2/health", other.id)]
            )
            # ConditionRefresh2: one monitored item (the asset folder's) only.
            await condition_type.call_method(
                ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh2),
                ua.Variant(sub.subscription_id, ua.VariantType.UInt32),
                ua.Variant(handles[1], ua.VariantType.UInt32),
            )
            again = []
            while True:
                event = await heard.next()
                if event.EventType == OFF_NORMAL:
                    again.append(event.SourceName)
                if event.EventType == ua.NodeId(ua.ObjectIds.RefreshEndEventType):
                    break
            assert again == ["P1/health"]


async def test_events_history_pages_through_raised_acknowledged_and_confirmed(
    store: Store,
) -> None:
    async with rig_on(store) as rig, client_of(rig.url) as client:
        ns = await client.get_namespace_index(NS)
        _, heard, _ = await listen(client, client.nodes.server.nodeid)
        before = datetime.now(UTC)
        first = pred("P1", 1, "bearing_fault")
        await rig.write([first])
        raised = await heard.alarm("raised")
        await rig.stored(first.id)
        await acknowledge(client, ns, "P1", raised.EventId, "ordered")
        acked = await heard.alarm("acknowledged")
        await confirm(client, ns, "P1", acked.EventId, "replaced")
        await heard.alarm("confirmed")
        await rig.write([pred("P1", 2, "healthy")])
        other = pred("P2", 1, "cavitation")
        await rig.write([other])
        await heard.alarm("raised")
        await rig.stored(other.id)

        evfilter = await alarm_filter(client, ns, where=False)

        async def history(
            node: ua.NodeId, n: int, start: datetime | None, end: datetime | None
        ) -> tuple[list[tuple[bytes, Any, Any]], list[int]]:
            details = ua.ReadEventDetails()
            details.StartTime = start or ua.get_win_epoch()
            details.EndTime = end or ua.get_win_epoch()
            details.NumValuesPerNode = n
            details.Filter = evfilter
            point: bytes | None = None
            found, pages = [], []
            names = [
                "/".join(q.Name for q in op.BrowsePath) or "NodeId" for op in evfilter.SelectClauses
            ]
            for _ in range(20):
                params = ua.HistoryReadParameters()
                params.ReleaseContinuationPoints = False  # asyncua's default is True
                params.HistoryReadDetails = details
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                read = ua.HistoryReadValueId()
                read.NodeId = node
                read.ContinuationPoint = point
                params.NodesToRead = [read]
                (result,) = await client.uaclient.history_read(params)
                result.StatusCode.check()
                events = result.HistoryData.Events
                pages.append(len(events))
                for e in events:
                    values = dict(zip(names, [f.Value for f in e.EventFields], strict=False))
                    found.append(
                        (values["EventId"], values["AckedState/Id"], values["PredictionId"])
                    )
                point = result.ContinuationPoint
                if not point:
                    return found, pages
            raise AssertionError("history never ended")

        expected = [
            (f"{first.id}:raised".encode(), first.id),
            (f"{first.id}:acknowledged".encode(), first.id),
            (f"{first.id}:confirmed".encode(), first.id),
        ]
        alarm = nid(ns, "Predictions.P1.health.Alarm")
        found, pages = await history(alarm, 1, before, None)
        assert [(e, p) for e, _, p in found] == expected
        assert pages == [1, 1, 1]
        # The prediction object and the asset folder have the same; the Server object also
        # P2's, newest first when EndTime comes before StartTime.
        for node in (nid(ns, "Predictions.P1.health"), nid(ns, "Predictions.P1")):
            found, _ = await history(node, 0, before, datetime.now(UTC))
            assert [(e, p) for e, _, p in found] == expected
        found, pages = await history(client.nodes.server.nodeid, 2, datetime.now(UTC), before)
        assert [(e, p) for e, _, p in found] == [
            (f"{other.id}:raised".encode(), other.id),
            *reversed(expected),
        ]
        assert pages == [2, 2]
        # A forged continuation point is refused; a node without alarms has no event history.
        details = ua.ReadEventDetails()
        details.StartTime, details.EndTime, details.NumValuesPerNode = before, ua.get_win_epoch(), 1
        details.Filter = evfilter
        params = ua.HistoryReadParameters()
        params.ReleaseContinuationPoints = False
        params.HistoryReadDetails = details
        bogus = ua.HistoryReadValueId()
        bogus.NodeId = alarm
        bogus.ContinuationPoint = b"forged"
        plain = ua.HistoryReadValueId()
        plain.NodeId = nid(ns, "Predictions.P1.rul")
        params.NodesToRead = [bogus, plain]
        results = await client.uaclient.history_read(params)
        assert [r.StatusCode.value for r in results] == [
            StatusCodes.BadContinuationPointInvalid,
            StatusCodes.BadNotReadable,
        ]


async def test_a_restarted_server_shows_the_open_alarm_again(store: Store) -> None:
    """The HMI server restarts alone (a reload that changes its settings); the alert writer
    runs on. The fault is the last stored prediction and its alert is open: the alarm is
    active again at once, with the same EventId, and the fault going on raises nothing new."""
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    fault = pred("P1", 1, "bearing_fault")
    sink = alert_writer(store)
    await sink.start()
    try:
        async with rig_on(store, url=url, sink=sink) as rig:
            await rig.write([fault])
            await rig.stored(fault.id)
        async with rig_on(store, url=url, sink=sink) as rig, client_of(url) as client:
            ns = await client.get_namespace_index(NS)
            sub, heard, _ = await listen(client, client.nodes.server.nodeid)
            condition_type = client.get_node(ua.NodeId(ua.ObjectIds.ConditionType))
            await condition_type.call_method(
                ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                ua.Variant(sub.subscription_id, ua.VariantType.UInt32),
            )
            event = await heard.alarm("raised")
            assert event.EventId == f"{fault.id}:raised".encode()
            assert (field(event, "ActiveState/Id"), event.Retain) == (True, True)
            assert field(event, "ModelVersion") == "1.2.0"  # of the stored prediction
            assert "bearing temperature +18 degC above normal" in event.Message.Text
            await rig.write([pred("P1", 2, "bearing_fault")])
            assert await acknowledge(client, ns, "P1", event.EventId, "after restart") is None
            acked = await heard.alarm("acknowledged")
            assert field(acked, "PredictionId") == fault.id
            await asyncio.sleep(2 * 1.0)  # two polls: nothing else comes of the store
            assert heard.queue.empty()
            assert rig.alerts.metrics().total == rig.alerts.metrics().acknowledged == 1
    finally:
        await sink.close()


async def test_after_a_gateway_restart_the_alert_writers_new_alert_is_taken_over(
    store: Store,
) -> None:
    """An alert writer that starts from normal (a gateway of a fleet taking the asset over;
    ``bridge run`` seeds its own from the store) raises the fault going on as a new alert;
    the server started from the store's open alert. The stored alert wins: the condition
    shows the new one, so the HMI acknowledges the alert the REST API lists as open."""
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    first = pred("P1", 1, "bearing_fault")
    async with rig_on(store, url=url) as rig:
        await rig.write([first])
        await rig.stored(first.id)
    async with rig_on(store, url=url) as rig, client_of(url) as client:
        ns = await client.get_namespace_index(NS)
        _, heard, _ = await listen(client, client.nodes.server.nodeid)
        going_on = pred("P1", 2, "bearing_fault")
        await rig.write([going_on])
        await rig.stored(going_on.id)
        event = await heard.alarm("raised")
        assert field(event, "PredictionId") == going_on.id
        assert field(event, "ActiveState/Id") is True
        assert await acknowledge(client, ns, "P1", event.EventId, "new alert") is None
        assert rig.alerts.of_predictions([going_on.id])[0].acked_by == "ops"
        # The track took the stored state: the same fault raises nothing more; normal clears.
        await rig.write([pred("P1", 3, "bearing_fault"), pred("P1", 4, "healthy")])
        inactive = await heard.alarm("inactive")
        assert field(inactive, "PredictionId") == going_on.id
        assert rig.alerts.metrics().total == 2


async def test_after_a_gateway_restart_a_fault_going_on_stays_one_alarm(store: Store) -> None:
    """The whole gateway restarts as ``bridge run`` builds it: the alert writer continues from
    the store's last prediction, so the fault going on is not a second alert; the HMI shows
    the first one, and acknowledging it closes the only alert the REST API lists."""
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    first = pred("P1", 1, "bearing_fault")
    async with rig_on(store, url=url, sink=alert_writer(store, seeded=True)) as rig:
        await rig.sink.start()
        try:
            await rig.write([first])
            await rig.stored(first.id)
        finally:
            await rig.sink.close()
    sink = alert_writer(store, seeded=True)
    await sink.start()
    try:
        async with rig_on(store, url=url, sink=sink) as rig, client_of(url) as client:
            ns = await client.get_namespace_index(NS)
            sub, heard, _ = await listen(client, client.nodes.server.nodeid)
            await rig.write([pred("P1", 2, "bearing_fault"), pred("P1", 3, "bearing_fault")])
            condition_type = client.get_node(ua.NodeId(ua.ObjectIds.ConditionType))
            await condition_type.call_method(
                ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
                ua.Variant(sub.subscription_id, ua.VariantType.UInt32),
            )
            event = await heard.alarm("raised")
            assert field(event, "PredictionId") == first.id
            assert await acknowledge(client, ns, "P1", event.EventId, "one fault") is None
            await heard.alarm("acknowledged")
            await rig.write([pred("P1", 4, "healthy")])
            inactive = await heard.alarm("inactive")
            assert field(inactive, "PredictionId") == first.id
            assert sink.counters["raised"] == 0
            metrics = rig.alerts.metrics()
            assert (metrics.total, metrics.acknowledged, metrics.open) == (1, 1, 0)
    finally:
        await sink.close()


async def test_an_event_item_filtered_on_a_supertype_gets_the_alarm(sqlite_store: Store) -> None:
    """OfType matches the type and its subtypes (Part 4, 7.7.3): an HMI's alarm list that
    filters on AcknowledgeableConditionType (node-opcua's does) or AlarmConditionType gets the
    OffNormalAlarm and its ConditionRefresh; an item filtered on an unrelated type gets none."""
    async with rig_on(sqlite_store) as rig, client_of(rig.url, HMI) as client:
        ns = await client.get_namespace_index(NS)
        heard = {t: Heard() for t in (ACKABLE, ALARM_TYPE, LIMIT)}
        subs = {}
        for type_id, handler in heard.items():
            subs[type_id] = sub = await client.create_subscription(20, handler)
            evfilter = await alarm_filter(client, ns, where=False)
            evfilter.WhereClause = of_type(type_id)
            await sub.subscribe_events(client.nodes.server.nodeid, evfilter=evfilter)
        fault = pred("P1", 1, "bearing_fault")
        await rig.write([fault])
        for type_id in (ACKABLE, ALARM_TYPE):
            event = await heard[type_id].alarm("raised")
            assert field(event, "PredictionId") == fault.id
        condition_type = client.get_node(ua.NodeId(ua.ObjectIds.ConditionType))
        await condition_type.call_method(
            ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
            ua.Variant(subs[ACKABLE].subscription_id, ua.VariantType.UInt32),
        )
        refreshed = await heard[ACKABLE].alarm("raised")
        assert field(refreshed, "PredictionId") == fault.id
        # Sent in the same pass as the two above, on the same publishing interval.
        await asyncio.sleep(0.5)
        assert heard[LIMIT].queue.empty()


async def test_a_slot_removed_by_a_reload_drops_its_retained_alarm(sqlite_store: Store) -> None:
    async with rig_on(sqlite_store) as rig, client_of(rig.url, HMI) as client:
        _, heard, _ = await listen(client, client.nodes.server.nodeid)
        fault = pred("P2", 1, "cavitation")
        await rig.write([fault])
        await heard.alarm("raised")
        await rig.server.follow_slots([s for s in slots() if s.asset != "P2"])
        gone = await heard.alarm("removed")
        assert (gone.Retain, field(gone, "PredictionId")) == (False, fault.id)
        # A severity changed by a reload applies to the next event.
        kept = [
            replace(s, alarm=AlarmPolicy(900, 1, 1)) if s.labels else s
            for s in slots()
            if s.asset != "P2"
        ]
        await rig.server.follow_slots(kept)
        await rig.write([pred("P1", 1, "bearing_fault")])
        assert (await heard.alarm("raised")).Severity == 900
