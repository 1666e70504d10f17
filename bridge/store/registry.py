"""The model registry tables and their repository (synchronous; wrap in ``asyncio.to_thread``).

A version is in one state at a time (``VersionState``). Which state may follow which, and what a
move does to the model's other versions, is decided by ``bridge.lifecycle.states``: the
repository locks the model's rows, hands their states to that decision and writes what it says
(states and ``model_events``) in the same transaction.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from bridge.errors import StoreError

from .db import Store
from .tables import Base

__all__ = [
    "CANDIDATE_STATES",
    "Agreement",
    "Comparison",
    "Decide",
    "LabelledComparison",
    "ModelEvent",
    "RegistryConflict",
    "RegistryError",
    "RegistryNotFound",
    "RegistryRepository",
    "StateChanges",
    "VersionRecord",
    "VersionState",
]

_T = TypeVar("_T")

VersionState = Literal["registered", "active", "shadow", "canary", "retired", "refused"]
CANDIDATE_STATES: tuple[VersionState, ...] = ("shadow", "canary")


@dataclass(frozen=True, slots=True)
class StateChanges:
    """What one registry transition writes: the new state of each version it moves, and its
    events as (version, action, detail). Decided by ``bridge.lifecycle.states``."""

    states: Mapping[str, VersionState]
    events: tuple[tuple[str, str, Mapping[str, Any]], ...]


# Given every version of a model and its state (rows locked), what changes; None: nothing.
Decide = Callable[[Mapping[str, VersionState]], StateChanges | None]


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
        Index("ix_model_versions_name_state", "name", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str | None] = mapped_column(Text)
    spec_json: Mapped[str] = mapped_column(Text)
    reference_json: Mapped[str | None] = mapped_column(Text)
    metrics_json: Mapped[str] = mapped_column(Text)
    registered_by: Mapped[str] = mapped_column(String(200))
    registered_at: Mapped[float] = mapped_column(Double)
    state: Mapped[str] = mapped_column(String(16))
    canary_share: Mapped[float | None] = mapped_column(Double)
    canary_assets_json: Mapped[str | None] = mapped_column(Text)
    guard_json: Mapped[str | None] = mapped_column(Text)
    state_changed_at: Mapped[float] = mapped_column(Double)


class ModelEventRow(Base):
    __tablename__ = "model_events"
    __table_args__ = (Index("ix_model_events_name_id", "name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Double)
    detail: Mapped[str] = mapped_column(Text)


class ComparisonRow(Base):
    __tablename__ = "model_comparisons"
    __table_args__ = (
        Index("ix_model_comparisons_name_cand_asset", "name", "candidate_version", "asset"),
        # Operator labels find their comparison by prediction id (shadow/canary accuracy).
        Index("ix_model_comparisons_prediction", "prediction_id"),
        Index("ix_model_comparisons_timestamp", "timestamp"),  # retention (revision 0008)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    asset: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(16))
    active_version: Mapped[str] = mapped_column(String(100))
    candidate_version: Mapped[str] = mapped_column(String(100))
    prediction_id: Mapped[str] = mapped_column(String(36))
    active_value: Mapped[str | None] = mapped_column(Text)
    candidate_value: Mapped[str | None] = mapped_column(Text)
    candidate_score: Mapped[float | None] = mapped_column(Double)
    agree: Mapped[bool] = mapped_column(Boolean)
    timestamp: Mapped[float] = mapped_column(Double)
    gateway: Mapped[str] = mapped_column(String(200))


@dataclass(frozen=True, slots=True)
class VersionRecord:
    name: str
    version: str
    sha256: str
    path: str
    size_bytes: int
    signature: str | None
    spec: dict[str, Any]
    reference: dict[str, Any] | None
    metrics: dict[str, Any]
    registered_by: str
    registered_at: float
    state: VersionState
    canary_share: float | None  # percent of assets, 0..100
    canary_assets: tuple[str, ...] | None
    guard: dict[str, float] | None
    state_changed_at: float

    @property
    def is_candidate(self) -> bool:
        return self.state in CANDIDATE_STATES


@dataclass(frozen=True, slots=True)
class ModelEvent:
    name: str
    version: str
    action: str
    actor: str
    at: float
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Comparison:
    """One asset in one tick where a candidate ran beside the active version."""

    name: str
    asset: str
    mode: Literal["shadow", "canary"]
    active_version: str
    candidate_version: str
    prediction_id: str
    active_value: str | None
    candidate_value: str | None
    candidate_score: float | None
    agree: bool
    timestamp: float
    gateway: str


@dataclass(frozen=True, slots=True)
class Agreement:
    asset: str
    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


@dataclass(frozen=True, slots=True)
class LabelledComparison:
    """A comparison whose prediction an operator confirmed or rejected (the latest answer);
    ``shown`` is the value the operator judged (what was published)."""

    asset: str
    active_version: str
    action: str
    shown: str | None
    active_value: str | None
    candidate_value: str | None


def _record(row: ModelVersionRow) -> VersionRecord:
    assets = json.loads(row.canary_assets_json) if row.canary_assets_json else None
    state: Any = row.state
    return VersionRecord(
        name=row.name,
        version=row.version,
        sha256=row.sha256,
        path=row.path,
        size_bytes=int(row.size_bytes),
        signature=row.signature,
        spec=json.loads(row.spec_json),
        reference=json.loads(row.reference_json) if row.reference_json else None,
        metrics=json.loads(row.metrics_json),
        registered_by=row.registered_by,
        registered_at=row.registered_at,
        state=state,
        canary_share=row.canary_share,
        canary_assets=tuple(assets) if assets is not None else None,
        guard=json.loads(row.guard_json) if row.guard_json else None,
        state_changed_at=row.state_changed_at,
    )


class RegistryError(StoreError):
    """A registry operation that the registry's state does not allow. Raised as one of the two
    kinds below, told apart by type (the REST API answers 404 or 409), never by message text."""


class RegistryNotFound(RegistryError):
    """The model has no such version, or no active version where the operation needs one."""


class RegistryConflict(RegistryError):
    """The version exists, but the registry's state does not allow the operation now (already
    registered or active, no candidate to promote, nothing to roll back to, ...)."""


class RegistryRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- reads -----------------------------------------------------------------------------

    def list(self, name: str | None = None) -> builtins.list[VersionRecord]:
        stmt = select(ModelVersionRow).order_by(ModelVersionRow.name, ModelVersionRow.id)
        if name is not None:
            stmt = stmt.where(ModelVersionRow.name == name)
        return self._read(lambda s: [_record(r) for r in s.scalars(stmt)], "list models")

    def get(self, name: str, version: str) -> VersionRecord | None:
        def read(s: Session) -> VersionRecord | None:
            row = self._row(s, name, version)
            return _record(row) if row is not None else None

        return self._read(read, f"read model {name} {version}")

    def serving(self) -> builtins.list[VersionRecord]:
        """Active and candidate versions of every model: what the runtime polls."""
        stmt = (
            select(ModelVersionRow)
            .where(ModelVersionRow.state.in_(("active", *CANDIDATE_STATES)))
            .order_by(ModelVersionRow.name, ModelVersionRow.id)
        )
        return self._read(lambda s: [_record(r) for r in s.scalars(stmt)], "read serving models")

    def events(self, name: str, limit: int = 100) -> builtins.list[ModelEvent]:
        stmt = (
            select(ModelEventRow)
            .where(ModelEventRow.name == name)
            .order_by(ModelEventRow.id.desc())
            .limit(limit)
        )

        def read(s: Session) -> builtins.list[ModelEvent]:
            return [
                ModelEvent(r.name, r.version, r.action, r.actor, r.at, json.loads(r.detail))
                for r in s.scalars(stmt)
            ]

        return self._read(read, f"read events of {name}")

    def agreement(self, name: str, candidate_version: str) -> builtins.list[Agreement]:
        """Per asset, how often the candidate agreed with the active version (all gateways)."""
        agreed = func.sum(func.cast(ComparisonRow.agree, Integer))
        stmt = (
            select(ComparisonRow.asset, func.count(), agreed)
            .where(ComparisonRow.name == name)
            .where(ComparisonRow.candidate_version == candidate_version)
            .group_by(ComparisonRow.asset)
            .order_by(ComparisonRow.asset)
        )
        return self._read(
            lambda s: [Agreement(a, int(n), int(k or 0)) for a, n, k in s.execute(stmt)],
            f"read agreement of {name} {candidate_version}",
        )

    def labelled_comparisons(
        self, name: str, candidate_version: str
    ) -> builtins.list[LabelledComparison]:
        """Comparisons of ``candidate_version`` joined with the operator's latest confirm or
        reject of the same prediction (all gateways). Labels are few, so this stays small."""
        from .labels import PredictionLabelRow as L

        C = ComparisonRow
        latest = (
            select(L.prediction_id, func.max(L.id).label("last"))
            .where(L.model == name)
            .where(L.action.in_(("confirm", "reject")))
            .group_by(L.prediction_id)
            .subquery()
        )
        stmt = (
            select(C.asset, C.active_version, L.action, L.value, C.active_value, C.candidate_value)
            .join(latest, latest.c.prediction_id == C.prediction_id)
            .join(L, L.id == latest.c.last)
            .where(C.name == name)
            .where(C.candidate_version == candidate_version)
            .order_by(C.asset, C.id)
        )

        def read(s: Session) -> builtins.list[LabelledComparison]:
            return [
                LabelledComparison(asset, active, action, shown, a, c)
                for asset, active, action, shown, a, c in s.execute(stmt)
            ]

        return self._read(read, f"read labelled comparisons of {name} {candidate_version}")

    def prediction_counts(self, name: str) -> dict[str, dict[str, int]]:
        """Per version, stored predictions by value (label, or ``"<number>"``, or ``"<none>"``)."""
        from .tables import PredictionRow

        stmt = (
            select(
                PredictionRow.version,
                PredictionRow.value_text,
                PredictionRow.value_num.is_(None),
                func.count(),
            )
            .where(PredictionRow.model == name)
            .group_by(
                PredictionRow.version, PredictionRow.value_text, PredictionRow.value_num.is_(None)
            )
        )

        def read(s: Session) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for version, text, no_num, n in s.execute(stmt):
                key = text if text is not None else ("<none>" if no_num else "<number>")
                per = out.setdefault(version, {})
                per[key] = per.get(key, 0) + int(n)
            return out

        return self._read(read, f"count predictions of {name}")

    # -- writes ----------------------------------------------------------------------------

    def add(self, record: VersionRecord, actor: str) -> VersionRecord:
        row = ModelVersionRow(
            name=record.name,
            version=record.version,
            sha256=record.sha256,
            path=record.path,
            size_bytes=record.size_bytes,
            signature=record.signature,
            spec_json=json.dumps(record.spec, sort_keys=True),
            reference_json=json.dumps(record.reference) if record.reference is not None else None,
            metrics_json=json.dumps(record.metrics, sort_keys=True),
            registered_by=record.registered_by,
            registered_at=record.registered_at,
            state=record.state,
            canary_share=None,
            canary_assets_json=None,
            guard_json=None,
            state_changed_at=record.registered_at,
        )
        try:
            with self._store.sessions.begin() as s:
                s.add(row)
                s.flush()
                self._event(s, record.name, record.version, "register", actor, {})
                if record.state == "active":
                    self._event(s, record.name, record.version, "activate", actor, {})
        except IntegrityError as exc:
            raise RegistryConflict(
                f"model {record.name} version {record.version} is already registered: "
                "register the new file under a new version"
            ) from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot register {record.name} {record.version}: {exc}") from exc
        return _record(row)

    def transition(
        self,
        name: str,
        version: str,
        decide: Decide,
        actor: str,
        *,
        sha256: str | None = None,
        canary_share: float | None = None,
        canary_assets: Sequence[str] | None = None,
        guard: Mapping[str, float] | None = None,
    ) -> VersionRecord | None:
        """Lock the model's versions, ask ``decide`` what changes and write it. ``version`` is
        the one the caller acts on: it takes the canary settings given (any other version that
        moves loses its own: they belong to a candidate). With ``sha256`` (a gateway reporting
        a file it saw), a version that is gone or no longer that file changes nothing.
        Returns ``version``'s record, or ``None`` when nothing changed."""
        now = time.time()
        try:
            with self._store.sessions.begin() as s:
                rows = {r.version: r for r in self._versions(s, name)}
                row = rows.get(version)
                if row is None and sha256 is None:
                    raise RegistryNotFound(f"model {name} has no version {version}")
                if row is None or (sha256 is not None and row.sha256 != sha256):
                    return None
                # Rows hold the state as text; only VersionState values are ever written.
                current: dict[str, Any] = {v: r.state for v, r in rows.items()}
                changes = decide(current)
                if changes is None:
                    return None
                for moved, state in changes.states.items():
                    other = rows[moved]
                    other.state, other.state_changed_at = state, now
                    other.canary_share = other.canary_assets_json = other.guard_json = None
                if version in changes.states:
                    row.canary_share = canary_share
                    row.canary_assets_json = (
                        json.dumps(list(canary_assets)) if canary_assets is not None else None
                    )
                    row.guard_json = json.dumps(dict(guard)) if guard else None
                for at, action, detail in changes.events:
                    self._event(s, name, at, action, actor, dict(detail))
                s.flush()
                return _record(row)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot change model {name} {version}: {exc}") from exc

    def previous_active(self, name: str) -> str | None:
        """The version that was active before the current one became active."""
        stmt = (
            select(ModelEventRow)
            .where(ModelEventRow.name == name)
            .where(ModelEventRow.action.in_(("activate", "promote", "rollback")))
            .order_by(ModelEventRow.id.desc())
            .limit(1)
        )

        def read(s: Session) -> str | None:
            row = s.scalars(stmt).first()
            if row is None:
                return None
            previous = json.loads(row.detail).get("previous")
            return str(previous) if previous is not None else None

        return self._read(read, f"read history of {name}")

    def add_event(
        self, name: str, version: str, action: str, actor: str, detail: dict[str, Any]
    ) -> None:
        """Record something that changed no state, e.g. a version the runtime refused to load."""
        try:
            with self._store.sessions.begin() as s:
                self._event(s, name, version, action, actor, detail)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record event of {name} {version}: {exc}") from exc

    def add_comparisons(self, rows: Sequence[Comparison]) -> None:
        if not rows:
            return
        values = [
            {
                "name": c.name,
                "asset": c.asset,
                "mode": c.mode,
                "active_version": c.active_version,
                "candidate_version": c.candidate_version,
                "prediction_id": c.prediction_id,
                "active_value": c.active_value,
                "candidate_value": c.candidate_value,
                "candidate_score": c.candidate_score,
                "agree": c.agree,
                "timestamp": c.timestamp,
                "gateway": c.gateway,
            }
            for c in rows
        ]
        try:
            with self._store.sessions.begin() as s:
                s.execute(insert(ComparisonRow), values)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store {len(rows)} comparisons: {exc}") from exc

    # -- helpers ---------------------------------------------------------------------------

    def _read(self, fn: Callable[[Session], _T], what: str) -> _T:
        try:
            with self._store.sessions() as s:
                return fn(s)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot {what}: {exc}") from exc

    @staticmethod
    def _row(
        s: Session, name: str, version: str, for_update: bool = False
    ) -> ModelVersionRow | None:
        stmt = (
            select(ModelVersionRow)
            .where(ModelVersionRow.name == name)
            .where(ModelVersionRow.version == version)
        )
        if for_update:
            stmt = stmt.with_for_update()
        return s.scalars(stmt).one_or_none()

    @staticmethod
    def _versions(s: Session, name: str) -> builtins.list[ModelVersionRow]:
        """Every version of ``name``, locked: a transition sees the states it changes."""
        stmt = (
            select(ModelVersionRow)
            .where(ModelVersionRow.name == name)
            .order_by(ModelVersionRow.id)
            .with_for_update()
        )
        return list(s.scalars(stmt))

    @staticmethod
    def _event(
        s: Session, name: str, version: str, action: str, actor: str, detail: dict[str, Any]
    ) -> None:
        s.add(
            ModelEventRow(
                name=name,
                version=version,
                action=action,
                actor=actor,
                at=time.time(),
                detail=json.dumps(detail, sort_keys=True),
            )
        )
