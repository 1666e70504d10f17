"""The gateway's ``outputs:`` by name, and what a mapping reload does to them.

Two families share the section: live sinks (the HMI's OPC UA server), written by the prediction
fan-out, and durable destinations (MES REST), fed through the store's outbox, each with its own
feed and relay (``bridge.outbox.wiring``). ``Outputs`` builds both at start and, on a reload,
starts an added output, stops a removed one and restarts a changed one alone; an unchanged one
is the same object with the same relay (an HMI's session and monitored items go on). Outputs
that follow the gateway's (asset, model) pairs (``bridge.types.FollowsSlots``: the HMI server's
nodes, the MES bodies' units) are handed the new pairs instead of being restarted, and
destinations that describe the plant (``bridge.destination.FollowsContext``: the lakehouse's
context table, the twins) the new assets, tags and mapping revision.

A removed destination's undelivered events stay in the store's outbox (``bridge outbox list``);
the reload counts them and says so. They are sent if a destination of that name comes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from bridge import plugins
from bridge.config.resolved import Endpoint
from bridge.destination import DestinationContext, FollowsContext
from bridge.errors import BridgeError
from bridge.outbox.feed import OutboxFeed
from bridge.outbox.relay import Relay
from bridge.outbox.wiring import Durable, durable_for
from bridge.prepare import Prepared, slots_of
from bridge.runtime.alarms import StoreAlarms
from bridge.runtime.alertsink import AlertSink
from bridge.runtime.fanout import PredictionFanout
from bridge.runtime.plantfacts import asset_infos, tag_infos
from bridge.store.alerts import AlertRepository
from bridge.store.db import Store
from bridge.store.hmihistory import StoreHmiHistory
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink
from bridge.types import (
    ComponentHealth,
    FeedbackService,
    FollowsSlots,
    PredictionSlot,
    SampleFeed,
    Sink,
    SinkContext,
    TagReader,
)

__all__ = ["Outputs", "OutputsChange", "slots_of"]

log = structlog.get_logger(__name__)

# Called with the durable destinations' feeds that want drift alerts, after every change.
AlertFeedsHook = Callable[[Sequence[OutboxFeed]], None]


@dataclass(frozen=True)
class OutputsChange:
    """What a reload did to the outputs; ``kept_outbox``: undelivered events of each removed
    (or restarted) destination, kept in the store."""

    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    kept_outbox: dict[str, int] = field(default_factory=dict)


@dataclass
class _Built:
    sinks: dict[str, Sink]
    durables: dict[str, Durable]
    context: DestinationContext | None = None  # the destinations' (None: none was built)


class Outputs:
    """The running outputs; a part of the gateway's ``sinks`` stage (started after the store
    writer, closed before it). ``sinks`` is the fan-out's list of live outputs, changed in
    place."""

    name = "outputs"

    def __init__(
        self,
        prepared: Prepared,
        store: Store,
        fanout: PredictionFanout,
        store_sink: StoreSink,
        alerts: AlertSink,
        feedback: FeedbackService | None,
        tags: TagReader | None = None,
        samples: SampleFeed | None = None,
    ) -> None:
        self._store = store
        self._tags = tags
        self._samples = samples
        self._fanout = fanout
        self._store_sink = store_sink
        self._alerts = alerts
        self._feedback = feedback
        # The HMI server's HistoryRead reads the store, stopped like the API's history reads.
        self._history = StoreHmiHistory(store, prepared.mapping.gateway.api.query_timeout_s)
        self._gateway_id = prepared.mapping.gateway.id
        # The stored alerts behind the HMI server's alarms (acknowledged there, as over REST).
        alerts_repo = AlertRepository(
            store, prepared.mapping.gateway.api.query_timeout_s, gateway=self._gateway_id
        )
        self._alarms = StoreAlarms(alerts_repo, OutboxRepository(store))
        self._slots = slots_of(prepared)
        built = self._build(prepared, self._slots, list(prepared.mapping.outputs))
        self.sinks: list[Sink] = list(built.sinks.values())
        # Every live sink and every destination, changed in place like ``sinks``: those that
        # show model versions get the registry's statuses (``bridge.runtime.live_models``).
        self.all_outputs: list[object] = []
        self._sinks: dict[str, Sink] = built.sinks
        self._durables: dict[str, Durable] = built.durables
        self.alert_feed_hooks: list[AlertFeedsHook] = []
        self._started: list[str] = []
        self._fanout_sinks()
        store_sink.set_outbox(self.feeds)

    @property
    def slots(self) -> tuple[PredictionSlot, ...]:
        return self._slots

    @property
    def feeds(self) -> list[OutboxFeed]:
        return [f for d in self._durables.values() for f in d.feeds]

    @property
    def alert_feeds(self) -> list[OutboxFeed]:
        return [f for d in self._durables.values() for f in d.alert_feeds]

    def relays(self) -> list[Relay]:
        return [r for d in self._durables.values() for r in d.relays]

    def health(self) -> list[ComponentHealth]:
        """Each live sink, each destination and its relay (backlog, dead letters, budget)."""
        out = [s.health() for s in self._sinks.values()]
        for durable in self._durables.values():
            out.extend(probe() for probe in durable.probes)
        return out

    async def start(self) -> None:
        try:
            for name in [*self._sinks, *self._durables]:
                await self._start(name)
        except BaseException:
            await self.close()  # what started closes: the stage did not see this part start
            raise

    async def close(self) -> None:
        # Destinations first (as before: their relays read the store), then the HMI server.
        for name in reversed(self._started[:]):
            await self._stop(name)

    async def apply(self, new: Prepared, changed: Sequence[str]) -> OutputsChange:
        """A mapping reload: outputs ``changed`` (and those added or removed, found here by
        name) restart, start or stop; every other output follows the new slots in place.

        New outputs are built before anything stops (a factory that refuses its settings
        leaves the running outputs untouched). The outputs that stay follow the new slots
        first, so an asset a reload adds has its nodes before its first prediction."""
        old_names = set(self._sinks) | set(self._durables)
        new_names = [n for n in new.mapping.outputs if _kind_known(new.mapping.outputs[n])]
        added = [n for n in new_names if n not in old_names]
        removed = [n for n in old_names if n not in new_names]
        redo = [n for n in new_names if n in old_names and n in changed]
        slots = slots_of(new)
        built = await asyncio.to_thread(self._build, new, slots, [*added, *redo])
        self._slots = slots

        holds = {name: m.alerts for name, m in new.mapping.models.items()}
        self._alerts.follow(slots, new.mapping.models)
        for name, sink in self._sinks.items():
            if name not in redo and name not in removed and isinstance(sink, FollowsSlots):
                await _follow(name, sink, slots)
        for name, durable in self._durables.items():
            if name in redo or name in removed:
                continue
            for feed in durable.feeds:
                if feed.selector is not None:
                    feed.selector.follow(slots, holds)
            for destination in durable.destinations:
                if isinstance(destination, FollowsSlots):
                    await _follow(name, destination, slots)
        # Destinations that describe the plant take the new assets, tags and revision (the
        # facts of a 100,000-tag mapping take a while: off the loop, once).
        followers = [
            (name, destination)
            for name, durable in self._durables.items()
            if name not in redo and name not in removed
            for destination in durable.destinations
            if isinstance(destination, FollowsContext)
        ]
        if followers:
            context = built.context
            if context is None:
                context = await asyncio.to_thread(self._context_of, new, slots)
            for name, destination in followers:
                await _follow_context(name, destination, context)

        kept: dict[str, int] = {}
        for name in [*removed, *redo]:
            # A restarted destination sends what it left itself; a removed one leaves it.
            left = await self._stop(name, forget=True, count=name in removed)
            if left is not None:
                kept[name] = left
        failed: list[str] = []
        for name in [*added, *redo]:
            if name in built.sinks:
                self._sinks[name] = built.sinks[name]
            else:
                self._durables[name] = built.durables[name]
            try:
                await self._start(name)
            except Exception as exc:  # e.g. the HMI port taken: the rest of the reload stands
                log.error("output_start_failed", output=name, error=str(exc))
                failed.append(name)
                part = self._sinks.pop(name, None) or self._durables.pop(name, None)
                try:
                    if part is not None:
                        await part.close()  # what it started before it failed
                except Exception:
                    log.exception("output_close_failed", output=name)
        self._fanout_sinks()
        self._store_sink.set_outbox(self.feeds)
        for hook in self.alert_feed_hooks:
            hook(self.alert_feeds)
        return OutputsChange(
            tuple(n for n in added if n not in failed),
            tuple(removed),
            tuple(n for n in redo if n not in failed),
            tuple(failed),
            kept,
        )

    def _build(
        self, prepared: Prepared, slots: Sequence[PredictionSlot], names: list[str]
    ) -> _Built:
        """Outputs ``names`` of ``prepared`` (constructors do no I/O; off the loop on a reload:
        a connector imports its libraries when it first makes one)."""
        mapping = prepared.mapping
        sink_kinds = plugins.sink_kinds()
        destination_kinds = plugins.destination_kinds()
        context = SinkContext(
            self._gateway_id,
            tuple(slots),
            feedback=self._feedback,
            history=self._history,
            alarms=self._alarms,
        )
        sinks: dict[str, Sink] = {}
        durables: dict[str, Durable] = {}
        context_of: DestinationContext | None = None
        # The gateway id names the outbox leases: a restarted gateway takes its own back at once.
        repo = OutboxRepository(self._store, holder=self._gateway_id)
        holds = {name: m.alerts for name, m in mapping.models.items()}
        for name in names:
            out = mapping.outputs[name]
            if out.kind in sink_kinds:
                sinks[name] = sink_kinds[out.kind].factory(out.name, out.settings, context)
            elif out.kind in destination_kinds:
                kind = destination_kinds[out.kind]
                context_of = context_of or self._context_of(prepared, slots)
                dest = kind.factory(out.name, out.settings, context_of)
                durables[name] = durable_for([dest], repo, mapping.gateway.outbox, slots, holds)
        return _Built(sinks, durables, context_of)

    def _context_of(
        self, prepared: Prepared, slots: Sequence[PredictionSlot]
    ) -> DestinationContext:
        """What a destination is told: the gateway, its slots, the tag table and the mapping's
        facts about the plant (blocking: a large mapping's tags take a while)."""
        mapping = prepared.mapping
        api = mapping.gateway.api
        return DestinationContext(
            self._gateway_id,
            tuple(slots),
            tags=self._tags,
            samples=self._samples,
            assets=asset_infos(mapping),
            tag_infos=tag_infos(mapping),
            revision=mapping.revision,
            public_url=api.public_url if api.enabled else None,
        )

    def _fanout_sinks(self) -> None:
        # The store writer last: it may hold the runner back (backpressure), and the live
        # sinks (the HMI server) should have each prediction meanwhile.
        self.sinks[:] = list(self._sinks.values())
        self._fanout.sinks = [self._alerts, *self.sinks, self._store_sink]
        self.all_outputs[:] = [
            *self.sinks,
            *(d for durable in self._durables.values() for d in durable.destinations),
        ]

    async def _start(self, name: str) -> None:
        sink = self._sinks.get(name)
        if sink is not None:
            await sink.start()
        else:
            await self._durables[name].start()  # seeds stateful rules, destination, relay
        self._started.append(name)

    async def _stop(self, name: str, *, forget: bool = False, count: bool = False) -> int | None:
        """Close output ``name`` (``forget``: and drop it); with ``count``, the undelivered
        events a destination leaves in the outbox."""
        was_started = name in self._started
        if was_started:
            self._started.remove(name)
        sink = self._sinks.pop(name, None) if forget else self._sinks.get(name)
        if sink is not None:
            if forget:
                self._fanout_sinks()  # written no more before it closes
            if was_started:
                try:
                    await sink.close()
                except Exception:
                    log.exception("output_close_failed", output=name)
            return None
        durable = self._durables.pop(name, None) if forget else self._durables.get(name)
        if durable is None:
            return None
        if forget:
            self._store_sink.set_outbox(self.feeds)  # no new events for it
            for hook in self.alert_feed_hooks:
                hook(self.alert_feeds)
        if was_started:
            await durable.close()
        if not count:
            return None
        try:
            left = await asyncio.to_thread(OutboxRepository(self._store).pending_count, name)
        except BridgeError as exc:
            log.warning("outbox_count_failed", destination=name, error=str(exc))
            return None
        log.info("outbox_rows_kept", destination=name, undelivered=left)
        return left


async def _follow(name: str, output: FollowsSlots, slots: Sequence[PredictionSlot]) -> None:
    try:
        await output.follow_slots(slots)
    except Exception:  # one output's trouble must not stop the reload of the others
        log.exception("output_follow_slots_failed", output=name)


async def _follow_context(name: str, output: FollowsContext, context: DestinationContext) -> None:
    try:
        await output.follow_context(context)
    except Exception:  # as above
        log.exception("output_follow_context_failed", output=name)


def _kind_known(out: Endpoint) -> bool:
    return out.kind in plugins.output_kinds()
