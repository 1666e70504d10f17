"""What a durable destination provides. Connectors satisfy it without importing it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from bridge.types import ComponentHealth, Prediction

from .rules import EventRule, Trigger

__all__ = [
    "BackoffDestination",
    "BatchDestination",
    "OutboxDestination",
    "Outcome",
    "Retry",
    "RuleDestination",
]


@dataclass(frozen=True, slots=True)
class Retry:
    """A failure that may pass (5xx, 408/425/429, timeout, refused connection): send it later.

    ``after_s`` is the destination's own hint (an HTTP ``Retry-After``), if it gave one. The
    relay decides when to send it again and when to give up (``bridge.outbox.policy``).
    """

    reason: str
    after_s: float | None = None


# What one send came to: None accepted, a string the reason of a rejection (a non-retryable
# answer), ``Retry`` a failure that may pass.
Outcome: TypeAlias = str | Retry | None


@runtime_checkable
class OutboxDestination(Protocol):
    """A sink whose events go through the outbox instead of ``write``.

    ``encode`` is pure: the JSON body of one prediction, or None if this destination does not
    want it. ``deliver`` sends one event with ``key`` as its Idempotency-Key, once: it returns
    None when accepted, a short reason when the destination rejected it, and ``Retry`` when
    the failure may pass (the relay owns the retries, so one failing event never holds back
    the others). A destination that returns only None or a reason retries inside ``deliver``.
    ``concurrency`` is how many requests it may have in flight (of different assets).
    """

    name: str

    @property
    def concurrency(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> ComponentHealth: ...

    def encode(self, prediction: Prediction) -> str | None: ...

    async def deliver(self, key: str, body: str) -> Outcome: ...


@runtime_checkable
class BackoffDestination(Protocol):
    """A destination that says how the relay should space its retries: ``(first delay, cap)``
    in seconds; the delay doubles per failure of an event, with jitter."""

    @property
    def backoff(self) -> tuple[float, float]: ...


@runtime_checkable
class RuleDestination(Protocol):
    """A destination with event rules: the core decides which predictions become events (in the
    store transaction, see ``bridge.outbox.rules``) and ``encode_event`` shapes each body."""

    @property
    def rules(self) -> Sequence[EventRule]: ...

    def encode_event(self, trigger: Trigger) -> str: ...


@runtime_checkable
class BatchDestination(Protocol):
    """A destination that can take several events (of different assets) in one request.

    ``deliver_batch`` gets ``(key, body)`` pairs and returns one outcome per pair, in order,
    with the meaning of ``deliver``'s (one request; ``Retry`` for the pairs to send again).
    ``batch_size`` <= 1 means the destination sends one event per request.
    """

    @property
    def batch_size(self) -> int: ...

    async def deliver_batch(self, events: Sequence[tuple[str, str]]) -> list[Outcome]: ...
