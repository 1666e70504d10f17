"""Sparkplug B 3.0 edge node destination: the gateway is one edge node, each asset one device.

Session (one per MQTT connection, ``clean_start`` and session expiry 0 as the spec asks): the
will is an NDEATH carrying the bdSeq taken from ``BdSeqStore`` for this connect; then the node
subscribes to its NCMD (and the primary host's STATE), publishes NBIRTH (seq 0, the same bdSeq)
and one DBIRTH per asset naming every metric with its alias, datatype and unit. DDATA then
names metrics by alias only; ``seq`` runs 0..255 over every message of the node.

Fed by the outbox relay like every durable destination: ``deliver`` publishes one DDATA per
event and answers ``Retry`` when the broker is unreachable (the link is dropped, so the next
delivery reconnects and births again) or while the primary host is offline (the outbox holds
the data). One lock serialises births, data batches and the NDEATH, so a host never sees data
between an NBIRTH and the DBIRTH of its device.

Metrics of a device, per model (aliases unique in the edge node, numbered over the sorted
(asset, model) pairs so the same slots always give the same aliases):
``Prediction/<model>/Label`` (String, classifiers) or ``/Value`` (Double, regressors, engUnit),
``/Score`` (Double), ``/ModelVersion`` (String), ``/Quality`` (String), ``/DriftScore``
(Double), ``/Id`` (String). Node metrics: ``Gateway/Version``, ``Gateway/Id`` (String).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import aiomqtt
import structlog

from bridge.connectors.mqtt.link import Link, open_link
from bridge.connectors.mqtt.sparkplug.codec import (
    BdSeqStore,
    DataType,
    DataValue,
    MessageType,
    MetricSpec,
    MetricValue,
    SeqCounter,
    SparkplugError,
    data_payload,
    device_birth,
    node_birth,
    node_death_payload,
    parse_state,
    rebirth_requested,
    state_topic,
    topic,
    validate_id,
)
from bridge.connectors.mqtt.sparkplug.config import SparkplugSettings
from bridge.destination import DestinationContext, Envelope, Outcome, Retry
from bridge.errors import ConnectorError
from bridge.types import ComponentHealth, PredictionSlot, Trigger

__all__ = [
    "BirthRefused",
    "Layout",
    "SlotMetrics",
    "SparkplugEdgeNode",
    "build_layout",
    "event_body",
]

log = structlog.get_logger(__name__)

BATCH_SIZE = 64
FIRST_NODE_ALIAS = 1
SUBSCRIBE_TIMEOUT_S = 5.0

# (body key, metric name suffix, datatype) of every metric of one (asset, model), after the
# model's own value (Label or Value).
_COMMON_FIELDS: tuple[tuple[str, str, DataType], ...] = (
    ("score", "Score", DataType.DOUBLE),
    ("version", "ModelVersion", DataType.STRING),
    ("quality", "Quality", DataType.STRING),
    ("drift", "DriftScore", DataType.DOUBLE),
    ("id", "Id", DataType.STRING),
)


def _now_ms() -> int:
    return round(time.time() * 1000)


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _gateway_version() -> str:
    try:
        return version("bridge-gateway")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"


# ---- metric layout --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotMetrics:
    """The metrics of one (asset, model): ``fields`` are (body key, alias, datatype)."""

    asset: str
    model: str
    version: str
    specs: tuple[MetricSpec, ...]
    fields: tuple[tuple[str, int, DataType], ...]


@dataclass(frozen=True, slots=True)
class Layout:
    """Every metric the edge node births: node metrics with their values, and per device (asset)
    the metrics of each of its models."""

    node: tuple[tuple[MetricSpec, MetricValue], ...]
    slots: dict[tuple[str, str], SlotMetrics]

    def devices(self) -> dict[str, list[SlotMetrics]]:
        by_asset: dict[str, list[SlotMetrics]] = {}
        for key in sorted(self.slots):
            by_asset.setdefault(key[0], []).append(self.slots[key])
        return by_asset


def _slot_metrics(slot: PredictionSlot, first_alias: int) -> SlotMetrics:
    prefix = f"Prediction/{slot.model}"
    # Labels mean a classifier (its value is a String); without, a regressor (a Double).
    own = (
        ("label", "Label", DataType.STRING) if slot.labels else ("value", "Value", DataType.DOUBLE)
    )
    specs: list[MetricSpec] = []
    fields: list[tuple[str, int, DataType]] = []
    for offset, (key, suffix, datatype) in enumerate((own, *_COMMON_FIELDS)):
        properties = {"engUnit": slot.unit} if key == "value" and slot.unit else {}
        alias = first_alias + offset
        specs.append(MetricSpec(f"{prefix}/{suffix}", alias, datatype, properties))
        fields.append((key, alias, datatype))
    return SlotMetrics(slot.asset, slot.model, slot.version, tuple(specs), tuple(fields))


def build_layout(slots: Iterable[PredictionSlot], gateway_id: str, gateway_version: str) -> Layout:
    """Aliases: node metrics first, then each (asset, model) in sorted order, so the same slots
    give the same aliases in every session (a host may cache them)."""
    node_metrics: tuple[tuple[str, MetricValue], ...] = (
        ("Gateway/Version", gateway_version),
        ("Gateway/Id", gateway_id),
    )
    node = tuple(
        (MetricSpec(name, FIRST_NODE_ALIAS + i, DataType.STRING), value)
        for i, (name, value) in enumerate(node_metrics)
    )
    alias = FIRST_NODE_ALIAS + len(node)
    unique = {(slot.asset, slot.model): slot for slot in slots}
    by_key: dict[tuple[str, str], SlotMetrics] = {}
    for key in sorted(unique):
        validate_id(key[0], f"asset {key[0]!r} as a Sparkplug device id")
        by_key[key] = _slot_metrics(unique[key], alias)
        alias += len(by_key[key].specs)
    return Layout(node, by_key)


# ---- event bodies ---------------------------------------------------------------------------


def event_body(event: Trigger) -> str:
    """What one DDATA needs, as compact JSON (the outbox keeps it as the event's body)."""
    p = event.prediction
    body: dict[str, Any] = {
        "asset": p.asset,
        "model": p.model,
        "id": p.id,
        "version": p.version,
        "quality": p.quality.label,
        "score": _finite(p.score),
        "drift": _finite(p.drift_score),
        "timestamp_ms": round(p.timestamp * 1000),
    }
    if p.historical:  # made for a past time: DDATA metrics with is_historical
        body["historical"] = True
    if isinstance(p.value, str):
        body["label"] = p.value
    elif p.value is not None:
        body["value"] = _finite(float(p.value))
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def _fits(datatype: DataType, value: object) -> bool:
    if datatype is DataType.STRING:
        return isinstance(value, str)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _data_values(metrics: SlotMetrics, body: dict[str, Any]) -> list[DataValue]:
    stamp = int(body["timestamp_ms"])
    historical = bool(body.get("historical", False))
    values = []
    for key, alias, datatype in metrics.fields:
        value = body.get(key)
        # A value of the wrong kind (a label from a model born as a regressor) goes as null:
        # the birth's datatype is a promise to every host.
        values.append(
            DataValue(alias, datatype, value if _fits(datatype, value) else None, stamp, historical)
        )
    return values


# ---- the destination ------------------------------------------------------------------------


class BirthRefused(aiomqtt.MqttError):
    """The broker refused a birth (its ACL): the session ends like a lost one, with this reason."""


@dataclass(eq=False)
class _Session:
    """One MQTT connection and what belongs to it alone."""

    link: Link
    bdseq: int
    born: bool = False
    host_online: bool | None = None  # None: no STATE seen yet
    host_stamp: int = -1  # timestamp of the newest STATE seen
    host_seen: asyncio.Event = field(default_factory=asyncio.Event)
    listener: asyncio.Task[None] | None = None


class SparkplugEdgeNode:
    """``bridge.destination.Destination``: a Sparkplug B edge node on one broker."""

    def __init__(self, name: str, settings: SparkplugSettings, context: DestinationContext) -> None:
        self.name = name
        self.settings = settings
        self._where = f"outputs.{name}"
        self.capabilities = settings.capabilities(BATCH_SIZE)
        self.layout = build_layout(context.slots, context.gateway_id, _gateway_version())
        self._bdseq = BdSeqStore(Path(settings.bdseq_path))
        self._seq = SeqCounter()
        # Last value of every device metric, so a rebirth carries the current state.
        self._values: dict[int, MetricValue | datetime | None] = {
            alias: metrics.version if key == "version" else None
            for metrics in self.layout.slots.values()
            for key, alias, _ in metrics.fields
        }
        self._session: _Session | None = None
        self._sending = asyncio.Lock()  # births, a data batch or an NDEATH: one at a time
        self._connecting = asyncio.Lock()
        self._starter: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = ""
        self._in_flight = 0
        self._counters = {
            "births": 0,
            "data": 0,
            "rebirths": 0,
            "held": 0,
            "retries": 0,
            "rejected": 0,
            "refused": 0,
            "connects": 0,
        }

    # -- topics

    def _topic(self, kind: MessageType, device: str | None = None) -> str:
        return topic(self.settings.group_id, kind, self.settings.edge_node_id, device)

    # -- lifecycle

    async def start(self) -> None:
        # A Sparkplug node births as soon as it can (hosts show it online without data); a broker
        # that is down costs a Retry of the first delivery, not the gateway's start.
        self._closed = False
        self._starter = asyncio.create_task(self._first_connect(), name=f"{self.name}-connect")

    async def _first_connect(self) -> None:
        with contextlib.suppress(ConnectorError):
            await self._ensure()

    async def close(self) -> None:
        self._closed = True
        if self._starter is not None:
            self._starter.cancel()
            await asyncio.gather(self._starter, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await self._end(session, "closed", death=True)

    def health(self) -> ComponentHealth:
        counters = {**self._counters, "in_flight": self._in_flight}
        session = self._session
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", self._last_error, counters)
        if session is None:
            return ComponentHealth(self.name, "starting", "not connected yet", counters)
        if not self._may_send(session):
            return ComponentHealth(self.name, "degraded", self._held_reason(), counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    def encode(self, event: Trigger) -> str | None:
        return event_body(event)

    # -- session

    def _may_send(self, session: _Session) -> bool:
        return self.settings.primary_host_id is None or session.host_online is True

    def _held_reason(self) -> str:
        return f"primary host {self.settings.primary_host_id} offline: holding data"

    async def _ensure(self) -> _Session:
        async with self._connecting:
            if self._session is not None:
                return self._session
            return await self._connect()

    async def _connect(self) -> _Session:
        # Off the loop: the store fsyncs the file and its directory.
        bdseq = await asyncio.to_thread(self._bdseq.next_for_connect)
        will = aiomqtt.Will(
            self._topic(MessageType.NDEATH), node_death_payload(bdseq), qos=1, retain=False
        )
        try:
            link = await open_link(
                self.settings,
                self.name,
                self._where,
                will=will,
                clean_start=True,
                # Sparkplug 3.0: a clean session that ends with the connection.
                extra_properties={"SessionExpiryInterval": 0},
            )
        except ConnectorError as exc:
            self._note_error(str(exc))
            raise
        session = _Session(link, bdseq)
        try:
            await self._subscribe(link)
        except aiomqtt.MqttError as exc:
            await link.close(timeout_s=1.0)
            raise self._note_error(f"subscribing on {self._where} failed: {exc}") from exc
        except BaseException:  # cancelled by close(): no session owns the link yet
            await link.close(timeout_s=1.0)
            raise
        # The session is current before its listener runs: a STATE read at once may birth.
        self._session = session
        session.listener = asyncio.create_task(self._listen(session), name=f"{self.name}-ncmd")
        self._counters["connects"] += 1
        log.info("sparkplug_connected", destination=self.name, bdseq=bdseq)
        if self.settings.primary_host_id is not None:
            # The retained STATE comes right after the subscription; none within the wait:
            # the host counts as offline until it says otherwise.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.primary_host_wait_s):
                    await session.host_seen.wait()
        if self._may_send(session):
            await self._birth_or_end(session)
        return session

    async def _subscribe(self, link: Link) -> None:
        topics = [self._topic(MessageType.NCMD)]
        if self.settings.primary_host_id is not None:
            topics.append(state_topic(self.settings.primary_host_id))
        for name in topics:
            await link.client.subscribe(name, qos=1, timeout=SUBSCRIBE_TIMEOUT_S)

    async def _end(self, session: _Session, reason: str, *, death: bool) -> None:
        """End ``session``: an explicit NDEATH first when ``death`` (a clean end, which the
        will does not cover), then a normal DISCONNECT. The NDEATH goes even before births are
        confirmed (a stop during births): it says exactly what the will would have said."""
        if self._session is session:
            self._session = None
        if death:
            with contextlib.suppress(TimeoutError, aiomqtt.MqttError):
                async with asyncio.timeout(self.settings.publish_timeout_s):
                    async with self._sending:
                        payload = node_death_payload(session.bdseq, _now_ms())
                        await self._publish(session, self._topic(MessageType.NDEATH), payload)
        session.born = False
        listener = session.listener
        if listener is not None and listener is not asyncio.current_task():
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        await session.link.close(timeout_s=1.0)
        log.info("sparkplug_session_ended", destination=self.name, reason=reason)

    # -- births

    async def _birth_or_end(self, session: _Session) -> None:
        """Births for ``session`` unless it has them; a failure ends the session."""
        try:
            await self._birth(session, again=False)
        except aiomqtt.MqttError as exc:
            await self._end(session, "births failed", death=False)
            raise self._note_error(f"births on {self._where} failed: {exc}") from exc

    async def _birth(self, session: _Session, *, again: bool) -> None:
        async with self._sending:
            if self._session is not session or (session.born and not again):
                return
            stamp = _now_ms()
            messages = [
                (
                    self._topic(MessageType.NBIRTH),
                    node_birth(self._seq.birth(), stamp, self.layout.node, session.bdseq),
                )
            ]
            for asset, models in self.layout.devices().items():
                metrics = [
                    (spec, self._values.get(spec.alias)) for slot in models for spec in slot.specs
                ]
                payload = device_birth(self._seq.next(), stamp, metrics)
                messages.append((self._topic(MessageType.DBIRTH, asset), payload))
            refusals = await self._publish_all(session, messages)
            refused = [
                (name, why) for (name, _), why in zip(messages, refusals, strict=True) if why
            ]
            if refused:
                name, why = refused[0]
                self._counters["refused"] += len(refused)
                raise BirthRefused(
                    f"the broker refused the birth on {name}: {why} (its ACL must let the "
                    f"gateway's identity write spBv1.0/{self.settings.group_id}/#)"
                )
            session.born = True
        self._counters["births"] += 1
        log.info("sparkplug_births", destination=self.name, bdseq=session.bdseq, again=again)

    async def _publish(self, session: _Session, name: str, payload: bytes) -> str:
        """Publish once: "" when the broker took it, else its reason for refusing (an ACL)."""
        self._in_flight += 1
        try:
            return await session.link.client.publish_checked(
                name,
                payload,
                qos=self.settings.qos,
                retain=False,
                ack_timeout_s=self.settings.publish_timeout_s,
            )
        finally:
            self._in_flight -= 1

    async def _publish_all(
        self, session: _Session, messages: Sequence[tuple[str, bytes]]
    ) -> list[str]:
        """Publish in order: each task hands its message to paho in its first step, and tasks
        start in creation order, so the wire order is the seq order while the PUBACKs are
        awaited together. Raises the first failure, once all have settled; returns each
        message's refusal ("" where the broker took it)."""
        results = await asyncio.gather(
            *(self._publish(session, name, payload) for name, payload in messages),
            return_exceptions=True,
        )
        refusals: list[str] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            refusals.append(result)
        return refusals

    # -- commands and host state

    async def _listen(self, session: _Session) -> None:
        reason = "the connection ended"
        try:
            async for message in session.link.client.messages:
                if not await self._on_message(session, message):
                    return
        except aiomqtt.MqttError as exc:
            reason = f"connection lost: {exc}"
        if self._session is session and not self._closed:
            self._note_error(f"{self._where}: {reason}")
            await self._end(session, reason, death=False)

    async def _on_message(self, session: _Session, message: aiomqtt.Message) -> bool:
        """Act on an NCMD or a STATE; False once the session has ended."""
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            if message.topic.value == self._topic(MessageType.NCMD):
                if rebirth_requested(payload) and self._may_send(session):
                    self._counters["rebirths"] += 1
                    await self._birth(session, again=True)
            else:
                await self._on_state(session, payload)
        except SparkplugError as exc:
            log.warning("sparkplug_bad_message", topic=message.topic.value, error=str(exc))
        except aiomqtt.MqttError as exc:
            self._note_error(f"births on {self._where} failed: {exc}")
            await self._end(session, "births failed", death=False)
        return self._session is session

    async def _on_state(self, session: _Session, payload: bytes) -> None:
        state = parse_state(payload)
        if state.timestamp < session.host_stamp:
            # Spec: a STATE older than the one we hold is stale (an old session's will that
            # arrived after the host came back): it says nothing about the host now.
            log.info("sparkplug_stale_state", destination=self.name, online=state.online)
            return
        session.host_stamp = state.timestamp
        was_online = session.host_online
        session.host_online = state.online
        session.host_seen.set()
        log.info("sparkplug_host_state", destination=self.name, online=state.online)
        if state.online and not session.born:
            # Spec: an edge node waiting for its primary host births when the host comes online.
            await self._birth(session, again=False)
        elif not state.online and was_online:
            # Spec: when the primary host goes offline the edge node ends its session (NDEATH);
            # the next delivery reconnects and holds data until the host is back.
            await self._end(session, "primary host offline", death=True)

    # -- delivery

    def _note_error(self, reason: str) -> ConnectorError:
        if reason != self._last_error:
            log.warning("sparkplug_failing", destination=self.name, error=reason)
        self._last_error = reason
        return ConnectorError(reason)

    def _unknown(self, event: dict[str, Any]) -> str:
        # No birth named its metrics: a host could not read it, and a retry cannot change that.
        self._counters["rejected"] += 1
        return (
            f"asset {event.get('asset')!r} model {event.get('model')!r} is not in the births "
            f"of {self._where} (not a configured prediction slot)"
        )

    def _retry(self, reason: str) -> Retry:
        self._counters["retries"] += 1
        return Retry(reason)

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        if self._closed:
            return [self._retry(f"{self._where} is closed") for _ in batch]
        try:
            session = await self._ensure()
            if self._may_send(session) and not session.born:
                await self._birth_or_end(session)
        except ConnectorError as exc:
            return [self._retry(str(exc)) for _ in batch]
        if not self._may_send(session):
            self._counters["held"] += len(batch)
            return [self._retry(self._held_reason()) for _ in batch]
        return await self._send_data(session, batch)

    async def _send_data(self, session: _Session, batch: Sequence[Envelope]) -> list[Outcome]:
        outcomes: list[Outcome] = [None] * len(batch)
        sent: list[tuple[int, list[DataValue]]] = []  # (index in batch, its metrics)
        messages: list[tuple[str, bytes]] = []
        async with self._sending:
            if self._session is not session or not session.born:
                return [self._retry(f"{self._where}: the session ended") for _ in batch]
            for i, envelope in enumerate(batch):
                event = json.loads(envelope.body)
                metrics = self.layout.slots.get((event.get("asset"), event.get("model")))
                if metrics is None:
                    outcomes[i] = self._unknown(event)
                    continue
                values = _data_values(metrics, event)
                payload = data_payload(self._seq.next(), _now_ms(), values)
                messages.append((self._topic(MessageType.DDATA, metrics.asset), payload))
                sent.append((i, values))
            try:
                refusals = await self._publish_all(session, messages)
            except aiomqtt.MqttError as exc:
                reason = f"publish on {self._where} failed: {exc}"
                await self._end(session, reason, death=False)
                self._note_error(reason)
                for i, _ in sent:
                    outcomes[i] = self._retry(reason)
                return outcomes
        accepted = 0
        for (i, values), refused in zip(sent, refusals, strict=True):
            if refused:
                self._counters["refused"] += 1
                outcomes[i] = (
                    f"the broker refused the DDATA: {refused} (its ACL must let the gateway's "
                    f"identity write spBv1.0/{self.settings.group_id}/#)"
                )
                continue
            if not values[0].is_historical:  # a rebirth carries the current state, not the past
                self._values.update((value.alias, value.value) for value in values)
            accepted += 1
        self._counters["data"] += accepted
        if self._last_error:
            log.info("sparkplug_recovered", destination=self.name, after_error=self._last_error)
            self._last_error = ""
        return outcomes
