"""Recently verified API keys, so a request costs no database read in the common case."""

from __future__ import annotations

import asyncio
import time

from bridge.auth import hash_key
from bridge.store.apikeys import ApiKeyRecord, ApiKeyRepository

from .queries import QueryRunner

__all__ = ["KeyCache"]


class KeyCache:
    """Recently verified keys, so a request costs no database read in the common case.

    Only successful checks are kept, by the key's sha256 (never the key), for ``ttl_s``: a key
    revoked through the API stops working at once (``forget``), one revoked from the CLI (another
    process) within ``ttl_s``. Bounded: when full it starts over.
    """

    def __init__(
        self,
        repo: ApiKeyRepository,
        ttl_s: float = 5.0,
        size: int = 1024,
        queries: QueryRunner | None = None,
    ) -> None:
        self.repo = repo
        self._queries = queries
        self._ttl_s = ttl_s
        self._size = size
        self._entries: dict[str, tuple[float, ApiKeyRecord]] = {}

    async def authenticate(self, key: str) -> ApiKeyRecord | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._entries.get(digest)
        if hit is not None and now < hit[0]:
            return hit[1]
        # A database read: keep it off the event loop, on the API's own threads.
        if self._queries is not None:
            record = await self._queries.run(self.repo.authenticate, key)
        else:
            record = await asyncio.to_thread(self.repo.authenticate, key)
        if record is None:
            self._entries.pop(digest, None)
            return None
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[digest] = (now + self._ttl_s, record)
        return record

    def forget(self) -> None:
        self._entries.clear()
