"""The audit ledger's entries and how each is chained to the one before it.

An entry's ``hash`` is the sha256 (lower-case hex) of its **canonical encoding**: the JSON object
of every field but ``hash`` itself, keys sorted, no whitespace (separators ``,`` and ``:``),
non-ASCII characters as UTF-8 (not ``\\u`` escapes), no NaN or infinity, encoded as UTF-8::

    {"action":"model.activated","actor":"key:ab12cd34ef56","after":{"state":"active"},
     "at":"2026-12-04T19:30:00.123456Z","before":{"state":"registered"},"channel":"rest",
     "gateway":"bridge","prev_hash":"<hash of entry seq-1>","reason":"","seq":42,
     "subject":"model:vibration/3"}

``prev_hash`` of the first entry (seq 1) is 64 zeros. ``at`` is UTC with microseconds. Changing
any field of any entry, or the order of entries, changes a hash that a later entry (or a signed
checkpoint) holds, so the change shows; see bridge.audit.verify.

A **checkpoint** signs (Ed25519) the message ``bridge-audit-checkpoint-v1\\n<seq>\\n<hash>\\n<at>\\n
<gateway>`` (UTF-8): the hash of entry ``seq`` at the time ``at``, so a chain cut short after
that entry shows as well.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "GENESIS",
    "AuditCheckpoint",
    "AuditEntry",
    "NewAuditEntry",
    "canonical",
    "checkpoint_message",
    "entry_hash",
    "format_time",
    "parse_time",
]

GENESIS = "0" * 64

JsonValue = Any  # a JSON value: None, bool, int, float, str, list or dict of them


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    """What a change or a decision says about itself; the ledger adds seq, time and hashes.

    ``actor``: who (``key:<id>`` for an API key, ``opcua:<user>``, ``console:<user>``,
    ``mapping``, ``system``, ``cli:<user>``); ``channel``: how (rest, opcua, console, cli,
    mapping, system); ``action``: what (``model.activated``, ``apikey.created``, ...);
    ``subject``: on what (``model:<name>/<version>``, ``apikey:<id>``, ``alert:<id>``, ...).
    """

    actor: str
    channel: str
    action: str
    subject: str
    before: JsonValue = None
    after: JsonValue = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    gateway: str
    actor: str
    channel: str
    action: str
    subject: str
    before: JsonValue
    after: JsonValue
    reason: str
    prev_hash: str
    hash: str

    def fields(self) -> dict[str, JsonValue]:
        """Every field but ``hash``: what the hash is made over."""
        return {
            "seq": self.seq,
            "at": self.at,
            "gateway": self.gateway,
            "actor": self.actor,
            "channel": self.channel,
            "action": self.action,
            "subject": self.subject,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
            "prev_hash": self.prev_hash,
        }

    def to_json(self) -> dict[str, JsonValue]:
        return {**self.fields(), "hash": self.hash}

    @classmethod
    def from_json(cls, data: dict[str, JsonValue]) -> AuditEntry:
        return cls(
            seq=int(data["seq"]),
            at=str(data["at"]),
            gateway=str(data["gateway"]),
            actor=str(data["actor"]),
            channel=str(data["channel"]),
            action=str(data["action"]),
            subject=str(data["subject"]),
            before=data.get("before"),
            after=data.get("after"),
            reason=str(data.get("reason", "")),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
        )


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    seq: int
    hash: str
    at: str
    gateway: str
    public_key: str  # base64 of the raw 32-byte Ed25519 key that signed it
    signature: str  # base64

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at,
            "gateway": self.gateway,
            "public_key": self.public_key,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, data: dict[str, JsonValue]) -> AuditCheckpoint:
        return cls(
            seq=int(data["seq"]),
            hash=str(data["hash"]),
            at=str(data["at"]),
            gateway=str(data["gateway"]),
            public_key=str(data["public_key"]),
            signature=str(data["signature"]),
        )


def canonical(value: JsonValue) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def entry_hash(fields: dict[str, JsonValue]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def checkpoint_message(seq: int, hash_: str, at: str, gateway: str) -> bytes:
    return f"bridge-audit-checkpoint-v1\n{seq}\n{hash_}\n{at}\n{gateway}".encode()


def format_time(at_us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC (``...T19:30:00.123456Z``), exactly."""
    seconds, micro = divmod(at_us, 1_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{micro:06d}Z"


def parse_time(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
