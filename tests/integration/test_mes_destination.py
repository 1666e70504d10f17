"""MES REST destination against a real MesReceiver on loopback; plus its pure payload helpers
(the retry policy it answers with is tested in tests/unit/test_retry.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import ValidationError
from support import free_port, wait_until

from bridge import plugins
from bridge.connectors.mes import MesDestination, MesSettings, prediction_to_json, register
from bridge.destination import DestinationContext, Envelope, Outcome, Retry
from bridge.simulators.mes import MesReceiver
from bridge.types import InputSnapshot, Prediction, PredictionSlot, Quality, Trigger

GATEWAY = "gw-test"
T0 = 1714564800.25  # 2024-05-01T12:00:00.250Z

SinkFactory = Callable[..., MesDestination]


def prediction(asset: str, seq: int, value: str | float | None = "ok") -> Prediction:
    pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/pump-health/{seq}"))
    return Prediction(
        id=pid,
        seq=seq,
        asset=asset,
        model="pump-health",
        version="1.2.0",
        sha256="ab" * 32,
        value=value,
        score=0.875,
        quality=Quality.GOOD,
        timestamp=T0 + seq,
        input_age_s=0.5,
        inputs=(
            InputSnapshot(f"{asset}.vibration", 4.5, Quality.GOOD, T0 + seq - 1),
            InputSnapshot(f"{asset}.running", True, Quality.UNCERTAIN, None),
        ),
    )


def context() -> DestinationContext:
    return DestinationContext(GATEWAY, (PredictionSlot("p1", "pump-health", "1.2.0", "ab" * 32),))


@pytest.fixture
async def receiver() -> AsyncIterator[MesReceiver]:
    mes = MesReceiver(port=free_port())
    await mes.start()
    try:
        yield mes
    finally:
        await mes.stop()


@pytest.fixture
async def make_sink() -> AsyncIterator[SinkFactory]:
    sinks: list[MesDestination] = []

    def make(url: str, **overrides: Any) -> MesDestination:
        fields: dict[str, Any] = {
            "url": url,
            "initial_backoff_s": 0.02,
            "max_backoff_s": 0.1,
            "timeout_s": 2.0,
            **overrides,
        }
        sink = MesDestination("mes", MesSettings(**fields), context())
        sinks.append(sink)
        return sink

    try:
        yield make
    finally:
        for sink in sinks:
            await sink.close()


def sink_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks started since ``before``, leaving out the receiver's own request handlers."""
    new = asyncio.all_tasks() - before - {asyncio.current_task()}
    # A task's repr names the file its coroutine is running in.
    return [t for t in new if "uvicorn" not in repr(t)]


def events_url(mes: MesReceiver) -> str:
    return f"{mes.url}/api/v1/events"


def seqs_by_asset(mes: MesReceiver) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for call in mes.calls:
        out.setdefault(call.body["asset"], []).append(call.body["seq"])
    return out


# -- pure helpers ------------------------------------------------------------------------------


def test_payload_shape() -> None:
    p = prediction("p1", 3, value=12.5)
    body = prediction_to_json(p, GATEWAY)
    assert body["id"] == p.id and body["seq"] == 3 and body["gateway_id"] == GATEWAY
    assert (body["asset"], body["model"], body["version"]) == ("p1", "pump-health", "1.2.0")
    assert body["sha256"] == "ab" * 32
    assert (body["value"], body["score"], body["quality"]) == (12.5, 0.875, "Good")
    assert body["timestamp"] == "2024-05-01T12:00:03.250Z"
    assert body["unit"] is None  # no units known (see test_payload_carries_units)
    assert body["inputs"] == [
        {
            "tag": "p1.vibration",
            "value": 4.5,
            "unit": None,
            "quality": "Good",
            "source_time": "2024-05-01T12:00:02.250Z",
        },
        {
            "tag": "p1.running",
            "value": True,
            "unit": None,
            "quality": "Uncertain",
            "source_time": None,
        },
    ]
    json.dumps(body, allow_nan=False)  # valid JSON as is


def test_payload_replaces_non_finite_numbers() -> None:
    p = prediction("p1", 1, value=math.nan)
    body = prediction_to_json(p, GATEWAY)
    assert body["value"] is None
    json.dumps(body, allow_nan=False)


def test_settings_reject_bad_url_and_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        MesSettings(url="ftp://127.0.0.1/x")
    with pytest.raises(ValidationError):
        MesSettings.model_validate({"url": "http://127.0.0.1/x", "retries": 3})


def test_register_adds_mes_rest_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "_loaded", True)  # only this connector, not every plugin
    monkeypatch.setattr(plugins, "_sinks", {})
    monkeypatch.setattr(plugins, "_destinations", {})
    register()
    # A destination kind, fed by the outbox: never a sink the fan-out writes to.
    assert "mes-rest" not in plugins.sink_kinds()
    kind = plugins.destination_kinds()["mes-rest"]
    assert kind.settings_model is MesSettings
    assert isinstance(
        kind.factory("m", MesSettings(url="http://127.0.0.1:1/"), context()), MesDestination
    )


# -- against the receiver: one event at a time, as the outbox relay sends them ---------------


async def send(sink: MesDestination, p: Prediction) -> Outcome:
    body = sink.encode(Trigger(p))
    (outcome,) = await sink.deliver([Envelope(p.id, body)])
    return outcome


async def test_events_arrive_with_payload_and_idempotency_key(
    receiver: MesReceiver, make_sink: SinkFactory
) -> None:
    sink = make_sink(events_url(receiver), headers={"Authorization": "Bearer t0ken"})
    await sink.start()
    batch = [prediction("p1", 1), prediction("p2", 1), prediction("p1", 2, value=3.5)]
    assert await asyncio.gather(*(send(sink, p) for p in batch)) == [None, None, None]

    by_key = {c.idempotency_key: c for c in receiver.calls}
    assert set(by_key) == {p.id for p in batch}
    for p in batch:
        # The default body: the prediction, and which rule made it an event (`every`).
        assert by_key[p.id].body == {**prediction_to_json(p, GATEWAY), "event": "prediction"}
        assert by_key[p.id].body["id"] == p.id
    health = sink.health()
    assert health.state == "ok"
    assert health.counters["sent"] == 3
    assert health.counters["in_flight"] == 0


async def test_a_500_comes_back_as_retry_then_the_next_send_is_accepted(
    receiver: MesReceiver, make_sink: SinkFactory
) -> None:
    # One POST per call: the relay owns the retries (and their cap), not the sink.
    sink = make_sink(events_url(receiver))
    await sink.start()
    receiver.fail(500, count=2)
    p = prediction("p1", 1)
    assert await send(sink, p) == Retry("HTTP 500")
    assert sink.health().state == "degraded" and "HTTP 500" in sink.health().detail
    assert await send(sink, p) == Retry("HTTP 500")
    assert await send(sink, p) is None
    assert len(receiver.calls) == 1
    counters = sink.health().counters
    assert counters["retries"] == 2
    assert counters["sent"] == 1
    assert sink.health().state == "ok"
    assert sink.capabilities.backoff == (0.02, 0.1)  # the relay spaces the retries with these


async def test_mes_down_is_a_retry_with_the_reason(make_sink: SinkFactory) -> None:
    mes = MesReceiver(port=free_port())  # not started: connection refused
    sink = make_sink(events_url(mes))
    await sink.start()
    try:
        outcome = await asyncio.wait_for(send(sink, prediction("p1", 1)), 5)
        assert isinstance(outcome, Retry) and "ConnectError" in outcome.reason
        assert sink.health().state == "degraded"
        assert "ConnectError" in sink.health().detail
        await mes.start()
        assert await send(sink, prediction("p1", 1)) is None
        assert len(mes.calls) == 1
        assert sink.health().state == "ok"
    finally:
        await mes.stop()


async def test_rejection_is_returned_not_retried(
    receiver: MesReceiver, make_sink: SinkFactory
) -> None:
    sink = make_sink(events_url(receiver))
    await sink.start()
    receiver.fail(422, count=1)
    reason = await send(sink, prediction("p1", 1))
    assert reason is not None and reason.startswith("HTTP 422")
    assert receiver.calls == []
    counters = sink.health().counters
    assert counters["rejected"] == 1
    assert counters["retries"] == 0
    assert await send(sink, prediction("p1", 2)) is None


async def test_retry_after_is_passed_to_the_relay(
    receiver: MesReceiver, make_sink: SinkFactory
) -> None:
    sink = make_sink(events_url(receiver), max_backoff_s=5.0)
    await sink.start()
    receiver.fail(503, count=1, retry_after=1)
    assert await send(sink, prediction("p1", 1)) == Retry("HTTP 503", 1.0)
    receiver.fail(429, count=1, retry_after=60)
    # The hint as the MES gave it; the relay caps it at max_backoff_s (bridge.outbox.retries).
    assert await send(sink, prediction("p1", 1)) == Retry("HTTP 429", 60.0)
    assert await send(sink, prediction("p1", 1)) is None
    assert len(receiver.calls) == 1


async def test_lost_reply_is_a_retry_and_the_resend_carries_the_same_key(
    receiver: MesReceiver, make_sink: SinkFactory
) -> None:
    sink = make_sink(events_url(receiver), timeout_s=0.3)
    await sink.start()
    receiver.set_delay(0.8)  # longer than the client timeout: the first reply is lost
    p = prediction("p1", 1)
    outcome = await asyncio.wait_for(send(sink, p), 5)
    assert isinstance(outcome, Retry) and "ReadTimeout" in outcome.reason
    await wait_until(lambda: len(receiver.calls) == 1, timeout=5, what="recorded anyway")
    receiver.set_delay(0)
    assert await send(sink, p) is None
    assert receiver.duplicate_count == 1
    assert receiver.unique_keys == {p.id}
    assert len(receiver.calls) == 1


async def test_close_is_clean_while_mes_hangs(
    receiver: MesReceiver, make_sink: SinkFactory
) -> None:
    before = asyncio.all_tasks()
    sink = make_sink(events_url(receiver), timeout_s=10)
    await sink.start()
    assert not hasattr(sink, "write")  # events only ever go through the outbox
    receiver.set_delay(10)
    delivery = asyncio.create_task(send(sink, prediction("p1", 1)))
    await wait_until(lambda: sink.health().counters["in_flight"] == 1, timeout=5, what="POST")
    delivery.cancel()  # what the relay does on shutdown: the event stays in the outbox
    with contextlib.suppress(asyncio.CancelledError):
        await delivery
    await sink.close()
    assert sink.health().state == "stopped"
    assert sink.health().counters["sent"] == 0
    assert not sink_tasks(before)
