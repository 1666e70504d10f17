"""The one contract of a durable destination (MES REST, webhook, ...): a connector implements
``Destination``, registers a ``DestinationKind`` (``bridge.plugins``) and is fed only through
the outbox.

Who owns what: the core decides which predictions become events (the destination's declared
``rules``, evaluated in the store transaction), keeps every event in the outbox until it is
accepted, and owns retries, their spacing, per-asset ordering and dead letters (the relay,
``bridge.outbox.relay``). The destination only shapes a body (``encode``, pure) and sends a
batch once (``deliver``), saying what came of each event.

Optional capabilities are plain declared values (``Capabilities``), read once by the core, so
a destination is one class with one shape and nothing is probed with ``isinstance``.

Kernel level: it imports only ``bridge.types`` and ``bridge.eventrules``, so connectors use it
without reaching the outbox package or the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeAlias, runtime_checkable

from bridge.eventrules import EventRule
from bridge.types import (
    AssetInfo,
    ComponentHealth,
    PredictionSlot,
    SampleFeed,
    TagInfo,
    TagReader,
    Trigger,
)

__all__ = [
    "Capabilities",
    "Destination",
    "DestinationContext",
    "Envelope",
    "FollowsContext",
    "Outcome",
    "Retry",
]


@dataclass(frozen=True, slots=True)
class Retry:
    """A failure that may pass (5xx, 408/425/429, timeout, refused connection): send it later.

    ``after_s`` is the destination's own hint (an HTTP ``Retry-After``), if it gave one. The
    relay decides when to send it again and when to give up (``bridge.outbox.retries``).
    """

    reason: str
    after_s: float | None = None


# What one event's send came to: None accepted, a string the reason of a rejection (a
# non-retryable answer), ``Retry`` a failure that may pass.
Outcome: TypeAlias = str | Retry | None


class Envelope(NamedTuple):
    """One event as the outbox keeps it: ``key`` is its Idempotency-Key (the same on every
    attempt, so a receiver can discard a repeat whose first reply was lost), ``body`` what
    ``encode`` made of it."""

    key: str
    body: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    """How a destination wants to be fed; the defaults suit a plain one-event-per-request peer.

    ``concurrency``: requests in flight at once (of different assets; one asset never has two).
    ``batch_size``: events per ``deliver`` call; 1 gives ``deliver`` one event at a time, more
    gives it up to that many events, each of a different asset.
    ``backoff``: ``(first delay, cap)`` in seconds of the relay's retries of this destination's
    events; None takes the relay's defaults (``gateway.outbox``).
    ``rules``: which predictions become events (``bridge.eventrules``), evaluated by the core;
    ``encode`` then shapes every event they select, and drift alerts reach the destination
    when a rule is ``every`` or ``alerts``. None: every prediction is offered to ``encode``,
    which returns None for those it does not want, and every drift alert is sent with the
    core's drift body (``bridge.drift.events``).
    """

    concurrency: int = 1
    batch_size: int = 1
    backoff: tuple[float, float] | None = None
    rules: tuple[EventRule, ...] | None = None


@dataclass(frozen=True, slots=True)
class DestinationContext:
    """What the gateway tells a destination it builds: who is sending (``gateway_id``, in
    bodies and headers), the (asset, model) pairs it serves, ``tags`` (the tag table, for a
    destination that publishes tag values too), and ``setting_keys``: where a
    setting of this destination is written in the mapping when it is not in an ``outputs:``
    block of its own (the drift webhook: ``{"tls": "drift.webhook_tls"}``), so messages name
    the key the operator has to fix.

    The mapping's facts about the plant, for a destination that describes it (a digital twin,
    the lakehouse's context table): ``assets`` (each asset's template and description, in the
    mapping's order), ``tag_infos`` (each tag's unit, scale, offset, clamp, source and address)
    and ``revision``, the sha256 of the mapping file. Empty where they are not known (tools,
    tests). A mapping reload hands the new ones to a destination that follows them
    (``FollowsContext``); one without it keeps those it was built with."""

    gateway_id: str
    slots: tuple[PredictionSlot, ...] = ()
    setting_keys: tuple[tuple[str, str], ...] = ()
    # The gateway's tag table, for a destination that also publishes tag values (live, not
    # through the outbox); None where there is no table (tools, tests).
    tags: TagReader | None = None
    # Every applied sample as it is applied (``bridge.types.SampleFeed``), for a destination
    # that keeps each value (the lakehouse); None where there is no tag table.
    samples: SampleFeed | None = None
    assets: tuple[AssetInfo, ...] = ()
    tag_infos: tuple[TagInfo, ...] = ()
    revision: str = ""
    # ``gateway.api.public_url`` when the gateway serves its API: where brokers fetch the
    # documents connectors publish (bridge.plugins.register_document); None otherwise.
    public_url: str | None = None

    def key_of(self, name: str, setting: str) -> str:
        """The mapping key of ``setting`` of the destination called ``name``."""
        return dict(self.setting_keys).get(setting, f"outputs.{name}.{setting}")


@runtime_checkable
class FollowsContext(Protocol):
    """A destination whose bodies or tables carry the mapping's facts (``assets``,
    ``tag_infos``, ``revision`` of ``DestinationContext``): a mapping reload that does not
    restart it hands it the new context (after the new slots, ``bridge.types.FollowsSlots``,
    if it follows those too). Called on the event loop: it must only keep what it is given (no
    I/O); the context's ``tags`` and ``samples`` are the ones it was built with."""

    async def follow_context(self, context: DestinationContext) -> None: ...


class Destination(Protocol):
    """A durable destination, fed by the outbox relay and never by the prediction fan-out.

    ``encode`` is pure: the body of one event (a prediction, or why it became an event), or
    None if this destination does not want it. ``deliver`` sends a batch (one event unless
    ``capabilities.batch_size`` says more) once and returns one outcome per envelope, in
    order: it never retries by itself. An exception from ``deliver`` is a bug: the relay
    counts it as a rejection of every event of the batch.
    """

    name: str

    @property
    def capabilities(self) -> Capabilities: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> ComponentHealth: ...

    def encode(self, event: Trigger) -> str | None: ...

    async def deliver(self, batch: Sequence[Envelope]) -> Sequence[Outcome]: ...
