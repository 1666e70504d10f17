"""The outbox feed: budgets, and counting and rule state kept only once the store committed."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from bridge.outbox.feed import Budget, OutboxFeed, WhenFull
from bridge.outbox.rules import EventSelector
from bridge.store.db import Store, open_store
from bridge.store.outbox import OnCommit, OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.types import Prediction, PredictionSlot, Quality, Trigger

SLOT = PredictionSlot("p1", "m", "1", "ab" * 32, ("healthy", "bearing_fault"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'feed.db'}")
    try:
        yield s
    finally:
        s.dispose()


def pred(seq: int, value: str = "healthy", asset: str = "p1") -> Prediction:
    return Prediction(
        id=f"{asset}-{seq}",
        seq=seq,
        asset=asset,
        model="m",
        version="1",
        sha256="ab" * 32,
        value=value,
        score=0.9,
        quality=Quality.GOOD,
        timestamp=1e9 + seq,
        input_age_s=None,
    )


def every(max_pending: int, when_full: WhenFull) -> OutboxFeed:
    return OutboxFeed("mes", lambda p: json.dumps({"id": p.id}), Budget(max_pending, when_full))


def queued(store: Store) -> list[str]:
    return [e.event_id for e in OutboxRepository(store).pending("mes")]


def test_refuse_new_keeps_the_queued_events_and_counts_the_refused(store: Store) -> None:
    repo, feed = PredictionRepository(store), every(3, "refuse-new")
    repo.add_many([pred(0), pred(1)], [feed])
    repo.add_many([pred(2), pred(3), pred(4)], [feed])
    assert queued(store) == ["p1-0", "p1-1", "p1-2"]
    assert (feed.added, feed.refused, feed.dropped, feed.pending) == (3, 2, 0, 3)


def test_drop_oldest_drops_queued_events_first_then_the_batchs_own_oldest(store: Store) -> None:
    repo, feed = PredictionRepository(store), every(3, "drop-oldest")
    repo.add_many([pred(0), pred(1)], [feed])
    repo.add_many([pred(2), pred(3)], [feed])
    assert queued(store) == ["p1-1", "p1-2", "p1-3"]
    # A batch over the budget on its own: every queued event goes, then its own oldest two.
    repo.add_many([pred(s) for s in range(10, 15)], [feed])
    assert queued(store) == ["p1-12", "p1-13", "p1-14"]
    assert (feed.added, feed.refused, feed.dropped, feed.pending) == (7, 0, 6, 3)
    # The backlog estimate stayed true, so the next event still makes room for itself.
    repo.add_many([pred(20)], [feed])
    assert queued(store) == ["p1-13", "p1-14", "p1-20"]


def test_drop_oldest_leaves_the_event_a_relay_is_sending(store: Store) -> None:
    repo, feed = PredictionRepository(store), every(2, "drop-oldest")
    repo.add_many([pred(0), pred(1, asset="p2")], [feed])
    OutboxRepository(store).claim("mes", limit=1)  # leases p1-0, the oldest
    repo.add_many([pred(2, asset="p3")], [feed])
    assert queued(store) == ["p1-0", "p3-2"]
    assert feed.dropped == 1


class Failing:
    """A second destination whose staging fails: the whole transaction rolls back."""

    def stage(self, session: Session, predictions: Sequence[Prediction]) -> OnCommit:
        raise RuntimeError("boom")


def test_a_rolled_back_batch_counts_nothing_and_keeps_no_rule_state(store: Store) -> None:
    feed = OutboxFeed("mes", lambda p: None, Budget(10))
    feed.selector = EventSelector(["label_change"], [SLOT])
    feed.render = lambda t: json.dumps({"event": t.event, "previous": t.previous})
    repo = PredictionRepository(store)
    fault = pred(0, "bearing_fault")
    with pytest.raises(RuntimeError):
        repo.add_many([fault], [feed, Failing()])
    assert queued(store) == [] and (feed.added, feed.pending) == (0, 0)
    # Had the failed attempt kept "bearing_fault" as the last label, the retry would see no
    # change and the MES would never hear of the fault.
    repo.add_many([fault], [feed])
    [event] = OutboxRepository(store).pending("mes")
    assert json.loads(event.body) == {"event": "label_change", "previous": "healthy"}
    assert (feed.added, feed.pending) == (1, 1)


def test_an_alert_body_follows_the_destinations_rules_or_is_the_default() -> None:
    trigger = Trigger(pred(0), "drift", drift={"score": 0.4})
    plain = OutboxFeed("webhook", lambda p: None, Budget(10))
    assert plain.alert_body(trigger, "default") == "default"
    ruled = OutboxFeed("mes", lambda p: None, Budget(10), EventSelector(["alerts"], [SLOT]))
    ruled.render = lambda t: f"{t.event}:{t.prediction.id}"
    assert ruled.alert_body(trigger, "default") == "drift:p1-0"

    def unrenderable(t: Trigger) -> str:
        raise ValueError("Out of range float values are not JSON compliant")

    ruled.render = unrenderable
    assert ruled.alert_body(trigger, "default") == "default"  # still delivered


def test_an_alert_event_is_counted_once_its_transaction_committed(store: Store) -> None:
    feed = every(10, "refuse-new")
    with store.sessions.begin() as session:
        done = feed.stage_event(session, "p1", "drift-1", "{}")
        assert feed.added == 0  # not before the commit
    done()
    assert queued(store) == ["drift-1"] and (feed.added, feed.pending) == (1, 1)
