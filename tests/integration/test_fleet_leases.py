"""Fleet leases in the store, on SQLite and PostgreSQL: each asset held by exactly one live
gateway, take-over of a dead gateway's assets with a new generation, hand-over to a gateway
that comes back, and the store refusing a stale writer's predictions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from stores import BACKENDS, temp_store

from bridge.fleet.hashing import owner, share
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store.db import Store
from bridge.store.leases import Beat, LeaseRepository
from bridge.store.repository import PredictionRepository
from bridge.store.tables import OutboxRow
from bridge.types import Prediction, Quality

ASSETS = [f"pump-{i:03d}" for i in range(60)]
GATEWAYS = ("gw-a", "gw-b", "gw-c")
LEASE_S = 0.6


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path) as s:
        yield s


def _beat(repo: LeaseRepository, gid: str, lease_s: float = LEASE_S) -> Beat:
    return repo.beat(gid, "boot", ASSETS, lease_s, lambda m: share(gid, ASSETS, m), time.time())


def _holders(repo: LeaseRepository) -> dict[str, tuple[str, int]]:
    now = time.time()
    return {
        lease.asset: (lease.holder, lease.generation)
        for lease in repo.leases()
        if lease.expires_at > now - 60  # what the rows say; expiry is checked by the caller
    }


def _settle(repo: LeaseRepository, gateways: tuple[str, ...], rounds: int = 3) -> dict[str, Beat]:
    last: dict[str, Beat] = {}
    for _ in range(rounds):
        for gid in gateways:
            last[gid] = _beat(repo, gid)
    return last


def _keep_beating(repo: LeaseRepository, gateways: tuple[str, ...], seconds: float) -> None:
    """The live gateways beat every 0.15 s for ``seconds`` (the others are silent)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for gid in gateways:
            _beat(repo, gid)
        time.sleep(0.15)


def test_three_gateways_share_the_assets_each_held_once_by_its_rendezvous_owner(
    store: Store,
) -> None:
    repo = LeaseRepository(store)
    beats = _settle(repo, GATEWAYS)
    held = [set(beats[g].held) for g in GATEWAYS]
    assert set().union(*held) == set(ASSETS)
    assert sum(len(h) for h in held) == len(ASSETS)
    for gid, assets in zip(GATEWAYS, held, strict=True):
        assert assets == {a for a in ASSETS if owner(a, GATEWAYS) == gid}
    assert beats["gw-c"].members == GATEWAYS
    assert repo.count_by_holder() == {g: len(h) for g, h in zip(GATEWAYS, held, strict=True)}


def test_a_dead_gateways_assets_are_taken_with_a_new_generation_and_nothing_else_moves(
    store: Store,
) -> None:
    repo = LeaseRepository(store)
    _settle(repo, GATEWAYS)
    before = _holders(repo)
    _keep_beating(repo, ("gw-a", "gw-b"), LEASE_S + 0.2)  # gw-c is silent: dead
    beats = _settle(repo, ("gw-a", "gw-b"), rounds=1)
    after = _holders(repo)
    dead = [a for a in ASSETS if before[a][0] == "gw-c"]
    assert dead
    for a in dead:
        holder, generation = after[a]
        assert holder == owner(a, ("gw-a", "gw-b"))
        assert generation == before[a][1] + 1
    assert set(beats["gw-a"].held) | set(beats["gw-b"].held) == set(ASSETS)
    assert beats["gw-a"].members == ("gw-a", "gw-b")


def test_a_gateway_that_comes_back_is_handed_its_share_and_only_that(store: Store) -> None:
    repo = LeaseRepository(store)
    _settle(repo, ("gw-a", "gw-b"))
    before = _holders(repo)
    claim = _beat(repo, "gw-c")  # joins: its share is held by live gateways, so it claims
    mine = {a for a in ASSETS if owner(a, GATEWAYS) == "gw-c"}
    assert set(claim.claimed) == mine and not claim.held
    given = set(_beat(repo, "gw-a").handed_over) | set(_beat(repo, "gw-b").handed_over)
    assert given == mine
    joined = _beat(repo, "gw-c")
    assert set(joined.held) == mine and not joined.claimed
    after = _holders(repo)
    for a in ASSETS:
        if a in mine:
            assert after[a] == ("gw-c", before[a][1] + 1)
        else:
            assert after[a] == before[a]  # untouched: same holder, same generation


def test_leaving_frees_the_leases_for_the_next_beat_of_the_others(store: Store) -> None:
    repo = LeaseRepository(store)
    _settle(repo, GATEWAYS)
    freed = repo.leave("gw-b")
    assert freed == sum(1 for a in ASSETS if owner(a, GATEWAYS) == "gw-b")
    beats = {g: _beat(repo, g) for g in ("gw-a", "gw-c")}
    assert set(beats["gw-a"].held) | set(beats["gw-c"].held) == set(ASSETS)
    assert [m.gateway_id for m in repo.members()] == ["gw-a", "gw-c"]


def _prediction(asset: str, seq: int, fence: int) -> Prediction:
    return Prediction(
        id=f"00000000-0000-5000-8000-{seq:012d}",
        seq=seq,
        asset=asset,
        model="m",
        version="1",
        sha256="0" * 64,
        value="normal",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=time.time(),
        input_age_s=0.1,
        fence=fence,
    )


def test_the_store_refuses_predictions_whose_lease_changed_hands(store: Store) -> None:
    repo = LeaseRepository(store)
    _settle(repo, ("gw-a",), rounds=1)
    asset = ASSETS[0]
    generation = _holders(repo)[asset][1]
    feed = OutboxFeed("mes", lambda p: json.dumps({"id": p.id}), Budget(100))
    writer = PredictionRepository(store, gateway_id="gw-a")
    writer.fenced = True
    assert writer.add_many([_prediction(asset, 1, generation)], [feed]) == 0
    # gw-a is cut off and its lease runs out; gw-b, alive, takes the asset.
    _keep_beating(repo, ("gw-b",), LEASE_S + 0.2)
    assert _holders(repo)[asset] == ("gw-b", generation + 1)
    # gw-a's queued prediction under the old token is refused; gw-b's is kept.
    assert writer.add_many([_prediction(asset, 2, generation)], [feed]) == 1
    assert [p.seq for p in writer.refused] == [2]
    other = PredictionRepository(store, gateway_id="gw-b")
    other.fenced = True
    assert other.add_many([_prediction(asset, 3, generation + 1)], [feed]) == 0
    stored = {p.seq: p.fence for p in _stored(store)}
    assert stored == {1: generation, 3: generation + 1}
    # The outbox row of the kept prediction carries its fencing token; the refused one has none.
    with store.sessions() as s:
        rows = s.execute(select(OutboxRow.event_id, OutboxRow.fence)).all()
    assert sorted((r.event_id, r.fence) for r in rows) == [
        (_prediction(asset, 1, 0).id, generation),
        (_prediction(asset, 3, 0).id, generation + 1),
    ]


def _stored(store: Store) -> list[Prediction]:
    from stores import stored_predictions

    return stored_predictions(store, limit=100)


def test_a_joining_gateway_claims_nothing_until_its_windows_are_warm(store: Store) -> None:
    repo = LeaseRepository(store)
    _settle(repo, ("gw-a", "gw-b"))
    before = _holders(repo)
    cold = repo.beat(
        "gw-c", "boot", ASSETS, LEASE_S, lambda m: share("gw-c", ASSETS, m), time.time(),
        claimable=lambda asset: False,
    )  # fmt: skip
    mine = {a for a in ASSETS if owner(a, GATEWAYS) == "gw-c"}
    assert set(cold.wanted) == mine and not cold.claimed and not cold.held
    # The holders hand over nothing: gw-c has not claimed; they go on serving.
    assert not _beat(repo, "gw-a").handed_over and not _beat(repo, "gw-b").handed_over
    assert _holders(repo) == before
