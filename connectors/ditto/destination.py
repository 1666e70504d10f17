"""Eclipse Ditto destination: each asset a thing, kept current through the gateway's outbox.

``encode`` makes an event's twin commands (``protocol.py``), with the chosen tags' latest values
from the tag table (``tagcache.py``), and the outbox keeps them. ``deliver`` sends them once
through the transport the mapping chose (``mqtt.py`` or ``http.py``), with ``correlation-id``
the event's Idempotency-Key, and before a thing's first event since start the command that
creates (or replaces) the thing with its attributes. It says what came of each event: accepted,
rejected (a refused publish, an HTTP 4xx) or ``Retry``; the relay owns the retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from bridge.destination import DestinationContext, Envelope, Outcome, Retry
from bridge.errors import ConnectorError
from bridge.types import AssetInfo, ComponentHealth, PredictionSlot, TagReading, Trigger

from .config import DittoSettings
from .protocol import command, event_body, parse_body, thing_json, with_correlation
from .tagcache import TagCache

if TYPE_CHECKING:
    from .http import HttpTransport
    from .mqtt import MqttTransport

__all__ = ["DittoDestination"]

log = structlog.get_logger(__name__)


def _units_of(slots: Sequence[PredictionSlot]) -> dict[tuple[str, str], str]:
    """(asset, tag name) -> unit of the models' inputs."""
    return {(s.asset, tag): unit for s in slots for tag, unit in s.input_units if unit}


class DittoDestination:
    """``bridge.destination.Destination`` writing one Ditto thing per asset."""

    def __init__(self, name: str, settings: DittoSettings, context: DestinationContext) -> None:
        self.name = name
        self.settings = settings
        self.capabilities = settings.capabilities()
        self._gateway_id = context.gateway_id
        self._slots: tuple[PredictionSlot, ...] = tuple(context.slots)
        self._units = _units_of(self._slots)
        self._assets: dict[str, AssetInfo] = {a.asset: a for a in context.assets}
        self._where = f"outputs.{name}"
        self._tls_key = context.key_of(name, "http") + ".tls"
        telemetry = settings.telemetry
        self._tags: TagCache | None = None
        if telemetry is not None and context.tags is not None:
            self._tags = TagCache(context.tags, tuple(telemetry.tags), telemetry.interval_s)
        # Made by start(): the transport modules load only when the destination runs.
        self._transport: MqttTransport | HttpTransport | None = None
        self._created: set[str] = set()  # things created (or replaced) since start
        self._started = False
        self._closed = False
        self._last_error = ""
        self._counters = {"sent": 0, "retries": 0, "rejected": 0, "things": 0, "skipped": 0}

    async def start(self) -> None:
        if self._closed:
            raise ConnectorError(f"ditto destination {self.name!r} is closed")
        if self._started:
            return
        if self.settings.mqtt is not None:
            from .mqtt import MqttTransport

            self._transport = MqttTransport(self.name, self.settings, f"{self._where}.mqtt")
        else:
            from .http import HttpTransport

            assert self.settings.http is not None
            http = HttpTransport(self.name, self.settings.http, self._tls_key)
            await http.start()
            self._transport = http
        if self._tags is not None:
            self._tags.start(self.name)
        self._started = True
        log.info(
            "ditto_destination_started",
            destination=self.name,
            transport=self.settings.transport,
            namespace=self.settings.namespace,
        )

    async def follow_slots(self, slots: Sequence[PredictionSlot]) -> None:
        """``bridge.types.FollowsSlots``: a reload's slots (units, models) go into things
        created from now on, and every thing is written again with them."""
        self._slots = tuple(slots)
        self._units = _units_of(self._slots)
        self._created.clear()

    async def follow_context(self, context: DestinationContext) -> None:
        """``bridge.destination.FollowsContext``: a reload's templates and descriptions go into
        things created from now on, and every thing is written again with them."""
        assets = {a.asset: a for a in context.assets}
        if assets != self._assets:
            self._assets = assets
            self._created.clear()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tags is not None:
            await self._tags.close()
        if self._transport is not None:
            await self._transport.close()
        log.info("ditto_destination_closed", destination=self.name, **self._counters)

    def health(self) -> ComponentHealth:
        counters = dict(self._counters)
        if self._transport is not None:
            counters.update(self._transport.counters)
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if not self._started:
            return ComponentHealth(self.name, "starting", counters=counters)
        if self._last_error:
            return ComponentHealth(self.name, "degraded", f"retrying: {self._last_error}", counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    def encode(self, event: Trigger) -> str:
        return event_body(self.settings, event, self._telemetry(event))

    def _telemetry(self, event: Trigger) -> list[TagReading]:
        """The chosen tags' latest readings; a tag the prediction was made from as it saw it
        (the twin then shows the values behind its prediction, not ones up to
        ``telemetry.interval_s`` older or newer)."""
        telemetry = self.settings.telemetry
        if telemetry is None:
            return []
        p = event.prediction
        readings = dict(self._tags.of(p.asset)) if self._tags is not None else {}
        chosen = set(telemetry.tags)
        prefix = f"{p.asset}."
        for snap in p.inputs:
            name = snap.tag.removeprefix(prefix)
            if name == snap.tag or (chosen and name not in chosen):
                continue
            known = readings.get(name)
            unit = known.unit if known is not None else self._units.get((p.asset, name))
            readings[name] = TagReading(
                snap.tag,
                p.asset,
                name,
                snap.value,
                unit,
                snap.quality,
                snap.source_time,
                p.timestamp,
            )
        return list(readings.values())

    def _create(self, asset: str, model: str, key: str) -> dict[str, Any]:
        s = self.settings
        models = (model,) if model else ()
        thing = thing_json(s, asset, self._gateway_id, self._slots, models, self._assets.get(asset))
        return command(s.namespace, s.thing_name(asset), "modify", "/", thing, key)

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        transport = self._transport
        if transport is None:
            raise ConnectorError(f"ditto destination {self.name!r} is not started")
        outcomes: list[Outcome] = [None] * len(batch)
        sends: list[tuple[str, list[dict[str, Any]]]] = []
        at: list[int] = []  # index in ``batch`` of each send
        things: list[str] = []
        for i, (key, body) in enumerate(batch):
            event = parse_body(body)
            messages = [with_correlation(m, key) for m in event.commands]
            if not messages:
                self._counters["skipped"] += 1  # a historical prediction: nothing to write
                continue
            thing = self.settings.thing_id(event.asset)
            if thing not in self._created:
                messages.insert(0, self._create(event.asset, event.model, key))
            sends.append((event.asset, messages))
            at.append(i)
            things.append(thing)
        results = await transport.send(sends) if sends else []
        for i, thing, (outcome, missing) in zip(at, things, results, strict=True):
            outcomes[i] = outcome
            if missing:
                self._created.discard(thing)
            if outcome is None:
                if thing not in self._created:
                    self._created.add(thing)
                    self._counters["things"] += 1
                self._counters["sent"] += 1
            elif isinstance(outcome, Retry):
                self._failed(outcome.reason)
            else:
                self._counters["rejected"] += 1
                log.warning("ditto_event_rejected", destination=self.name, reason=outcome)
        if self._last_error and not any(isinstance(o, Retry) for o in outcomes):
            log.info("ditto_recovered", destination=self.name, after_error=self._last_error)
            self._last_error = ""
        return outcomes

    def _failed(self, reason: str) -> None:
        self._counters["retries"] += 1
        if not self._last_error:  # once per outage: the reasons name each thing's request
            log.warning("ditto_failing", destination=self.name, error=reason)
        self._last_error = reason
