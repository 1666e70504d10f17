"""Operator feedback over OPC UA lands on the prediction the operator judged: the methods take the
PredictionId (shown in the object's PredictionId variable), an older stored id of the same object
is accepted, an unknown or another object's id is refused and stores nothing. A real asyncua
client calls a real PredictionServer whose FeedbackService is the gateway's, over a SQLite file."""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes
from support import free_port

from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua.server_config import OpcUaServerUser
from bridge.runtime.insight_wiring import StoreFeedback
from bridge.store.db import Store, open_store
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.repository import PredictionRepository
from bridge.types import InputSnapshot, Prediction, PredictionSlot, Quality, SinkContext

NS = "urn:test:feedback"
SLOTS = (
    PredictionSlot("P1", "health", "1.0.0", "a" * 64, labels=("ok", "fault")),
    PredictionSlot("P2", "health", "1.0.0", "a" * 64, labels=("ok", "fault")),
)


def prediction(asset: str, seq: int, value: str) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"test/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="a" * 64,
        value=value,
        score=0.9,
        quality=Quality.GOOD,
        timestamp=time.time() - 100 + seq,
        input_age_s=0.1,
    )


@dataclass
class Rig:
    server: PredictionServer
    store: Store
    url: str


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    feedback = StoreFeedback(LabelRepository(store), LineageRepository(store))
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    settings = OpcUaServerSettings(
        endpoint=url,
        namespace=NS,
        security_policies=["None"],
        users=[OpcUaServerUser(username="ops", password="0ps-pw", role="operator")],
    )
    server = PredictionServer("hmi", settings, SinkContext("test", SLOTS, feedback=feedback))
    await server.start()
    try:
        yield Rig(server, store, url)
    finally:
        await server.close()
        store.dispose()


async def _call(url: str, asset: str, method: str, *args: str) -> list[object]:
    client = Client(url, timeout=5)
    client.set_user("ops")
    client.set_password("0ps-pw")
    async with client:
        ns = await client.get_namespace_index(NS)
        obj = client.get_node(ua.NodeId(f"Predictions.{asset}.health", ns))
        result = await obj.call_method(ua.NodeId(f"Predictions.{asset}.health.{method}", ns), *args)
        return result if isinstance(result, list) else [result]


async def _shown_id(url: str, asset: str) -> str:
    client = Client(url, timeout=5)
    client.set_user("ops")
    client.set_password("0ps-pw")
    async with client:
        ns = await client.get_namespace_index(NS)
        node = client.get_node(ua.NodeId(f"Predictions.{asset}.health.PredictionId", ns))
        return str(await node.read_value())


def _labels(store: Store, ids: list[str]) -> list[tuple[str, str, str, str]]:
    return [
        (r.prediction_id, r.action, r.by, r.comment)
        for r in LabelRepository(store).of_predictions(ids)
    ]


async def test_feedback_lands_on_the_prediction_the_operator_judged(rig: Rig) -> None:
    judged = prediction("P1", 1, "fault")
    await rig.server.write([judged])
    assert await _shown_id(rig.url, "P1") == judged.id
    # A newer prediction arrives between the operator's look and the call.
    newer = prediction("P1", 2, "ok")
    await rig.server.write([newer])

    answered = await _call(rig.url, "P1", "Reject", judged.id, "sensor drift, pump is fine")
    assert answered == [judged.id]
    assert _labels(rig.store, [judged.id, newer.id]) == [
        (judged.id, "reject", "ops", "sensor drift, pump is fine")
    ]


async def test_older_stored_id_is_accepted_unknown_and_foreign_ids_are_refused(rig: Rig) -> None:
    # 100 ticks: the first one is long off the server's recent list, but it is in the store.
    history = [prediction("P1", seq, "ok") for seq in range(1, 101)]
    PredictionRepository(rig.store).add_many(history)
    await rig.server.write(history)
    other = prediction("P2", 1, "fault")
    await rig.server.write([other])

    assert await _call(rig.url, "P1", "Acknowledge", history[0].id, "") == [history[0].id]

    with pytest.raises(ua.UaStatusCodeError) as unknown:
        await _call(rig.url, "P1", "Confirm", str(uuid.uuid4()), "")
    assert unknown.value.code == StatusCodes.BadNoMatch
    with pytest.raises(ua.UaStatusCodeError) as foreign:
        await _call(rig.url, "P1", "Confirm", other.id, "wrong object")
    assert foreign.value.code == StatusCodes.BadInvalidArgument
    with pytest.raises(ua.UaStatusCodeError) as missing:
        await _call(rig.url, "P1", "Confirm", "", "")
    assert missing.value.code == StatusCodes.BadArgumentsMissing

    # Only the accepted call was stored.
    stored = _labels(rig.store, [p.id for p in history] + [other.id])
    assert stored == [(history[0].id, "acknowledge", "ops", "")]
    assert rig.server.health().counters["feedback_refused"] == 3


async def test_shown_predictions_are_kept_out_of_the_collectors_reach(rig: Rig) -> None:
    """The server remembers the predictions it showed (for feedback on the newest ids before
    the store has them) as untracked tuples, not as Prediction objects with their inputs: at
    2,000 assets those were ~400,000 objects that every full collection walked again."""
    inputs = tuple(InputSnapshot(f"t{k}", float(k), Quality.GOOD, time.time()) for k in range(3))
    history = [
        replace(prediction(asset, seq, "ok"), inputs=inputs)
        for seq in range(1, 101)
        for asset in ("P1", "P2")
    ]
    gc.collect()
    before = len(gc.get_objects())
    for k in range(0, len(history), 20):
        await rig.server.write(history[k : k + 20])
    newest, shown = history[-1].id, {p.id for p in history}
    del history
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, Prediction) and o.id in shown]
    # 200 predictions shown: what is left for the collector does not grow with them.
    assert len(gc.get_objects()) - before < 100
    # And feedback still finds the newest one without the store.
    assert await _call(rig.url, "P2", "Acknowledge", newest, "") == [newest]
