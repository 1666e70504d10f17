"""Continuation points of HistoryRead that carry their read's state (``_history``).

Signed with HMAC-SHA256 under a key made at start, bound to the node and the request's details,
valid until they expire: the server keeps nothing per read (asyncua gives the history manager
no session, so a table per session was impossible, and one global table can be flooded). A
released point is remembered until it would have expired, so that memory is bounded.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncua import ua

from bridge.types import HistoryKey

__all__ = ["CURSOR_TTL_S", "Cursor", "Cursors", "fingerprint_of"]

# A continuation point expires this long after it was handed out (a released one is
# remembered until then, so a bounded number of them).
CURSOR_TTL_S = 600.0


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a read goes on. Raw: ``started`` once the start bound is sent (or none was asked
    for), ``done`` once every value is (only the end bound left), ``key`` the last value sent,
    ``count`` the values sent so far. Processed: ``count`` is the next interval."""

    started: bool = False
    done: bool = False
    key: HistoryKey | None = None
    count: int = 0


_VERSION = 1
_BODY = struct.Struct("<BBdqqd8s")  # version, flags, key ts, key id, count, expiry, fingerprint
_MAC = 16


class Cursors:
    """Continuation points that carry their read's state, signed (HMAC-SHA256, key made at
    start): nothing is kept per read. One is valid for the node and request it was made for,
    until it expires or is released."""

    def __init__(self, ttl_s: float = CURSOR_TTL_S, clock: Callable[[], float] = time.time):
        self._key = secrets.token_bytes(32)
        self._ttl_s = ttl_s
        self._clock = clock
        self._released: dict[bytes, float] = {}  # mac -> expiry

    def issue(self, fingerprint: bytes, cursor: Cursor) -> bytes:
        flags = cursor.started | cursor.done << 1 | (cursor.key is not None) << 2
        ts, row = cursor.key if cursor.key is not None else (0.0, 0)
        expiry = self._clock() + self._ttl_s
        body = _BODY.pack(_VERSION, flags, ts, row, cursor.count, expiry, fingerprint)
        return body + self._mac(body)

    def open(self, point: bytes, fingerprint: bytes) -> Cursor | None:
        """The cursor of a valid point, else None (forged, expired, released, other read)."""
        if len(point) != _BODY.size + _MAC:
            return None
        body, mac = point[: _BODY.size], point[_BODY.size :]
        if not hmac.compare_digest(mac, self._mac(body)) or mac in self._released:
            return None
        version, flags, ts, row, count, expiry, bound = _BODY.unpack(body)
        if version != _VERSION or bound != fingerprint or expiry < self._clock():
            return None
        key = (ts, row) if flags & 4 else None
        return Cursor(bool(flags & 1), bool(flags & 2), key, count)

    def release(self, point: bytes) -> None:
        now = self._clock()
        for mac, expiry in list(self._released.items()):
            if expiry < now:  # expired points are refused anyway
                del self._released[mac]
        self._released[point[_BODY.size :]] = _BODY.unpack(point[: _BODY.size])[5]

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC]


def fingerprint_of(nodeid: ua.NodeId, details: Any, aggregate: ua.NodeId | None) -> bytes:
    """What a continuation point is bound to: the node and the request's details."""
    if isinstance(details, ua.ReadRawModifiedDetails):
        what = (
            f"raw|{details.IsReadModified}|{details.StartTime}|{details.EndTime}|"
            f"{details.NumValuesPerNode}|{details.ReturnBounds}"
        )
    else:
        what = (
            f"processed|{details.StartTime}|{details.EndTime}|{details.ProcessingInterval!r}|"
            f"{aggregate.to_string() if aggregate is not None else ''}"
        )
    return hashlib.sha256(f"{nodeid.to_string()}|{what}".encode()).digest()[:8]
