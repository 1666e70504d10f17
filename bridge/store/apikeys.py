"""API keys in the SQL store: only the sha256 of each key is kept (see bridge.auth.keys).

Creating and revoking a key are entries of the audit ledger (``apikey.created``,
``apikey.revoked``, subject ``apikey:<key_id>``), appended in the change's own transaction.
An entry names the key's name and scope, never the key or its hash.
"""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass

from sqlalchemy import Double, Integer, String, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bridge.auth import ApiKeyError, Scope, generate_key, keys_match, parse_key_id
from bridge.errors import StoreError

from .audit import append_entry, default_writer
from .auditchain import NewAuditEntry
from .db import Store
from .tables import Base

__all__ = ["ApiKeyRecord", "ApiKeyRepository", "ApiKeyRow"]

MAX_NAME = 200


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME))
    scope: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    revoked_at: Mapped[float | None] = mapped_column(Double)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    name: str
    scope: Scope
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _record(row: ApiKeyRow) -> ApiKeyRecord:
    scope = Scope.parse(row.scope)
    return ApiKeyRecord(row.key_id, row.name, scope, row.created_at, row.revoked_at)


def _described(row: ApiKeyRow, state: str) -> dict[str, str]:
    # What the ledger says of a key: never the key, nor its hash (the ledger is exported and
    # mirrored to files; a hash there would only help someone guessing keys offline).
    return {"name": row.name, "scope": row.scope, "state": state}


class ApiKeyRepository:
    """Synchronous: callers on the event loop use ``asyncio.to_thread``. ``gateway`` names
    the writer of the ledger entries (the gateway serving the REST API; None: a command's
    ``cli@<host>``)."""

    def __init__(self, store: Store, gateway: str | None = None) -> None:
        self._store = store
        self.gateway = gateway if gateway is not None else default_writer()

    def create(
        self, name: str, scope: Scope, *, actor: str = "system", channel: str = "system"
    ) -> tuple[ApiKeyRecord, str]:
        """A new key: its record and the key itself (not stored: it cannot be shown again).
        Its ``apikey.created`` entry (by ``actor`` through ``channel``) commits with it."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise ValueError(f"a key name must be 1 to {MAX_NAME} characters")
        for _ in range(3):  # a key_id collision (48 random bits) is unlikely; retry, don't fail
            new = generate_key()
            row = ApiKeyRow(
                key_id=new.key_id,
                name=name,
                scope=scope.label,
                key_hash=new.key_hash,
                created_at=time.time(),
                revoked_at=None,
            )
            try:
                with self._store.sessions.begin() as session:
                    session.add(row)
                    # Flushed first: a key_id collision fails here, before the entry, and
                    # the retry's entry is the only one.
                    session.flush()
                    after = _described(row, "active")
                    self._audit(session, actor, channel, "apikey.created", row, None, after, "")
            except IntegrityError:
                continue
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot store API key: {exc}") from exc
            return _record(row), new.key
        raise StoreError("cannot store API key: key id collisions")

    def list(self, include_revoked: bool = False) -> builtins.list[ApiKeyRecord]:
        stmt = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if not include_revoked:
            stmt = stmt.where(ApiKeyRow.revoked_at.is_(None))
        try:
            with self._store.sessions() as session:
                return [_record(r) for r in session.scalars(stmt)]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot list API keys: {exc}") from exc

    def revoke(
        self,
        key_id: str,
        *,
        actor: str = "system",
        channel: str = "system",
        reason: str = "",
    ) -> ApiKeyRecord | None:
        """Revoke now; None if there is no such key. Revoking twice keeps the first time.
        The ``apikey.revoked`` entry (by ``actor`` through ``channel``) commits with the
        revocation; revoking a revoked key changes nothing and records nothing."""
        try:
            with self._store.sessions.begin() as session:
                row = session.scalars(
                    select(ApiKeyRow).where(ApiKeyRow.key_id == key_id).with_for_update()
                ).one_or_none()
                if row is None:
                    return None
                if row.revoked_at is None:
                    row.revoked_at = time.time()
                    before, after = _described(row, "active"), _described(row, "revoked")
                    self._audit(
                        session, actor, channel, "apikey.revoked", row, before, after, reason
                    )
                return _record(row)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot revoke API key {key_id}: {exc}") from exc

    def _audit(
        self,
        session: Session,
        actor: str,
        channel: str,
        action: str,
        row: ApiKeyRow,
        before: dict[str, str] | None,
        after: dict[str, str],
        reason: str,
    ) -> None:
        entry = NewAuditEntry(actor, channel, action, f"apikey:{row.key_id}", before, after, reason)
        append_entry(session, self.gateway, entry)

    def authenticate(self, key: str) -> ApiKeyRecord | None:
        """The active key's record, or None (unknown, revoked, malformed or wrong secret)."""
        try:
            key_id = parse_key_id(key)
        except ApiKeyError:
            return None
        try:
            with self._store.sessions() as session:
                row = session.scalars(
                    select(ApiKeyRow).where(ApiKeyRow.key_id == key_id)
                ).one_or_none()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot check API key: {exc}") from exc
        if row is None or row.revoked_at is not None or not keys_match(key, row.key_hash):
            return None
        return _record(row)
