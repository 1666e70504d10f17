"""The audit ledger in the SQL store: append-only entries chained by hash, and signed checkpoints.

**One chain per database.** Every append first updates the single row of ``audit_head``: on
PostgreSQL that locks the row until the transaction ends, on SQLite it takes the database's write
lock, so appends of every gateway on one store (a fleet) are serialised and the chain stays one
valid sequence; each entry names the gateway that wrote it. The head is only where the next
append starts: verification reads the entries and the checkpoints, never the head.

An entry can be appended inside the caller's own transaction (:func:`append_entry`), so a change
and its entry commit together or not at all.
"""

from __future__ import annotations

import builtins
import json
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Index, Integer, String, Text, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bridge.errors import StoreError

from .auditchain import (
    GENESIS,
    AuditCheckpoint,
    AuditEntry,
    NewAuditEntry,
    canonical,
    entry_hash,
    format_time,
)
from .db import Store
from .tables import _ID, Base

__all__ = [
    "AuditCheckpointRow",
    "AuditEntryRow",
    "AuditFilter",
    "AuditHeadRow",
    "AuditRepository",
    "append_entries",
    "append_entry",
    "default_writer",
    "entry_of",
]


class AuditEntryRow(Base):
    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_at", "at_us"),
        Index("ix_audit_entries_subject", "subject", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at_us: Mapped[int] = mapped_column(BigInteger)
    gateway: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(400))
    # Canonical JSON text (bridge.store.auditchain.canonical), or NULL for "none".
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(32))
    gateway: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


_HEAD = 1
_T = TypeVar("_T")
_MAX_SUBJECT = 400


@dataclass(frozen=True, slots=True)
class AuditFilter:
    since: float | None = None  # at or after (epoch seconds)
    until: float | None = None  # at or before: inclusive, like the other stores' filters
    action: str | None = None  # an action, or a prefix ending in "." ("model.")
    subject: str | None = None
    actor: str | None = None


def default_writer() -> str:
    """The ``gateway`` of entries written by a command rather than a gateway (``bridge apikeys
    create`` run on a host): ``cli@<host name>``."""
    return f"cli@{socket.gethostname()}"


def _json(value: Any) -> str | None:
    return None if value is None else canonical(value).decode("utf-8")


def entry_of(row: AuditEntryRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=format_time(row.at_us),
        gateway=row.gateway,
        actor=row.actor,
        channel=row.channel,
        action=row.action,
        subject=row.subject,
        before=None if row.before is None else json.loads(row.before),
        after=None if row.after is None else json.loads(row.after),
        reason=row.reason,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _checkpoint(row: AuditCheckpointRow) -> AuditCheckpoint:
    return AuditCheckpoint(row.seq, row.hash, row.at, row.gateway, row.public_key, row.signature)


def _lock_head(session: Session) -> tuple[int, str]:
    """Take the chain's lock (see the module docstring) and read where it ends."""
    bumped = session.execute(
        update(AuditHeadRow).where(AuditHeadRow.id == _HEAD).values(seq=AuditHeadRow.seq)
    )
    if getattr(bumped, "rowcount", 1) == 0:
        # The head row is gone (a store whose rows were deleted by hand): start from the last
        # entry rather than refuse every change from now on; verify reports what was removed.
        last = session.execute(
            select(AuditEntryRow.seq, AuditEntryRow.hash).order_by(AuditEntryRow.seq.desc())
        ).first()
        seq, hash_ = (last[0], last[1]) if last else (0, GENESIS)
        session.add(AuditHeadRow(id=_HEAD, seq=seq, hash=hash_))
        session.flush()
        return seq, hash_
    seq, hash_ = session.execute(
        select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == _HEAD)
    ).one()
    return int(seq), str(hash_)


def append_entry(
    session: Session, gateway: str, entry: NewAuditEntry, at: float | None = None
) -> AuditEntry:
    """Append ``entry`` in ``session``'s transaction: it commits with the change it records."""
    return append_entries(session, gateway, [entry], at)[0]


def append_entries(
    session: Session, gateway: str, entries: Sequence[NewAuditEntry], at: float | None = None
) -> builtins.list[AuditEntry]:
    """Append ``entries``, in order, in ``session``'s transaction, as ``append_entry`` does
    each: one lock of the head and one INSERT for all of them, so a batch (the alerts of a
    store outage, one per asset) costs about what one entry does."""
    if not entries:
        return []
    last_seq, last_hash = _lock_head(session)
    at_us = round((time.time() if at is None else at) * 1_000_000)
    made: builtins.list[AuditEntry] = []
    rows: builtins.list[dict[str, Any]] = []
    for entry in entries:
        new = AuditEntry(
            seq=last_seq + 1,
            at=format_time(at_us),
            gateway=gateway,
            actor=entry.actor[:200],
            channel=entry.channel[:32],
            action=entry.action[:64],
            subject=entry.subject[:_MAX_SUBJECT],
            before=entry.before,
            after=entry.after,
            reason=entry.reason,
            prev_hash=last_hash,
            hash="",
        )
        fields = new.fields()
        # What is stored is what is hashed: JSON values go through the canonical encoding first.
        before, after = _json(new.before), _json(new.after)
        fields["before"] = None if before is None else json.loads(before)
        fields["after"] = None if after is None else json.loads(after)
        digest = entry_hash(fields)
        rows.append(
            {
                "seq": new.seq,
                "at_us": at_us,
                "gateway": gateway,
                "actor": new.actor,
                "channel": new.channel,
                "action": new.action,
                "subject": new.subject,
                "before": before,
                "after": after,
                "reason": new.reason,
                "prev_hash": last_hash,
                "hash": digest,
            }
        )
        made.append(AuditEntry(**{**fields, "hash": digest}))
        last_seq, last_hash = new.seq, digest
    session.execute(insert(AuditEntryRow), rows)
    session.execute(
        update(AuditHeadRow).where(AuditHeadRow.id == _HEAD).values(seq=last_seq, hash=last_hash)
    )
    return made


class AuditRepository:
    """Synchronous: callers on the event loop use ``asyncio.to_thread``."""

    def __init__(self, store: Store, gateway: str) -> None:
        self._store = store
        self.gateway = gateway

    def append(self, entry: NewAuditEntry, at: float | None = None) -> AuditEntry:
        return self._write(lambda s: append_entry(s, self.gateway, entry, at), "append to")

    def add_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        row = AuditCheckpointRow(**checkpoint.to_json())
        self._write(lambda s: s.add(row), "add a checkpoint to")

    def head(self) -> tuple[int, str] | None:
        """The last entry's seq and hash, or None for an empty ledger."""

        def read(s: Session) -> tuple[int, str] | None:
            last = s.execute(
                select(AuditEntryRow.seq, AuditEntryRow.hash).order_by(AuditEntryRow.seq.desc())
            ).first()
            return None if last is None else (int(last[0]), str(last[1]))

        return self._read(read)

    def last_checkpoint(self, gateway: str | None = None) -> AuditCheckpoint | None:
        def read(s: Session) -> AuditCheckpoint | None:
            stmt = select(AuditCheckpointRow).order_by(AuditCheckpointRow.seq.desc())
            if gateway is not None:
                stmt = stmt.where(AuditCheckpointRow.gateway == gateway)
            row = s.execute(stmt.limit(1)).scalar_one_or_none()
            return None if row is None else _checkpoint(row)

        return self._read(read)

    def page(
        self,
        where: AuditFilter,
        limit: int,
        after_seq: int | None = None,
        newest_first: bool = False,
    ) -> builtins.list[AuditEntry]:
        """At most ``limit`` entries matching ``where``, from after the cursor ``after_seq`` (the
        seq of the last entry of the previous page) in seq order (or reversed)."""

        def read(s: Session) -> builtins.list[AuditEntry]:
            stmt = select(AuditEntryRow)
            c = AuditEntryRow
            if where.since is not None:
                stmt = stmt.where(c.at_us >= round(where.since * 1_000_000))
            if where.until is not None:
                stmt = stmt.where(c.at_us <= round(where.until * 1_000_000))
            if where.action is not None:
                if where.action.endswith("."):
                    stmt = stmt.where(c.action.startswith(where.action, autoescape=True))
                else:
                    stmt = stmt.where(c.action == where.action)
            if where.subject is not None:
                stmt = stmt.where(c.subject == where.subject)
            if where.actor is not None:
                stmt = stmt.where(c.actor == where.actor)
            if after_seq is not None:
                stmt = stmt.where(c.seq < after_seq if newest_first else c.seq > after_seq)
            stmt = stmt.order_by(c.seq.desc() if newest_first else c.seq).limit(limit)
            return [entry_of(r) for r in s.execute(stmt).scalars()]

        return self._read(read)

    def iter_entries(self, batch: int = 5000) -> Iterator[AuditEntry]:
        """Every entry in seq order, read ``batch`` at a time (a long chain never sits in
        memory whole)."""
        return self.iter_after(None, batch)

    def iter_after(self, after: int | None, batch: int = 5000) -> Iterator[AuditEntry]:
        """The entries after seq ``after`` in seq order, ``batch`` at a time."""
        while True:
            rows = self.page(AuditFilter(), batch, after)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].seq

    def checkpoints(self) -> builtins.list[AuditCheckpoint]:
        def read(s: Session) -> builtins.list[AuditCheckpoint]:
            stmt = select(AuditCheckpointRow).order_by(
                AuditCheckpointRow.seq, AuditCheckpointRow.id
            )
            return [_checkpoint(r) for r in s.execute(stmt).scalars()]

        return self._read(read)

    def count(self) -> int:
        count = select(func.count(AuditEntryRow.seq))
        return self._read(lambda s: int(s.execute(count).scalar_one()))

    def _read(self, fn: Callable[[Session], _T]) -> _T:
        try:
            with self._store.sessions() as session:
                return fn(session)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the audit ledger: {exc}") from exc

    def _write(self, fn: Callable[[Session], _T], what: str) -> _T:
        try:
            with self._store.sessions.begin() as session:
                return fn(session)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot {what} the audit ledger: {exc}") from exc
