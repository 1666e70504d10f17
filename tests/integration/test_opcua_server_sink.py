"""PredictionServer against a real asyncua client: browse, read, status codes, refused writes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import BadUserAccessDenied, UaStatusCodeError
from support import free_port

from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua.server_config import OpcUaServerUser
from bridge.types import ModelStatus, Prediction, PredictionSlot, Quality, SinkContext

NS = "urn:test:predictions"
# One server per module (asyncua's init takes seconds); each test writes to its own slots.
pytestmark = pytest.mark.asyncio(loop_scope="module")
SLOTS = (
    PredictionSlot("P1", "bearing", "1.0.0", "a" * 64, labels=("ok", "fault")),
    PredictionSlot("P2", "bearing", "1.0.0", "a" * 64, labels=("ok", "fault")),
    PredictionSlot("P1", "rul", "2.1.0", "b" * 64),  # never written: shows the initial state
    PredictionSlot("P3", "rul", "2.1.0", "b" * 64),
    PredictionSlot("P4", "rul", "2.1.0", "b" * 64),
    PredictionSlot("P5", "rul", "2.1.0", "b" * 64),
)


def prediction(
    asset: str, model: str, value: str | float | None, quality: Quality, **kw: object
) -> Prediction:
    fields: dict[str, object] = {
        "id": f"{asset}-{model}",
        "seq": 1,
        "asset": asset,
        "model": model,
        "version": "1.0.0",
        "sha256": "a" * 64,
        "value": value,
        "score": 0.75,
        "quality": quality,
        "timestamp": time.time() - 1.5,
        "input_age_s": 0.4,
    }
    fields.update(kw)
    return Prediction(**fields)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sink() -> AsyncIterator[PredictionServer]:
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        namespace=NS,
        allow_anonymous=True,
        security_policies=["None"],
        users=[OpcUaServerUser(username="hmi", password="s3cret")],
    )
    server = PredictionServer("hmi", settings, SinkContext("gw1", SLOTS))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def client(sink: PredictionServer) -> AsyncIterator[Client]:
    c = Client(sink._settings.endpoint, timeout=4)
    await c.connect()
    try:
        yield c
    finally:
        await c.disconnect()


async def read_dv(client: Client, identifier: str) -> ua.DataValue:
    """Read by string node id, resolving the namespace URI through this session."""
    ns = await client.get_namespace_index(NS)
    node = client.get_node(ua.NodeId(identifier, ns))
    return await node.read_data_value(raise_on_bad_status=False)


async def test_tree_is_browsable_and_waits_for_first_prediction(client: Client) -> None:
    ns = await client.get_namespace_index(NS)
    predictions = await client.nodes.objects.get_child(f"{ns}:Predictions")
    assets = {(await n.read_browse_name()).Name for n in await predictions.get_children()}
    assert assets == {"P1", "P2", "P3", "P4", "P5"}
    p1 = await predictions.get_child(f"{ns}:P1")
    models = {(await n.read_browse_name()).Name for n in await p1.get_children()}
    assert models == {"bearing", "rul"}
    rul = await p1.get_child(f"{ns}:rul")
    fields = {(await n.read_browse_name()).Name for n in await rul.get_children()}
    assert fields == {
        "Value",
        "Score",
        "ModelName",
        "ModelVersion",
        "ModelSha256",
        "Quality",
        "Timestamp",
        "InputAge",
        "Explanation",
        "DriftScore",
        "PredictionId",
    }
    value = await (await rul.get_child(f"{ns}:Value")).read_data_value(raise_on_bad_status=False)
    assert value.StatusCode.value == StatusCodes.BadWaitingForInitialData
    version = await (await rul.get_child(f"{ns}:ModelVersion")).read_value()
    assert version == "2.1.0"
    data_type = await (await rul.get_child(f"{ns}:Value")).read_data_type()
    assert data_type == ua.NodeId(ua.ObjectIds.Double)
    label_type = await (await p1.get_child([f"{ns}:bearing", f"{ns}:Value"])).read_data_type()
    assert label_type == ua.NodeId(ua.ObjectIds.String)


async def test_written_predictions_read_back_by_browse_and_node_id(
    sink: PredictionServer, client: Client
) -> None:
    good = prediction("P1", "bearing", "fault", Quality.GOOD)
    uncertain = prediction("P2", "bearing", 0.0, Quality.UNCERTAIN, version="1.1.0")
    bad = prediction("P3", "rul", None, Quality.BAD, score=None, version="2.1.0")
    await sink.write([good, uncertain, bad])

    ns = await client.get_namespace_index(NS)
    value_node = await client.nodes.objects.get_child(
        [f"{ns}:Predictions", f"{ns}:P1", f"{ns}:bearing", f"{ns}:Value"]
    )
    dv = await value_node.read_data_value()
    assert dv.Value.Value == "fault"
    assert dv.StatusCode.is_good()
    assert dv.SourceTimestamp is not None
    assert abs(dv.SourceTimestamp.timestamp() - good.timestamp) < 1e-3

    dv2 = await read_dv(client, "Predictions.P2.bearing.Value")
    assert dv2.Value.Value == "ok"  # class index 0 shown as its label
    assert dv2.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue
    assert (await read_dv(client, "Predictions.P2.bearing.ModelVersion")).Value.Value == "1.1.0"
    assert (await read_dv(client, "Predictions.P2.bearing.Quality")).Value.Value == "Uncertain"

    dv3 = await read_dv(client, "Predictions.P3.rul.Value")
    assert dv3.StatusCode.value == ua.StatusCodes.BadNoCommunication
    assert (await read_dv(client, "Predictions.P3.rul.Quality")).Value.Value == "Bad"
    score = await read_dv(client, "Predictions.P3.rul.Score")
    assert score.StatusCode.value == ua.StatusCodes.BadNoData
    age = await read_dv(client, "Predictions.P1.bearing.InputAge")
    assert age.Value.Value == pytest.approx(0.4)
    stamp = (await read_dv(client, "Predictions.P1.bearing.Timestamp")).Value.Value
    assert abs(stamp.timestamp() - good.timestamp) < 1e-3

    health = sink.health()
    assert health.state == "ok"
    assert health.counters["predictions"] >= 3


async def test_unknown_slot_is_counted_not_raised(sink: PredictionServer) -> None:
    before = sink.health().counters["unknown_slot"]
    await sink.write([prediction("P9", "bearing", "ok", Quality.GOOD)])
    assert sink.health().counters["unknown_slot"] == before + 1


async def test_client_write_is_refused(sink: PredictionServer, client: Client) -> None:
    await sink.write([prediction("P4", "rul", 12.5, Quality.GOOD)])
    ns = await client.get_namespace_index(NS)
    node = client.get_node(ua.NodeId("Predictions.P4.rul.Value", ns))
    level = await node.read_attribute(ua.AttributeIds.AccessLevel)
    assert level.Value.Value == ua.AccessLevel.CurrentRead.mask
    with pytest.raises(UaStatusCodeError):
        await node.write_value(ua.DataValue(ua.Variant(99.0, ua.VariantType.Double)))
    assert await node.read_value() == 12.5


async def test_admin_name_gets_no_write_rights(sink: PredictionServer) -> None:
    # asyncua's default user manager makes any "admin" an Admin that bypasses access levels.
    c = Client(sink._settings.endpoint, timeout=4)
    c.set_user("admin")
    c.set_password("anything")
    with pytest.raises(BadUserAccessDenied):
        await c.connect()
    await c.disconnect()


async def test_configured_user_can_read_but_not_write(sink: PredictionServer) -> None:
    await sink.write([prediction("P5", "rul", 3.0, Quality.GOOD)])
    c = Client(sink._settings.endpoint, timeout=4)
    c.set_user("hmi")
    c.set_password("s3cret")
    await c.connect()
    try:
        node = c.get_node(ua.NodeId("Predictions.P5.rul.Value", await c.get_namespace_index(NS)))
        assert await node.read_value() == 3.0
        with pytest.raises(UaStatusCodeError):
            await node.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
    finally:
        await c.disconnect()


async def test_anonymous_refused_unless_allowed() -> None:
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}", namespace=NS, security_policies=["None"]
    )
    server = PredictionServer("hmi", settings, SinkContext("gw1", SLOTS))
    await server.start()
    try:
        c = Client(settings.endpoint, timeout=4)
        with pytest.raises(UaStatusCodeError):
            await c.connect()
        await c.disconnect()
    finally:
        await server.close()
    assert server.health().state == "stopped"


async def test_models_folder_shows_agreement_and_operator_judged_accuracy(
    sink: PredictionServer, client: Client
) -> None:
    status = ModelStatus(
        "bearing",
        "1.0.0",
        "a" * 64,
        "2.0.0",
        "c" * 64,
        "shadow",
        agreement=(("P1", 0.5), ("P2", None)),
        accuracy=(("P1", 0.4, 0.25), ("P2", None, None)),
    )
    await sink.write_models([status])
    active = await read_dv(client, "Models.bearing.Accuracy.P1.Active")
    candidate = await read_dv(client, "Models.bearing.Accuracy.P1.Candidate")
    assert (active.Value.Value, candidate.Value.Value) == (0.4, 0.25)
    assert active.StatusCode.is_good()
    unjudged = await read_dv(client, "Models.bearing.Accuracy.P2.Candidate")
    assert unjudged.StatusCode.value == StatusCodes.BadWaitingForInitialData
    # The candidate is gone: nothing is judged any more, so the rate is not shown.
    await sink.write_models([ModelStatus("bearing", "1.0.0", "a" * 64, agreement=(("P1", None),))])
    gone = await read_dv(client, "Models.bearing.Accuracy.P1.Active")
    assert gone.StatusCode.value == StatusCodes.BadWaitingForInitialData
