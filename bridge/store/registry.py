"""The model registry tables and their repository (synchronous; wrap in ``asyncio.to_thread``).

A version is in one state at a time (``VersionState``). Which state may follow which, and what a
move does to the model's other versions, is decided by ``bridge.lifecycle.states``: the
repository locks the model's rows, hands their states to that decision and writes what it says
(states and ``model_events``) in the same transaction.

Every change is also an entry of the audit ledger (``bridge.store.audit``), appended in that
same transaction: ``model.registered``, ``model.activated``, ``model.shadow``, ``model.canary``,
``model.promoted``, ``model.rolled_back``, ``model.refused``, ``model.restored`` and
``model.retired`` (a version another one displaced), subject ``model:<name>/<version>``, with
the version's state before and after. A version a command refused (signature, hash, fit) is a
``model.refused`` entry too, though nothing changed (``record_refusal``).
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

from .audit import append_entry, default_writer
from .auditchain import NewAuditEntry
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
    "ledger_action",
    "ledger_actor",
]

_T = TypeVar("_T")

VersionState = Literal["registered", "active", "shadow", "canary", "retired", "refused"]
CANDIDATE_STATES: tuple[VersionState, ...] = ("shadow", "canary")

# Registry event actions (``model_events.action``) as audit ledger actions.
_LEDGER_ACTIONS = {
    "register": "model.registered",
    "activate": "model.activated",
    "promote": "model.promoted",
    "rollback": "model.rolled_back",
    "rollback-candidate": "model.rolled_back",
    "shadow": "model.shadow",
    "canary": "model.canary",
    "refuse": "model.refused",
    "restore": "model.restored",
}
# What a version that moves without an event of its own (displaced by another) is recorded as.
_STATE_ACTIONS = {
    "registered": "model.registered",
    "active": "model.activated",
    "shadow": "model.shadow",
    "canary": "model.canary",
    "retired": "model.retired",
    "refused": "model.refused",
}
# The runtime's own names for itself in ``model_events`` (the canary guard, the registry
# watcher recording a refusal): one ``system`` actor in the ledger.
_SYSTEM_ACTORS = frozenset({"system", "runtime", "guard"})
_CHANNELS = {"key": "rest", "cli": "cli", "opcua": "opcua", "console": "console"}


def ledger_action(action: str) -> str:
    """The ledger's name of a registry event action (``rollback-candidate`` ->
    ``model.rolled_back``); an action without one keeps its name under ``model.``."""
    return _LEDGER_ACTIONS.get(action, "model." + action.replace("-", "_"))


def ledger_actor(actor: str, channel: str | None = None) -> tuple[str, str]:
    """(actor, channel) of the ledger for an actor as the registry records it: ``key:<id>``
    (REST), ``cli:<user>``, ``mapping``, and the runtime's ``guard`` / ``runtime`` as
    ``system``. ``channel`` None: the one the actor's prefix implies (``system`` for a name
    without one, e.g. a script's)."""
    if actor in _SYSTEM_ACTORS:
        return "system", channel or "system"
    if actor == "mapping":
        return actor, channel or "mapping"
    prefix = actor.split(":", 1)[0]
    return actor, channel or _CHANNELS.get(prefix, "system")


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


def _state(row: ModelVersionRow) -> dict[str, Any]:
    """A version's state as a ledger entry's before or after: with a canary's placement and
    guard, which a new canary of the same version changes without changing the state."""
    out: dict[str, Any] = {"state": row.state}
    if row.state == "canary":
        out["share"] = row.canary_share
        out["assets"] = json.loads(row.canary_assets_json) if row.canary_assets_json else None
        out["guard"] = json.loads(row.guard_json) if row.guard_json else None
    return out


def _reason(action: str, detail: Mapping[str, Any]) -> str:
    """The reason an event gives: the operator's or the runtime's words, or for a version
    made active again after a refusal, which version was refused."""
    if "reason" in detail:
        return str(detail["reason"])
    if action == "restore" and "refused" in detail:
        return f"version {detail['refused']} was refused"
    return ""


class RegistryError(StoreError):
    """A registry operation that the registry's state does not allow. Raised as one of the two
    kinds below, told apart by type (the REST API answers 404 or 409), never by message text."""


class RegistryNotFound(RegistryError):
    """The model has no such version, or no active version where the operation needs one."""


class RegistryConflict(RegistryError):
    """The version exists, but the registry's state does not allow the operation now (already
    registered or active, no candidate to promote, nothing to roll back to, ...)."""


class RegistryRepository:
    """``gateway`` names the writer of the ledger entries: the runtime gives its gateway id;
    None is a command's ``cli@<host>``."""

    def __init__(self, store: Store, gateway: str | None = None) -> None:
        self._store = store
        self.gateway = gateway if gateway is not None else default_writer()

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

    def add(
        self, record: VersionRecord, actor: str, *, channel: str | None = None
    ) -> VersionRecord:
        """Store a new version (``model.registered``, and ``model.activated`` when it is
        stored active); ``channel`` None: the one ``actor`` implies (``ledger_actor``)."""
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
                name, version = record.name, record.version
                self._event(s, name, version, "register", actor, {})
                # A version stored active (the mapping's first) was registered, then activated:
                # two entries, as two commands would have written.
                first = "registered" if record.state == "active" else record.state
                registered = {
                    "state": first,
                    "sha256": record.sha256,
                    "signed": record.signature is not None,
                }
                self._audit(s, actor, channel, "register", name, version, None, registered, "")
                if record.state == "active":
                    self._event(s, name, version, "activate", actor, {})
                    after = {"state": "active"}
                    self._audit(
                        s, actor, channel, "activate", name, version, {"state": first}, after, ""
                    )
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
        channel: str | None = None,
    ) -> VersionRecord | None:
        """Lock the model's versions, ask ``decide`` what changes and write it. ``version`` is
        the one the caller acts on: it takes the canary settings given (any other version that
        moves loses its own: they belong to a candidate). With ``sha256`` (a gateway reporting
        a file it saw), a version that is gone or no longer that file changes nothing.
        Returns ``version``'s record, or ``None`` when nothing changed.

        Each version that moves is a ledger entry (by ``actor`` through ``channel``, None: the
        one ``actor`` implies): the events' versions under their action, the versions they
        displace as ``model.retired``."""
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
                before = {v: _state(rows[v]) for v in changes.states}
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
                    self._audit(
                        s,
                        actor,
                        channel,
                        action,
                        name,
                        at,
                        before.get(at, {"state": current.get(at)}),
                        _state(rows[at]),
                        _reason(action, detail),
                    )
                told = {at for at, _, _ in changes.events}
                for moved in changes.states:
                    if moved not in told:  # displaced by the version the caller acts on
                        self._audit(
                            s,
                            actor,
                            channel,
                            _STATE_ACTIONS.get(rows[moved].state, "model.retired"),
                            name,
                            moved,
                            before[moved],
                            _state(rows[moved]),
                            f"replaced by version {version}",
                        )
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
        self,
        name: str,
        version: str,
        action: str,
        actor: str,
        detail: dict[str, Any],
        *,
        channel: str | None = None,
    ) -> None:
        """Record something that changed no state, e.g. a version the runtime refused to load
        (a ledger entry too: the detail as its after)."""
        try:
            with self._store.sessions.begin() as s:
                self._event(s, name, version, action, actor, detail)
                reason = _reason(action, detail)
                self._audit(s, actor, channel, action, name, version, None, detail, reason)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record event of {name} {version}: {exc}") from exc

    def record_refusal(
        self,
        name: str,
        version: str,
        actor: str,
        operation: str,
        reason: str,
        *,
        channel: str | None = None,
    ) -> None:
        """A command (``operation``: register, activate, ...) refused ``version`` (signature,
        hash or fit): nothing changed, but who tried and why is a ``model.refused`` entry.
        Its after is the state (unchanged; none for a version never registered) and the
        operation refused."""
        try:
            with self._store.sessions.begin() as s:
                row = self._row(s, name, version)
                state = _state(row) if row is not None else None
                after = {**(state or {}), "refused": operation}
                self._audit(s, actor, channel, "model.refused", name, version, state, after, reason)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot record the refusal of {name} {version}: {exc}") from exc

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

    def _audit(
        self,
        s: Session,
        actor: str,
        channel: str | None,
        action: str,
        name: str,
        version: str,
        before: Any,
        after: Any,
        reason: str,
    ) -> None:
        """Append the ledger entry of a registry change in its own transaction ``s``.
        ``action``: a registry event action or already a ledger one (``model.``...)."""
        who, how = ledger_actor(actor, channel)
        what = action if action.startswith("model.") else ledger_action(action)
        entry = NewAuditEntry(who, how, what, f"model:{name}/{version}", before, after, reason)
        append_entry(s, self.gateway, entry)

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
