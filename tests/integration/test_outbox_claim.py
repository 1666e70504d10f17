"""The relay's claim: per-asset queue prefixes, due heads, and on PostgreSQL rows locked by
another gateway (at an asset's head or in the middle of its queue) are never overtaken."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from outbox_harness import prediction
from sqlalchemy import select, update
from stores import BACKENDS, temp_store

from bridge.store.db import Store
from bridge.store.models import OutboxRow
from bridge.store.outbox import Budget, OutboxFeed, OutboxRepository
from bridge.store.repository import PredictionRepository


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


def test_rows_locked_by_another_gateway_are_never_overtaken(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite has one relay per database file)")
    fill(store, ("p1", "p2", "p3"), 6)
    other = store.sessions()  # another gateway's claim, holding its locks
    try:
        rows = {
            (a, json.loads(b)["seq"]): i
            for i, a, b in other.execute(select(OutboxRow.id, OutboxRow.asset, OutboxRow.body))
        }
        lock = [rows[("p1", 0)], rows[("p2", 3)]]  # p1's head; the middle of p2's queue
        other.execute(select(OutboxRow.id).where(OutboxRow.id.in_(lock)).with_for_update()).all()
        claim = OutboxRepository(store).claim("mes", 10, None, 8)
        try:
            got: dict[str, list[int]] = {}
            for e in claim.events:
                got.setdefault(e.asset, []).append(json.loads(e.body)["seq"])
            # p1: its head is held, nothing may go; p2: only what comes before the held row.
            assert got == {"p2": [0, 1, 2], "p3": [0, 1, 2, 3, 4, 5]}
            # While this claim runs it holds only what it took: a third gateway can take
            # p1's rows (all but the head held by the other) and p2's from the held one on.
            probe = store.sessions()
            try:
                free = probe.execute(
                    select(OutboxRow.asset, OutboxRow.body)
                    .where(OutboxRow.asset.in_(["p1", "p2"]))
                    .with_for_update(skip_locked=True)
                ).all()
                seqs = sorted((a, json.loads(b)["seq"]) for a, b in free)
                assert seqs == [("p1", s) for s in range(1, 6)] + [("p2", 4), ("p2", 5)]
            finally:
                probe.rollback()
                probe.close()
        finally:
            claim.close()
    finally:
        other.rollback()
        other.close()
