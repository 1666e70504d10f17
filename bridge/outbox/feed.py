"""The writing side of durable delivery: which events a destination gets, and which lose.

An ``OutboxFeed`` is one destination's share of the store's transactions. The store writer
calls ``stage`` inside the transaction that inserts a batch of predictions (the store layer's
``OutboxHook``), and the drift writer calls ``stage_event`` inside the transaction that stores
an alert; either way an event row exists exactly when what it reports was committed. The feed
picks the events (its destination's rules, or ``encode`` for every prediction), applies its
``Budget`` (at most ``max_pending`` rows; ``when_full`` says which events lose) and counts,
only once the transaction committed, what was added, refused and dropped: the relay reads
those counters for its health and to know when to look for new rows.

The store only runs the SQL (``bridge.store.outbox``): it never learns of rules or budgets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog
from sqlalchemy.orm import Session

from bridge.store.outbox import OnCommit, drop_oldest, enqueue, pending_count
from bridge.types import Prediction, Trigger

from .rules import DRIFT_RULES, EventSelector

__all__ = ["Budget", "EnqueueResult", "OutboxFeed", "WhenFull", "enqueue_within"]

log = structlog.get_logger(__name__)

WhenFull = Literal["refuse-new", "drop-oldest"]

# A full outbox is logged at most this often per destination (it is also in the relay's health).
_LOSS_LOG_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``max_pending`` rows per destination; ``when_full`` says which events lose."""

    max_pending: int
    when_full: WhenFull = "refuse-new"


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """Events ``added``; ``refused`` (refuse-new) or ``dropped`` (drop-oldest) by the budget.

    ``deleted`` is the part of ``dropped`` that was already queued (the rest were the batch's
    own oldest events, never stored): only those shrink the backlog.
    """

    added: int
    refused: int
    dropped: int
    deleted: int = 0


def enqueue_within(
    session: Session,
    destination: str,
    events: Sequence[tuple[str, str, str]],
    budget: Budget,
    pending: int,
    fences: Mapping[str, int] | None = None,
) -> EnqueueResult:
    """Add ``(asset, event_id, body)`` rows inside the caller's transaction, within ``budget``.

    ``pending`` is the caller's count of rows already waiting; it is only trusted far from the
    limit (it is re-counted exactly here once the batch could reach the budget).
    """
    if not events:
        return EnqueueResult(0, 0, 0)
    if pending + len(events) > budget.max_pending:
        pending = pending_count(session, destination)
    room = max(0, budget.max_pending - pending)
    refused = dropped = deleted = 0
    chosen = list(events)
    if len(chosen) > room:
        excess = len(chosen) - room
        if budget.when_full == "refuse-new":
            chosen, refused = chosen[:room], excess
        else:
            # The batch is newer than every stored row: drop stored rows first, then the
            # batch's own oldest if the batch alone is over the budget.
            if len(chosen) > budget.max_pending:
                dropped += len(chosen) - budget.max_pending
                chosen = chosen[len(chosen) - budget.max_pending :]
            deleted = drop_oldest(session, destination, len(chosen) - room)
            dropped += deleted
    added = enqueue(session, destination, chosen, fences)
    return EnqueueResult(added, refused, dropped, deleted)


@dataclass(slots=True)
class OutboxFeed:
    """What the store writer needs to fill one destination's outbox, and what it counted.

    ``encode`` turns a prediction into the JSON body for this destination, or None when the
    destination does not want it. A destination with event rules gives a ``selector`` (which
    predictions become events, and why) and ``render`` (the body of such an event) instead.
    ``pending`` is a running estimate of the backlog that spares a COUNT per batch (the feed
    adds, the relay subtracts and refreshes it).
    """

    destination: str
    encode: Callable[[Prediction], str | None]
    budget: Budget
    selector: EventSelector | None = None
    render: Callable[[Trigger], str] | None = None
    pending: int = 0
    added: int = 0
    refused: int = 0
    dropped: int = 0
    _lost_logged: int = field(default=0, init=False, repr=False)
    _last_loss_log: float = field(default=-math.inf, init=False, repr=False)

    @property
    def wants_alerts(self) -> bool:
        """Alerts raised outside the prediction flow (drift) go to ``every`` and ``alerts``."""
        return self.selector is None or any(r in DRIFT_RULES for r in self.selector.rules)

    def events(self, predictions: Sequence[Prediction]) -> list[tuple[str, str, str]]:
        """``(asset, event_id, body)`` of the events a batch makes (rule state is staged).

        The Idempotency-Key stays the prediction id: one prediction is at most one event per
        destination (the first matching rule names it).
        """
        if self.selector is None or self.render is None:
            return [(p.asset, p.id, b) for p in predictions if (b := self.encode(p)) is not None]
        render = self.render
        return [
            (t.prediction.asset, t.prediction.id, render(t))
            for t in self.selector.select(predictions)
        ]

    def stage(self, session: Session, predictions: Sequence[Prediction]) -> OnCommit:
        """``bridge.store.outbox.OutboxHook``: the events of a batch, inside its transaction."""
        # Fleet: each event carries its prediction's fencing token.
        fences = (
            {p.id: p.fence for p in predictions if p.fence is not None}
            if predictions and predictions[0].fence is not None
            else None
        )
        result = enqueue_within(
            session, self.destination, self.events(predictions), self.budget, self.pending, fences
        )

        def committed() -> None:
            # The rule state the batch reached is kept only now: a batch whose commit failed
            # is selected again from the state before it, and yields the same events.
            if self.selector is not None:
                self.selector.commit()
            self.count(result)

        return committed

    def alert_body(self, trigger: Trigger, default: str) -> str:
        """The body of a drift alert for this destination: its rendering of the ``drift``
        trigger when it has event rules (like its other events), else ``default``."""
        if self.selector is None or self.render is None:
            return default
        try:
            return self.render(trigger)
        except (TypeError, ValueError) as exc:  # e.g. a non-finite statistic: still deliver
            log.error("drift_event_not_rendered", destination=self.destination, error=str(exc))
            return default

    def stage_event(self, session: Session, asset: str, event_id: str, body: str) -> OnCommit:
        """``bridge.store.drift.AlertOutbox``: one event raised outside the prediction flow
        (a drift alert), inside the transaction that stores the alert. Rule state is not
        touched: the event was not selected by the rules."""
        result = enqueue_within(
            session, self.destination, [(asset, event_id, body)], self.budget, self.pending
        )
        return lambda: self.count(result)

    def count(self, result: EnqueueResult) -> None:
        """Count a committed enqueue; a full outbox is never silent (logged, rate-limited)."""
        # Only rows that were queued leave the backlog: counting the batch's own dropped
        # events too would put the estimate below the truth, and a later batch past the budget.
        self.pending = max(0, self.pending + result.added - result.deleted)
        self.added += result.added
        self.refused += result.refused
        self.dropped += result.dropped
        lost = self.refused + self.dropped
        now = time.monotonic()
        if lost != self._lost_logged and now - self._last_loss_log >= _LOSS_LOG_INTERVAL_S:
            self._lost_logged, self._last_loss_log = lost, now
            log.warning(
                "outbox_full",
                destination=self.destination,
                policy=self.budget.when_full,
                max_pending=self.budget.max_pending,
                refused_total=self.refused,
                dropped_total=self.dropped,
            )
