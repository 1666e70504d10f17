"""Where a certificate of a trust list was seen: ``<pki_dir>/seen/<thumbprint>.json``.

The trust list that checks peers records each refusal (and, at most once a minute, that a
certificate was accepted) with the peer the caller knows: the endpoint URL of a server the
gateway connects to, the address of a client that connects to the gateway. One small file per
certificate, in a folder of its own so that it follows the certificate when an operator moves it
between ``rejected/`` and ``trusted/``::

    {"thumbprint": "...", "first_seen": "2026-12-04T19:30:00Z", "last_seen": "...",
     "refused": 3, "accepted": 0, "last_outcome": "refused",
     "reason": "the trust list is empty", "peers": ["opc.tcp://plc.local:4840"]}

Bounded: at most ``_MAX_PEERS`` peers (the newest), a reason of at most ``_MAX_REASON``
characters, at most ``SEEN_CAP`` files (the ones seen longest ago go first). Each file is
replaced whole (written aside, renamed): a reader never sees half of one. Two processes that
record the same certificate at the same moment may lose one count; nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .certificates import write_atomically

__all__ = [
    "SEEN_CAP",
    "SEEN_FOLDER",
    "Outcome",
    "Sighting",
    "forget_seen",
    "read_seen",
    "record_seen",
]

Outcome = Literal["refused", "accepted"]

SEEN_FOLDER = "seen"
SEEN_CAP = 1000
_MAX_PEERS = 5
_MAX_PEER = 200
_MAX_REASON = 300
# A record is a few hundred bytes; a larger file is not one of ours and is not parsed.
_MAX_FILE_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class Sighting:
    thumbprint: str
    first_seen: datetime
    last_seen: datetime
    refused: int
    accepted: int
    last_outcome: Outcome
    reason: str  # of the last refusal; "" if it was never refused
    peers: tuple[str, ...]  # newest last

    def to_json(self) -> dict[str, Any]:
        return {
            "thumbprint": self.thumbprint,
            "first_seen": _text(self.first_seen),
            "last_seen": _text(self.last_seen),
            "refused": self.refused,
            "accepted": self.accepted,
            "last_outcome": self.last_outcome,
            "reason": self.reason,
            "peers": list(self.peers),
        }


def seen_path(pki_dir: Path, thumbprint: str) -> Path:
    return pki_dir / SEEN_FOLDER / f"{thumbprint}.json"


def read_seen(pki_dir: Path, thumbprint: str) -> Sighting | None:
    """The record of ``thumbprint``; None when there is none or it cannot be read."""
    path = seen_path(pki_dir, thumbprint)
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            return None
        data = json.loads(path.read_bytes())
        return Sighting(
            thumbprint=thumbprint,
            first_seen=_time(data["first_seen"]),
            last_seen=_time(data["last_seen"]),
            refused=int(data.get("refused", 0)),
            accepted=int(data.get("accepted", 0)),
            last_outcome="accepted" if data.get("last_outcome") == "accepted" else "refused",
            reason=str(data.get("reason", ""))[:_MAX_REASON],
            peers=tuple(str(p)[:_MAX_PEER] for p in data.get("peers", []))[-_MAX_PEERS:],
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def record_seen(
    pki_dir: Path,
    thumbprint: str,
    outcome: Outcome,
    *,
    peer: str | None = None,
    reason: str = "",
    times: int = 1,
    at: datetime | None = None,
    cap: int = SEEN_CAP,
) -> Sighting:
    """Add ``times`` sightings with ``outcome`` (from ``peer``, if known) to the record of
    ``thumbprint``. Raises ``OSError`` when it cannot be written: the caller decides whether
    that matters (a refusal must not turn into a crash)."""
    now = (at or datetime.now(UTC)).replace(microsecond=0)
    before = read_seen(pki_dir, thumbprint)
    peers = [p for p in (before.peers if before else ()) if p != peer]
    if peer:
        peers.append(peer[:_MAX_PEER])
    sighting = Sighting(
        thumbprint=thumbprint,
        first_seen=before.first_seen if before else now,
        last_seen=now,
        refused=(before.refused if before else 0) + (times if outcome == "refused" else 0),
        accepted=(before.accepted if before else 0) + (times if outcome == "accepted" else 0),
        last_outcome=outcome,
        reason=reason[:_MAX_REASON] if outcome == "refused" else (before.reason if before else ""),
        peers=tuple(peers[-_MAX_PEERS:]),
    )
    path = seen_path(pki_dir, thumbprint)
    data = json.dumps(sighting.to_json(), separators=(",", ":")).encode()
    write_atomically(path, data)
    if before is None:
        _prune(path.parent, cap, keep=path)
    return sighting


def forget_seen(pki_dir: Path, thumbprint: str) -> None:
    seen_path(pki_dir, thumbprint).unlink(missing_ok=True)


def _prune(folder: Path, cap: int, keep: Path) -> None:
    """Only when a record is added: a listing per new certificate, not per sighting."""
    records = [p for p in folder.glob("*.json") if p != keep]
    excess = len(records) + 1 - cap
    if excess <= 0:
        return

    def age(p: Path) -> int:
        try:
            return p.stat().st_mtime_ns
        except OSError:
            return 0

    for old in sorted(records, key=age)[:excess]:
        old.unlink(missing_ok=True)


def _text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(text: Any) -> datetime:
    parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
