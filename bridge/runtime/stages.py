"""Start/stop groups of a gateway: parts started in order and closed in reverse.

A ``Stage`` remembers which of its parts started, so a start that fails half-way closes exactly
those; a part that fails to close is logged and the others still close (what is left to close
matters more than the first error on the way down).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from bridge.runtime.tasks import TaskSet

__all__ = ["Hook", "Part", "Stage", "Tasks"]

log = structlog.get_logger(__name__)


class Part(Protocol):
    """Anything a gateway starts and later closes (sinks, relays, writers, servers)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Hook:
    """A part made of two callables, for things whose methods have other names (``stop``)."""

    name: str
    on_start: Callable[[], Awaitable[None]] = _nothing
    on_close: Callable[[], Awaitable[None]] = _nothing

    async def start(self) -> None:
        await self.on_start()

    async def close(self) -> None:
        await self.on_close()


@dataclass
class Tasks:
    """Coroutines run as named tasks of ``tasks`` while the stage runs; ``then`` runs after
    they are cancelled (e.g. to drain what a cancelled consumer left in its queue)."""

    name: str
    tasks: TaskSet
    jobs: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, Any]]]]
    then: Callable[[], None] | None = None

    async def start(self) -> None:
        for name, job in self.jobs:
            self.tasks.spawn(name, job())

    async def close(self) -> None:
        await self.tasks.cancel_named(*(name for name, _ in self.jobs))
        if self.then is not None:
            self.then()


@dataclass
class Stage:
    name: str
    parts: Sequence[Part]
    _started: list[Part] = field(default_factory=list, init=False)

    async def start(self) -> None:
        for part in self.parts:
            await part.start()
            self._started.append(part)

    async def close(self) -> None:
        while self._started:
            part = self._started.pop()
            try:
                await part.close()
            except Exception:
                log.exception("part_close_failed", stage=self.name, part=_name_of(part))


def _name_of(part: Part) -> str:
    return str(getattr(part, "name", type(part).__name__))
