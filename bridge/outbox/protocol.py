"""What a durable destination provides. Connectors satisfy it without importing it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from bridge.types import ComponentHealth, Prediction

__all__ = ["OutboxDestination"]


@runtime_checkable
class OutboxDestination(Protocol):
    """A sink whose events go through the outbox instead of ``write``.

    ``encode`` is pure: the JSON body of one prediction, or None if this destination does not
    want it. ``deliver`` sends one event with ``key`` as its Idempotency-Key and owns the retry
    loop of *retryable* failures (it returns only once the event was accepted, or refused for
    good); it returns None when accepted and a short reason when the destination rejected it.
    ``concurrency`` is how many events it may have in flight (of different assets).
    """

    name: str

    @property
    def concurrency(self) -> int: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> ComponentHealth: ...

    def encode(self, prediction: Prediction) -> str | None: ...

    async def deliver(self, key: str, body: str) -> str | None: ...
