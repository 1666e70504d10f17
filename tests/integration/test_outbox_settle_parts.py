"""``finish_parts``: the failed lanes of several claims settled in one transaction (the relay
batches them), each part's rows released, retried or dead-lettered as ``finish`` would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from outbox_harness import prediction
from sqlalchemy import select
from stores import BACKENDS, temp_store

from bridge.outbox.feed import Budget, OutboxFeed
from bridge.outbox.retries import RetryDecision
from bridge.store.db import Store
from bridge.store.outbox import OutboxRepository, PartOutcome
from bridge.store.repository import PredictionRepository
from bridge.store.tables import OutboxRow


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "parts.db", prefix="bridge_parts") as s:
        yield s


def rows(store: Store) -> dict[tuple[str, int], tuple[str, int, int, str]]:
    """(asset, seq) -> (claimed_by, attempts, retries, last_error) of every pending row."""
    with store.sessions() as s:
        found = s.execute(
            select(
                OutboxRow.asset,
                OutboxRow.body,
                OutboxRow.claimed_by,
                OutboxRow.attempts,
                OutboxRow.retries,
                OutboxRow.last_error,
            )
        ).all()
    return {(a, json.loads(b)["seq"]): (c, at, r, e) for a, b, c, at, r, e in found}


def test_parts_of_two_claims_settle_in_one_call(store: Store) -> None:
    feed = OutboxFeed("mes", lambda p: json.dumps({"seq": p.seq}), Budget(10_000))
    PredictionRepository(store).add_many(
        [prediction(a, s) for a in ("a", "b", "c") for s in range(3)], [feed]
    )
    repo = OutboxRepository(store)
    first = repo.claim("mes", 2, None, 3)  # a and b, 3 events each
    second = repo.claim("mes", 10, None, 3, skip={"a", "b"})  # c
    try:
        assert {e.asset for e in first.events} == {"a", "b"}
        assert {e.asset for e in second.events} == {"c"}
        a = [e for e in first.events if e.asset == "a"]
        b = [e for e in first.events if e.asset == "b"]
        c = second.events
        now = time.time()
        retry = RetryDecision(1, now, now + 30, False, "HTTP 500")
        dead = repo.finish_parts(
            [
                # a: its head retried later, the rest released
                PartOutcome(first, a, [], {}, 3, 1.0, {a[0].id: retry}),
                # c: its head rejected for the last time (dead letter), the rest released
                PartOutcome(second, c, [], {c[0].id: "HTTP 422: no"}, 1, 1.0, None),
            ]
        )
        assert dead == [[], [c[0]]]
        pending = rows(store)
        assert pending[("a", 0)] == ("", 0, 1, "HTTP 500")
        assert pending[("a", 1)][0] == pending[("a", 2)][0] == ""  # released
        assert ("c", 0) not in pending and pending[("c", 1)][0] == ""
        assert [d.last_error for d in repo.dead_letters("mes")] == ["HTTP 422: no"]
        # b was not part of it: still leased to this relay.
        assert {pending[("b", s)][0] for s in range(3)} == {repo.holder}
        # The settled parts are done: the claims' own finish leaves them alone (a newer
        # claim may have leased them again by then) and settles only b.
        again = repo.claim("mes", 10, None, 3, skip={"b"})
        assert {e.asset for e in again.events} == {"c"}  # a's head is not due yet
        first.finish([e.id for e in b], {}, 3, 1.0)
        second.finish([], {}, 3, 1.0)
        assert {k for k in rows(store) if k[0] == "c"} == {("c", 1), ("c", 2)}
        assert {rows(store)[("c", s)][0] for s in (1, 2)} == {repo.holder}  # again's lease
        again.close()
    finally:
        first.close()
        second.close()
    assert not any(k[0] == "b" for k in rows(store))  # accepted: deleted
    assert rows(store)[("a", 0)][2] == 1


def test_each_failed_event_gets_its_own_outcome_in_one_settle(store: Store) -> None:
    """The failed rows of a settle are written in one batched statement per kind: every row
    still gets its own attempts, retry schedule and error, and nothing else changes."""
    feed = OutboxFeed("mes", lambda p: json.dumps({"seq": p.seq}), Budget(10_000))
    assets = [f"x{i}" for i in range(6)]
    PredictionRepository(store).add_many(
        [prediction(a, s) for a in assets for s in range(2)], [feed]
    )
    repo = OutboxRepository(store)
    claim = repo.claim("mes", 10, None, 2)
    try:
        heads = {e.asset: e for e in claim.events if json.loads(e.body)["seq"] == 0}
        tails = {e.asset: e for e in claim.events if json.loads(e.body)["seq"] == 1}
        assert set(heads) == set(assets)
        now = time.time()
        retried = {
            heads["x0"].id: RetryDecision(2, now - 5, now + 40, False, "HTTP 500 zero"),
            heads["x1"].id: RetryDecision(7, now - 9, now + 90, False, "HTTP 503 one"),
            heads["x4"].id: RetryDecision(21, now - 99, now, True, "retries exhausted four"),
        }
        rejected = {heads["x2"].id: "HTTP 422 two", heads["x3"].id: "HTTP 400 three"}
        dead = repo.finish_parts(
            [
                PartOutcome(claim, [heads[a], tails[a]], [], rejected, 3, 15.0, retried)
                for a in ("x0", "x1", "x2", "x3", "x4")
            ]
            # x5: its head accepted (its own record failed), its tail released
            + [PartOutcome(claim, [heads["x5"], tails["x5"]], [heads["x5"].id], {}, 3, 1.0, None)]
        )
        assert dead == [[], [], [], [], [heads["x4"]], []]
        with store.sessions() as s:
            found = {
                r.asset: r
                for r in s.execute(
                    select(
                        OutboxRow.asset,
                        OutboxRow.body,
                        OutboxRow.claimed_by,
                        OutboxRow.lease_until,
                        OutboxRow.attempts,
                        OutboxRow.retries,
                        OutboxRow.first_failed_at,
                        OutboxRow.next_attempt_at,
                        OutboxRow.last_error,
                    ).where(OutboxRow.body.like('%"seq": 0%'))
                )
            }
        assert set(found) == {"x0", "x1", "x2", "x3"}  # x4 dead, x5 accepted
        for a, (retries, first, due, error) in {
            "x0": (2, now - 5, now + 40, "HTTP 500 zero"),
            "x1": (7, now - 9, now + 90, "HTTP 503 one"),
        }.items():
            r = found[a]
            assert (r.claimed_by, r.lease_until, r.attempts, r.retries) == ("", 0.0, 0, retries)
            assert r.first_failed_at == pytest.approx(first)
            assert r.next_attempt_at == pytest.approx(due)
            assert r.last_error == error
        for a, error in {"x2": "HTTP 422 two", "x3": "HTTP 400 three"}.items():
            r = found[a]
            assert (r.claimed_by, r.lease_until, r.attempts, r.retries) == ("", 0.0, 1, 0)
            assert r.next_attempt_at == pytest.approx(now + 15.0, abs=5)
            assert r.last_error == error
        pending = rows(store)
        assert {pending[(a, 1)][0] for a in assets} == {""}  # every tail released
        assert {pending[(a, 1)][1:] for a in assets} == {(0, 0, "")}  # and left as it was
        letters = repo.dead_letters("mes")
        assert [(d.asset, d.attempts, d.last_error) for d in letters] == [
            ("x4", 21, "retries exhausted four")
        ]
    finally:
        claim.close()
