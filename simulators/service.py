"""What every simulator shares: ``start()``/``stop()`` and ``async with``."""

from __future__ import annotations

from typing import Self

__all__ = ["Service"]


class Service:
    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
