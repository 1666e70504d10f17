"""What a durable destination provides. Connectors satisfy it without importing it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bridge.types import ComponentHealth, Prediction

from .rules import EventRule, Trigger

__all__ = ["BatchDestination", "OutboxDestination", "RuleDestination"]


@runtime_checkable
class OutboxDestination(Protocol):
    """A sink whose events go through the outbox instead of ``write``.

    ``encode`` is pure: the JSON body of one prediction, or None if this destination does not
    want it. ``deliver`` sends one event with ``key`` as its Idempotency-Key and owns the retry
    loop of *retryable* failures (it returns only once the event was accepted, or refused for
    good); it returns None when accepted and a short reason when the destination rejected it.
    ``concurrency`` is how many requests it may have in flight (of different assets).
    """

    name: str

    @property
    def concurrency(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> ComponentHealth: ...

    def encode(self, prediction: Prediction) -> str | None: ...

    async def deliver(self, key: str, body: str) -> str | None: ...


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
    with the meaning of ``deliver``'s; it retries retryable failures of the pairs not yet
    settled. ``batch_size`` <= 1 means the destination sends one event per request.
    """

    @property
    def batch_size(self) -> int: ...

    async def deliver_batch(self, events: Sequence[tuple[str, str]]) -> list[str | None]: ...
