"""The relay's claim: per-asset queue prefixes, due heads, and rows leased by another relay (at
an asset's head or in the middle of its queue) are never overtaken; expired leases are free."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from outbox_harness import prediction
from sqlalchemy import select, update
from stores import BACKENDS, temp_store

from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store.db import Store
from bridge.store.outbox import OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.store.tables import OutboxRow


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "claim.db", prefix="bridge_outbox") as s:
        yield s


def fill(store: Store, assets: tuple[str, ...], n: int) -> None:
    feed = OutboxFeed("mes", lambda p: json.dumps({"seq": p.seq}), Budget(10_000))
    batch = [prediction(a, s) for s in range(n) for a in assets]
    PredictionRepository(store).add_many(batch, [feed])


def claimed(store: Store, limit: int, depth: int) -> dict[str, list[int]]:
    claim = OutboxRepository(store).claim("mes", limit, None, depth)
    try:
        out: dict[str, list[int]] = {}
        for e in claim.events:
            out.setdefault(e.asset, []).append(json.loads(e.body)["seq"])
        return out
    finally:
        claim.close()


def test_each_asset_gets_the_start_of_its_queue(store: Store) -> None:
    fill(store, ("p1", "p2", "p3"), 5)
    assert claimed(store, 10, 3) == {"p1": [0, 1, 2], "p2": [0, 1, 2], "p3": [0, 1, 2]}
    assert claimed(store, 2, 8) == {"p1": [0, 1, 2, 3, 4], "p2": [0, 1, 2, 3, 4]}
    assert claimed(store, 10, 1) == {"p1": [0], "p2": [0], "p3": [0]}


def test_an_asset_whose_head_waits_after_a_rejection_is_left_out(store: Store) -> None:
    fill(store, ("p1", "p2"), 3)
    with store.sessions.begin() as s:
        head = s.scalars(
            select(OutboxRow.id).where(OutboxRow.asset == "p1").order_by(OutboxRow.id).limit(1)
        ).one()
        s.execute(
            update(OutboxRow).where(OutboxRow.id == head).values(next_attempt_at=time.time() + 60)
        )
    assert claimed(store, 10, 8) == {"p2": [0, 1, 2]}


def test_a_window_full_of_a_waiting_asset_falls_back_to_the_heads(store: Store) -> None:
    fill(store, ("p1",), 20)
    fill(store, ("p2",), 2)
    with store.sessions.begin() as s:
        s.execute(
            update(OutboxRow)
            .where(OutboxRow.asset == "p1")
            .values(next_attempt_at=time.time() + 60)
        )
    # The 4 oldest rows are all p1's (not due): the head query still finds p2.
    assert claimed(store, 2, 2) == {"p2": [0]}


def lease(store: Store, rows: list[int], holder: str, until: float) -> None:
    with store.sessions.begin() as s:
        s.execute(
            update(OutboxRow)
            .where(OutboxRow.id.in_(rows))
            .values(claimed_by=holder, lease_until=until)
        )


def row_ids(store: Store) -> dict[tuple[str, int], int]:
    with store.sessions() as s:
        return {
            (a, json.loads(b)["seq"]): i
            for i, a, b in s.execute(select(OutboxRow.id, OutboxRow.asset, OutboxRow.body))
        }


def test_rows_leased_by_another_relay_are_never_overtaken(store: Store) -> None:
    fill(store, ("p1", "p2", "p3"), 6)
    rows = row_ids(store)
    # Another gateway's unexpired leases: p1's head; the middle of p2's queue.
    lease(store, [rows[("p1", 0)], rows[("p2", 3)]], "other-gateway", time.time() + 60)
    repo = OutboxRepository(store)
    claim = repo.claim("mes", 10, None, 8)
    got: dict[str, list[int]] = {}
    for e in claim.events:
        got.setdefault(e.asset, []).append(json.loads(e.body)["seq"])
    # p1: its head is held, nothing may go; p2: only what comes before the held row.
    assert got == {"p2": [0, 1, 2], "p3": [0, 1, 2, 3, 4, 5]}
    # The leases are committed: a third relay gets nothing of p1, p2 or p3 meanwhile.
    assert claimed(store, 10, 8) == {}
    claim.close()
    # Released: the third relay now gets what the other gateway does not hold.
    assert claimed(store, 10, 8) == {"p2": [0, 1, 2], "p3": [0, 1, 2, 3, 4, 5]}


def test_expired_leases_are_claimable_and_the_old_holder_cannot_finish_them(
    store: Store,
) -> None:
    fill(store, ("p1",), 3)
    old = OutboxRepository(store, holder="old-gateway")
    first = old.claim("mes", 10, None, 8, lease_s=60.0)
    assert [json.loads(e.body)["seq"] for e in first.events] == [0, 1, 2]
    # Nobody else may take them while the lease runs...
    new = OutboxRepository(store, holder="new-gateway")
    assert new.claim("mes", 10, None, 8).events == []
    # ... and anybody may once it has expired (the old gateway hung or died).
    lease(store, [e.id for e in first.events], "old-gateway", time.time() - 1)
    second = new.claim("mes", 10, None, 8)
    assert [e.id for e in second.events] == [e.id for e in first.events]
    # The old holder wakes up: its outcomes no longer count, the rows are the new holder's.
    old.record_accepted("mes", [first.events[0].id])
    assert first.finish([first.events[1].id], {first.events[2].id: "HTTP 422"}, 1, 0.0) == []
    with store.sessions() as s:
        left = s.execute(select(OutboxRow.id, OutboxRow.claimed_by).order_by(OutboxRow.id)).all()
    assert [(i, h) for i, h in left] == [(e.id, "new-gateway") for e in first.events]
    assert OutboxRepository(store).dead_letters("mes") == []
    # The new holder finishes them.
    second.finish([e.id for e in second.events], {}, 3, 0.0)
    assert OutboxRepository(store).stats("mes").backlog == 0


def test_a_claim_commits_its_leases_and_renewal_extends_them(store: Store) -> None:
    fill(store, ("p1", "p2"), 2)
    repo = OutboxRepository(store, holder="me")
    before = time.time()
    claim = repo.claim("mes", 10, None, 8, lease_s=5.0)
    with store.sessions() as s:
        leases = s.execute(select(OutboxRow.claimed_by, OutboxRow.lease_until)).all()
    assert {h for h, _ in leases} == {"me"}
    assert all(before + 4 < u < time.time() + 6 for _, u in leases)
    assert repo.renew("mes", 50.0) == 4
    with store.sessions() as s:
        until = s.execute(select(OutboxRow.lease_until)).scalars().all()
    assert all(u > before + 45 for u in until)
    claim.close()
    with store.sessions() as s:
        assert set(s.execute(select(OutboxRow.claimed_by)).scalars()) == {""}
