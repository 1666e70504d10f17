"""Fleet leases in the store: who is alive, who serves which asset, and the fencing check.

One heartbeat of a gateway is one transaction (``LeaseRepository.beat``), on the database's
clock (so the gateways' clocks need not agree):

1. its member row moves on to ``now + lease_s``; the live members are those not expired;
2. the caller says which assets it should serve among those members (rendezvous hashing,
   ``bridge.fleet.hashing``): it **takes** those that are free (never held, expired, or held by
   a gateway that is not alive), raising their generation; it **claims** those a live gateway
   still holds; it **hands over** those it holds that another live gateway claimed and it
   should not serve (their generation goes up, the claimant holds them); it **renews** the rest
   of its own;
3. it reads what it holds now: asset -> generation, the fencing tokens of its predictions.

Every write is one conditional UPDATE over many assets: two gateways racing for an asset are
serialised by the row lock, and the loser's condition no longer matches (PostgreSQL re-checks
it on the row's new version under READ COMMITTED).

``refuse_stale`` runs in the store writer's transaction: a prediction is kept only while its
asset's lease still has the prediction's generation and this gateway's name. On PostgreSQL the
lease rows are read ``FOR SHARE``: a hand-over waits for the batch to commit, or the batch
reads the lease as the hand-over left it, never a mix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bridge.errors import StoreError
from bridge.types import Prediction

from .db import Store
from .sql import insert_ignoring
from .tables import AssetLeaseRow, FleetMemberRow

__all__ = ["Beat", "Lease", "LeaseRepository", "Member", "refuse_stale"]

# Assets per IN list: well under SQLite's bound-parameter limit and PostgreSQL's comfort.
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Beat:
    """What one heartbeat found: the database time, the live members (sorted), what this
    gateway holds now (asset -> generation), what changed hands in this beat, the assets it
    should serve that another live gateway still holds (``wanted``) and, of those, the ones it
    has claimed."""

    now: float
    members: tuple[str, ...]
    held: dict[str, int]
    taken: tuple[str, ...]
    handed_over: tuple[str, ...]
    wanted: tuple[str, ...]
    claimed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Member:
    gateway_id: str
    boot_id: str
    started_at: float
    heartbeat_at: float
    expires_at: float
    assets: int


@dataclass(frozen=True, slots=True)
class Lease:
    asset: str
    holder: str
    generation: int
    expires_at: float
    claimed_by: str
    taken_at: float


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def db_now(session: Session, dialect: str) -> float:
    """Epoch seconds on the database's clock (PostgreSQL); this host's clock on SQLite, whose
    database is a file on this host."""
    if dialect == "postgresql":
        return float(
            session.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        )
    return time.time()


class LeaseRepository:
    def __init__(self, store: Store) -> None:
        self._store = store

    def beat(
        self,
        gateway_id: str,
        boot_id: str,
        assets: Sequence[str],
        lease_s: float,
        desired: Callable[[tuple[str, ...]], Collection[str]],
        started_at: float,
        claimable: Callable[[str], bool] = lambda asset: True,
    ) -> Beat:
        """One heartbeat (see the module's docstring). ``desired(members)`` names the assets
        this gateway should serve among ``members``; an asset another live gateway holds is
        claimed only once ``claimable(asset)`` (the claimant's windows are warm)."""
        me = gateway_id
        try:
            with self._store.sessions.begin() as s:
                now = db_now(s, self._store.dialect)
                until = now + lease_s
                self._member(s, me, boot_id, started_at, now, until)
                members = tuple(
                    sorted(
                        s.scalars(
                            select(FleetMemberRow.gateway_id).where(FleetMemberRow.expires_at > now)
                        )
                    )
                )
                rows = self._rows(s)
                missing = [a for a in assets if a not in rows]
                if missing:
                    s.execute(
                        insert_ignoring(self._store, AssetLeaseRow.__table__, ["asset"]),
                        [
                            {
                                "asset": a,
                                "holder": "",
                                "generation": 0,
                                "expires_at": 0.0,
                                "claimed_by": "",
                                "taken_at": 0.0,
                            }
                            for a in missing
                        ],
                    )
                    rows = self._rows(s)
                want = set(desired(members))
                live = set(members)
                to_take: list[str] = []
                to_claim: list[str] = []
                to_give: list[str] = []
                wanted: list[str] = []
                claimed: list[str] = []
                for asset in assets:
                    r = rows[asset]
                    mine = r.holder == me and r.expires_at > now
                    if mine:
                        if asset not in want and r.claimed_by in live and r.claimed_by != me:
                            to_give.append(asset)
                    elif asset in want:
                        free = r.holder in ("", me) or r.expires_at <= now or r.holder not in live
                        if free:
                            to_take.append(asset)
                            continue
                        wanted.append(asset)
                        if r.claimed_by == me:
                            claimed.append(asset)
                        elif claimable(asset):
                            to_claim.append(asset)
                            claimed.append(asset)
                taken = self._take(s, me, to_take, now, until, tuple(live))
                given = self._hand_over(s, me, to_give, now, until, tuple(live))
                for part in _chunks(to_claim):
                    s.execute(
                        update(AssetLeaseRow)
                        .where(AssetLeaseRow.asset.in_(part), AssetLeaseRow.holder != me)
                        .values(claimed_by=me)
                    )
                # Renew what is still mine and not expired (an expired one was taken again
                # above, with a new generation: a token is never stretched past its expiry).
                s.execute(
                    update(AssetLeaseRow)
                    .where(AssetLeaseRow.holder == me, AssetLeaseRow.expires_at > now)
                    .values(expires_at=until)
                )
                held = {
                    a: int(g)
                    for a, g in s.execute(
                        select(AssetLeaseRow.asset, AssetLeaseRow.generation).where(
                            AssetLeaseRow.holder == me, AssetLeaseRow.expires_at > now
                        )
                    )
                }
                s.execute(
                    update(FleetMemberRow)
                    .where(FleetMemberRow.gateway_id == me)
                    .values(assets=len(held))
                )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot renew the fleet leases of {me}: {exc}") from exc
        return Beat(now, members, held, tuple(taken), tuple(given), tuple(wanted), tuple(claimed))

    def _member(
        self, s: Session, me: str, boot_id: str, started_at: float, now: float, until: float
    ) -> None:
        found = s.execute(
            update(FleetMemberRow)
            .where(FleetMemberRow.gateway_id == me)
            .values(boot_id=boot_id, heartbeat_at=now, expires_at=until)
        )
        if getattr(found, "rowcount", 0) == 0:
            s.execute(
                insert_ignoring(self._store, FleetMemberRow.__table__, ["gateway_id"]),
                [
                    {
                        "gateway_id": me,
                        "boot_id": boot_id,
                        "started_at": started_at,
                        "heartbeat_at": now,
                        "expires_at": until,
                        "assets": 0,
                    }
                ],
            )

    @staticmethod
    def _rows(s: Session) -> dict[str, Any]:
        """Every lease as a plain row, in one scan: a fleet has thousands of assets, and
        chunked IN lists of them cost the database more than reading the table (bench/fleet.py:
        2,000 assets, 18 % of a core per gateway in PostgreSQL's backends with four IN lists).

        Locked (PostgreSQL), in asset order: the beat's UPDATEs then touch only rows it holds,
        so two beats (one renewing rows another claims) or a beat and a store writer (which
        locks its rows ``FOR SHARE`` in the same order) wait for each other instead of
        deadlocking. Beats of a fleet are serialised by it; each takes tens of milliseconds."""
        columns = (
            AssetLeaseRow.asset,
            AssetLeaseRow.holder,
            AssetLeaseRow.expires_at,
            AssetLeaseRow.claimed_by,
        )
        stmt = select(*columns).order_by(AssetLeaseRow.asset).with_for_update()
        return {r.asset: r for r in s.execute(stmt)}

    @staticmethod
    def _take(
        s: Session,
        me: str,
        assets: Sequence[str],
        now: float,
        until: float,
        live: tuple[str, ...],
    ) -> list[str]:
        free = (
            (AssetLeaseRow.holder == "")
            | (AssetLeaseRow.holder == me)
            | (AssetLeaseRow.expires_at <= now)
            | AssetLeaseRow.holder.not_in(live)
        )
        return _change_hands(s, assets, [free], me, now, until)

    @staticmethod
    def _hand_over(
        s: Session,
        me: str,
        assets: Sequence[str],
        now: float,
        until: float,
        live: tuple[str, ...],
    ) -> list[str]:
        claimed = [
            AssetLeaseRow.holder == me,
            AssetLeaseRow.claimed_by.in_(live),
            AssetLeaseRow.claimed_by != me,
        ]
        return _change_hands(s, assets, claimed, AssetLeaseRow.claimed_by, now, until)

    def leave(self, gateway_id: str) -> int:
        """A gateway that stops gives up its leases and its membership: the others take its
        assets at their next heartbeat instead of after ``lease_s``. Returns leases freed."""
        try:
            with self._store.sessions.begin() as s:
                freed = s.execute(
                    update(AssetLeaseRow)
                    .where(AssetLeaseRow.holder == gateway_id)
                    .values(expires_at=0.0, claimed_by="")
                )
                s.execute(delete(FleetMemberRow).where(FleetMemberRow.gateway_id == gateway_id))
                return int(getattr(freed, "rowcount", 0) or 0)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot release the fleet leases of {gateway_id}: {exc}") from exc

    def members(self) -> list[Member]:
        try:
            with self._store.sessions() as s:
                now = db_now(s, self._store.dialect)
                rows = s.scalars(
                    select(FleetMemberRow)
                    .where(FleetMemberRow.expires_at > now)
                    .order_by(FleetMemberRow.gateway_id)
                )
                return [
                    Member(
                        r.gateway_id,
                        r.boot_id,
                        r.started_at,
                        r.heartbeat_at,
                        r.expires_at,
                        r.assets,
                    )
                    for r in rows
                ]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the fleet's members: {exc}") from exc

    def leases(self) -> list[Lease]:
        try:
            with self._store.sessions() as s:
                rows = s.scalars(select(AssetLeaseRow).order_by(AssetLeaseRow.asset))
                return [
                    Lease(r.asset, r.holder, r.generation, r.expires_at, r.claimed_by, r.taken_at)
                    for r in rows
                ]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the fleet's leases: {exc}") from exc

    def count_by_holder(self) -> dict[str, int]:
        try:
            with self._store.sessions() as s:
                now = db_now(s, self._store.dialect)
                stmt = (
                    select(AssetLeaseRow.holder, func.count())
                    .where(AssetLeaseRow.expires_at > now)
                    .group_by(AssetLeaseRow.holder)
                )
                return {h: int(n) for h, n in s.execute(stmt)}
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot count the fleet's leases: {exc}") from exc


def _change_hands(
    s: Session,
    assets: Sequence[str],
    where: list[Any],
    holder: Any,
    now: float,
    until: float,
) -> list[str]:
    """Give ``holder`` (a name or a column) the leases of ``assets`` that meet ``where``, each
    with the next generation; returns the assets that changed hands."""
    changed: list[str] = []
    for part in _chunks(assets):
        result = s.execute(
            update(AssetLeaseRow)
            .where(AssetLeaseRow.asset.in_(part), *where)
            .values(
                holder=holder,
                generation=AssetLeaseRow.generation + 1,
                expires_at=until,
                claimed_by="",
                taken_at=now,
            )
            .returning(AssetLeaseRow.asset)
        )
        changed.extend(result.scalars())
    return changed


def refuse_stale(
    session: Session, gateway_id: str, predictions: Sequence[Prediction]
) -> tuple[list[Prediction], list[Prediction]]:
    """(kept, refused): a fenced prediction is kept while its asset's lease is held by
    ``gateway_id`` with the prediction's generation. Unfenced predictions (no fleet) are kept.
    Inside the store writer's transaction (see the module's docstring)."""
    fenced = sorted({p.asset for p in predictions if p.fence is not None})
    if not fenced:
        return list(predictions), []
    current: dict[str, int] = {}
    for part in _chunks(fenced):
        stmt: Any = (
            select(AssetLeaseRow.asset, AssetLeaseRow.generation)
            .where(AssetLeaseRow.asset.in_(part), AssetLeaseRow.holder == gateway_id)
            .order_by(AssetLeaseRow.asset)  # one lock order for every writer
            .with_for_update(read=True)
        )
        current.update((a, int(g)) for a, g in session.execute(stmt))
    kept: list[Prediction] = []
    refused: list[Prediction] = []
    for p in predictions:
        if p.fence is None or current.get(p.asset) == p.fence:
            kept.append(p)
        else:
            refused.append(p)
    return kept, refused
