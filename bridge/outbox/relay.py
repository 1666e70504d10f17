"""The relay of one destination: claims the oldest events of each asset, sends, records outcomes.

Retry ownership: the relay owns every retry. A destination sends an event once and says what
came of it: accepted, rejected (a non-retryable answer: counted, retried after a pause, dead-
lettered after ``dead_letter_after``) or ``Retry`` (a failure that may pass: retried with
backoff, dead-lettered after ``max_retries`` or ``max_retry_age_s``, see ``policy.py``). A
destination that retries inside ``deliver`` itself still works, it only gets no cap.

A round claims the oldest events of up to ``batch_size`` assets (up to ``per_asset`` each).
Rounds overlap: while fewer lanes want a slot than the destination's ``concurrency``, the
relay claims again, skipping the assets its running rounds still hold (in flight, or failed
and not yet settled), so new events do not wait for the end of a long round and the slots
stay busy. Each asset is a lane: its events are sent one after the other, the next only once
the previous was accepted *and recorded*, at most ``concurrency`` requests at once; lanes do
not wait for each other, and a failure ends only its own lane (its later events wait behind
it, so order per asset holds across retries, crashes and restarts); a failed lane settles its
asset at once (retry scheduled or dead letter, lease released). Accepted events are recorded
as their replies arrive (one commit for whatever arrived in the last few milliseconds, from
every lane and round), so a crash re-sends at most one accepted event per asset: the one whose
commit was under way. A destination whose ``capabilities.batch_size`` is above 1 gets waves
instead: wave i carries the i-th event of every asset still going, several per request, and
each wave is recorded at once.

A claim leases its rows (``lease_s``) and commits: no transaction stays open while events are
sent, whatever the destination does; the relay renews its leases while rounds run. The rows of a
relay that died are claimable by any relay once its leases expire.

Both loops (delivery and stats) are supervised: any exception restarts them with backoff, and
health counts the restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from bridge.cancel import cancel_and_wait
from bridge.destination import Destination, Envelope, Outcome, Retry
from bridge.errors import BridgeError
from bridge.retry import Backoff
from bridge.store.outbox import Claim, OutboxEvent, OutboxRepository, PartOutcome
from bridge.supervise import Supervised
from bridge.types import ComponentHealth

from .feed import OutboxFeed
from .retries import RetryDecision, RetryPolicy

__all__ = ["Relay", "RelaySettings"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# How long a cancelled relay waits for a store call already running in its thread.
_SETTLE_TIMEOUT_S = 10.0
# First pause after the store failed a round (claim, finish); grows to ``max_backoff_s``.
_STORE_RETRY_S = 0.2
# Rounds alive at once beyond the destination's concurrency (rounds recording their outcomes
# hold no slot): a bound on the claims in memory, not a tuning knob.
_MAX_ROUNDS = 64
# Spacing of claims while slots are busy: at least this, and three times as long as the last
# claim took. Spaced by the claim's own duration only, a relay made ~50 claims/s at 100
# events/s (SQLite, ~3 ms of CPU each, in a thread that competes for the GIL with the HTTP).
_MIN_CLAIM_GAP_S = 0.02
_CLAIM_GAP_FACTOR = 3.0
# Least time between two record commits of accepted events. Back to back, a relay sending
# hundreds of events a second commits every millisecond or two, one or two rows each, and its
# store thread never rests (a transaction costs about as much CPU for 1 row as for 10, and that
# CPU is taken from the HTTP client). The cost: an asset's *next* event waits up to this much
# longer; the first send of an event never waits for it.
_RECORD_GAP_S = 0.005


async def _see_through(
    fn: Callable[..., T], *args: Any, cleanup: Callable[[T], None] | None = None
) -> T:
    """Run a blocking store call in a thread; if cancelled meanwhile, let it finish first.

    A thread cannot be cancelled: returning at once would leave its session (and, on
    PostgreSQL, its row locks) in use by the thread while this task already closes it, or
    unclosed if it was a claim. So wait for it (bounded), clean up its result, then re-raise.
    """
    job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            result = await asyncio.wait_for(job, _SETTLE_TIMEOUT_S)
            if cleanup is not None:
                await asyncio.to_thread(cleanup, result)
        raise


@dataclass(frozen=True, slots=True)
class RelaySettings:
    batch_size: int = 500
    # Events per asset a round may send, one after the other: a backlog drains in fewer
    # rounds (claims) while each asset still has one event in flight at a time.
    per_asset: int = 8
    dead_letter_after: int = 3
    reject_retry_s: float = 1.0
    # Retryable failures of one event, counted while the destination accepts others, after
    # which it is dead-lettered; or this long after its first counted failure.
    max_retries: int = 20
    max_retry_age_s: float = 600.0
    # "Accepts others" means: accepted an event within this window.
    working_window_s: float = 60.0
    # Backoff of retried events when the destination does not give its own
    # (``capabilities.backoff``).
    retry_initial_s: float = 0.5
    idle_poll_s: float = 0.05
    # Other gateways (shared PostgreSQL) and `bridge outbox replay` add rows this process does
    # not see being written: look at the table at least this often.
    rescan_s: float = 1.0
    stats_every_s: float = 1.0
    max_backoff_s: float = 30.0
    # How long a claim leases its rows: renewed every third of it while the round runs; after
    # it, the rows of a relay that died are sent by another gateway sharing the database.
    lease_s: float = 30.0


class Relay:
    def __init__(
        self,
        destination: Destination,
        repo: OutboxRepository,
        feed: OutboxFeed,
        settings: RelaySettings | None = None,
    ) -> None:
        self.destination = destination
        self.name = f"outbox:{destination.name}"
        self._repo = repo
        self._feed = feed
        self._s = settings or RelaySettings()
        # Both loops restart, with backoff, on any exception (a bug, a driver error that is
        # not a StoreError): a relay never stops while the gateway runs.
        self._loop = Supervised(self.name, self._run, max_backoff_s=self._s.max_backoff_s)
        # Its own task: a round can wait on an outage for hours, health must stay fresh.
        self._stats = Supervised(
            f"{self.name}:stats", self._watch, max_backoff_s=self._s.max_backoff_s
        )
        self._started = False
        self._closed = False
        self._last_error = ""
        self._backlog = 0
        self._oldest: float | None = None
        self._dead_letters = 0
        # Read once: a destination's capabilities are fixed by its settings.
        self._caps = destination.capabilities
        initial, cap = self._caps.backoff or (self._s.retry_initial_s, self._s.max_backoff_s)
        self._policy = RetryPolicy(self._s.max_retries, self._s.max_retry_age_s, initial, cap)
        self._accepted_at: float | None = None  # monotonic time of the last accepted event
        self._due: list[float] = []  # heap: wall times retried events become due
        self._outage = 0  # rounds in a row that found the destination down as a whole
        self._run_of_failures = 0  # retryable failures since the destination last accepted
        # The dispatcher's state (``_run``): assets of running rounds (none of their later
        # events may be claimed), lanes wanting a slot, the slots themselves.
        self._busy: set[str] = set()
        self._demand = 0
        self._limit = asyncio.Semaphore(max(1, self._caps.concurrency))
        self._wake = asyncio.Event()  # a round freed assets or slots
        self._freed = False  # ... since the last claim
        self._crash: Exception | None = None  # a round's bug, re-raised by the dispatcher
        self._hold_until = 0.0  # monotonic: no claim before (store trouble, MES outage)
        self._claim_s = _MIN_CLAIM_GAP_S  # how long the last claim took
        self._store_backoff = Backoff(initial_s=_STORE_RETRY_S, max_s=self._s.max_backoff_s)
        self._settler = _Settler(repo, destination.name)  # a new one for each run of _run
        self.delivered = 0
        self.rejected = 0
        self.retried = 0
        self.dead_lettered = 0

    async def start(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._loop.start()
            self._stats.start()

    async def close(self) -> None:
        """Stop; events not yet accepted stay in the outbox for the next start."""
        self._closed = True
        if not self._started:
            return
        await self._loop.stop()
        await self._stats.stop()
        log.info(
            "outbox_relay_stopped",
            destination=self.destination.name,
            delivered=self.delivered,
            rejected=self.rejected,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
        )

    def health(self) -> ComponentHealth:
        feed = self._feed
        age = 0 if self._oldest is None else max(0, int(time.time() - self._oldest))
        counters = {
            "backlog": self._backlog,
            "oldest_pending_age_s": age,
            "dead_letters": self._dead_letters,
            "delivered": self.delivered,
            "rejected": self.rejected,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "refused": feed.refused,
            "dropped": feed.dropped,
            "max_pending": feed.budget.max_pending,
            # Counters are integers: the budget policy as a flag (the API names it).
            "drop_oldest": int(feed.budget.when_full == "drop-oldest"),
            "restarts": self._loop.restarts + self._stats.restarts,
        }
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        if not self._started:
            return ComponentHealth(self.name, "starting", counters=counters)
        if self._loop.done() or self._stats.done():
            return ComponentHealth(self.name, "down", "relay task ended", counters)
        error = (
            self._last_error
            or self._loop.last_crash
            or self._stats.last_crash
            or self.destination.health().detail
        )
        if error:
            return ComponentHealth(self.name, "degraded", error, counters)
        if self._backlog >= feed.budget.max_pending:
            full = f"outbox full ({feed.budget.when_full})"
            return ComponentHealth(self.name, "degraded", full, counters)
        return ComponentHealth(self.name, "ok", counters=counters)

    # -- loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        """The dispatcher: claims the events of assets not already being sent and hands each
        claim to a round of its own, so new claims go on while earlier rounds still send."""
        self._busy.clear()
        self._demand = 0
        self._crash = None
        self._limit = asyncio.Semaphore(max(1, self._caps.concurrency))
        recorder = _Recorder(self._repo, self.destination.name, self._counted)
        self._settler = _Settler(self._repo, self.destination.name)
        rounds: set[asyncio.Task[None]] = set()
        renewing = asyncio.create_task(self._renew(rounds), name=f"{self.name}:leases")
        seen_added = -1
        last_scan = last_claim = 0.0
        more = False  # the last claim left due assets behind (it took ``batch_size``)
        try:
            while True:
                if self._crash is not None:
                    raise self._crash  # a round hit a bug: restart the whole loop
                now = time.monotonic()
                if now < self._hold_until:  # store trouble or a destination outage
                    await self._nap(self._hold_until - now)
                    continue
                if self._demand >= self._caps.concurrency or len(rounds) > _MAX_ROUNDS:
                    await self._nap(self._s.idle_poll_s)  # every slot taken: no claim yet
                    continue
                due = bool(self._due) and time.time() >= self._due[0]
                added = seen_added != self._feed.added
                rescan = now - last_scan >= self._s.rescan_s
                if not (more or added or due or rescan or self._freed):
                    await self._nap(self._s.idle_poll_s)  # nothing new to claim
                    continue
                if self._demand and now - last_claim < self._claim_s:
                    # Slots are still busy: claim again, but spaced (see _CLAIM_GAP_FACTOR).
                    await self._nap(self._claim_s - (now - last_claim))
                    continue
                seen_added, last_scan, self._freed = self._feed.added, now, False
                while self._due and self._due[0] <= time.time():
                    heapq.heappop(self._due)
                try:
                    claim = await _see_through(
                        self._repo.claim,
                        self.destination.name,
                        self._s.batch_size,
                        None,
                        self._s.per_asset,
                        self._s.lease_s,
                        frozenset(self._busy),  # a copy: rounds change the set meanwhile
                        cleanup=Claim.close,
                    )
                except BridgeError as exc:
                    self._store_failed(exc)
                    seen_added = -1  # look again after the pause
                    continue
                last_claim = time.monotonic()
                self._claim_s = max(_MIN_CLAIM_GAP_S, _CLAIM_GAP_FACTOR * (last_claim - now))
                assets = {e.asset for e in claim.events}
                more = len(assets) >= self._s.batch_size
                if not claim.events:
                    self._store_ok()
                    continue
                self._busy.update(assets)
                task = asyncio.create_task(self._round(claim, recorder), name=f"{self.name}:round")
                rounds.add(task)
                task.add_done_callback(rounds.discard)
        finally:
            # A stopped relay leaves its rounds' unsent events in the outbox; each round waits
            # for its store calls and releases its leases before it ends.
            for task in list(rounds):
                task.cancel()
            await asyncio.gather(*rounds, return_exceptions=True)
            await cancel_and_wait(renewing)
            await recorder.close()
            await self._settler.wait()

    async def _nap(self, seconds: float) -> None:
        """Sleep until ``seconds`` passed or a round freed assets or slots (``_wake``)."""
        # Not ``wait_for``: on Python 3.11 it returns instead of raising when the cancellation
        # arrives as the event is set, and a stopped relay would go on napping forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()
        self._wake.clear()

    def _store_failed(self, exc: BridgeError) -> None:
        delay = self._store_backoff.failed()
        if not self._last_error:
            log.error("outbox_relay_failing", destination=self.destination.name, error=str(exc))
        self._last_error = str(exc)
        self._hold_until = max(self._hold_until, time.monotonic() + delay)

    def _store_ok(self) -> None:
        if self._store_backoff.failures:
            log.info("outbox_relay_recovered", destination=self.destination.name)
        self._store_backoff.succeeded()
        self._last_error = ""
        self._loop.ok()

    def _free(self, assets: set[str]) -> None:
        """These assets have nothing of theirs in flight or waiting on an outcome any more."""
        self._busy.difference_update(assets)
        assets.clear()
        self._freed = True
        self._wake.set()

    async def _watch(self) -> None:
        while True:
            try:
                stats = await asyncio.to_thread(self._repo.stats, self.destination.name)
            except BridgeError as exc:
                # The delivery loop reports store trouble; here it only means stale figures.
                log.debug("outbox_stats_failed", destination=self.destination.name, error=str(exc))
            else:
                self._backlog = stats.backlog
                self._oldest = stats.oldest_created_at
                self._dead_letters = stats.dead_letters
                self._feed.pending = stats.backlog
                self._stats.ok()
            await asyncio.sleep(self._s.stats_every_s)

    async def _round(self, claim: Claim, recorder: _Recorder) -> None:
        """Send one claim's events, record their outcomes, release what is left; a store
        failure pauses the dispatcher, a bug restarts it (``_crash``)."""
        sent = _Sent({e.asset for e in claim.events})
        try:
            try:
                await self._send_round(claim, recorder, sent)
            except asyncio.CancelledError:
                # A stopped relay still records what was accepted: the commit under way ends
                # before the leases are released (a released row is not deleted by it).
                await recorder.wait()
                raise
            finally:
                await _see_through(claim.close)
        except BridgeError as exc:
            self._store_failed(exc)
        except Exception as exc:
            self._crash = exc
        else:
            self._store_ok()
        finally:
            # What is not done is back in the outbox (retry state, released leases): the next
            # claim decides when each asset goes on. Only the assets still held: one a lane
            # freed may be in a later round by now.
            self._free(sent.held)

    async def _send_round(self, claim: Claim, recorder: _Recorder, sent: _Sent) -> None:
        outcomes = await self._send_claimed(claim, recorder, sent)
        done = set(sent.recorded) | sent.settled
        left = [e for e in claim.events if e.id not in done]
        if not left:
            claim.all_recorded()  # the usual round: nothing left to finish or release
            return
        await self._settle(claim, left, outcomes, sent, part=False)

    async def _settle(
        self,
        claim: Claim,
        events: list[OutboxEvent],
        outcomes: dict[int, Outcome],
        sent: _Sent,
        *,
        part: bool,
    ) -> None:
        """Record what came of ``events`` (rejections, retries, dead letters, accepted events
        whose own commit failed) and release their leases; ``part``: some of the claim's
        events (one asset's), the rest of the claim goes on."""
        accepted = bool(sent.recorded or sent.unrecorded)
        ids = {e.id for e in events}
        unrecorded = [i for i in sent.unrecorded if i in ids]
        rejected = {e.id: o for e in events if isinstance(o := outcomes.get(e.id), str)}
        retried = self._decide(events, outcomes, accepted)
        if part:
            # A failed lane: its settle shares one transaction with the lanes that failed
            # meanwhile (a flaky MES fails hundreds a second, ~5 ms of CPU per transaction).
            dead = await self._settler.finish(
                PartOutcome(
                    claim,
                    events,
                    unrecorded,
                    rejected,
                    self._s.dead_letter_after,
                    self._s.reject_retry_s,
                    retried,
                )
            )
        else:
            dead = await _see_through(
                claim.finish,
                unrecorded,
                rejected,
                self._s.dead_letter_after,
                self._s.reject_retry_s,
                retried,
                None,
            )
        sent.settled.update(ids)
        self._counted(len(unrecorded))  # deleted by ``finish`` instead
        self._feed.pending = max(0, self._feed.pending - len(dead))
        self.rejected += len(rejected)
        self.retried += len(retried)
        self.dead_lettered += len(dead)
        for event in dead:
            log.warning(
                "outbox_dead_letter",
                destination=self.destination.name,
                asset=event.asset,
                event_id=event.event_id,
                error=rejected.get(event.id) or retried[event.id].reason,
                attempts=event.attempts + 1 if event.id in rejected else retried[event.id].retries,
            )
        if retried and not accepted and not self._working():
            # Nothing accepted lately: the destination is down as a whole, not one event.
            # Pause the relay (not the events): their count stays, the backlog waits. Lanes
            # and rounds running side by side all see it: one pause, not one step of backoff
            # for each of them.
            if time.monotonic() >= self._hold_until:
                self._outage += 1
            hints = [o.after_s for i in retried if isinstance(o := outcomes.get(i), Retry)]
            hint = max((h for h in hints if h is not None), default=None)
            pause = self._policy.delay(self._outage, hint)
            self._hold_until = max(self._hold_until, time.monotonic() + pause)

    async def _renew(self, rounds: set[asyncio.Task[None]]) -> None:
        """Keep the rounds' leases while they run (an MES that answers slowly, a long backlog),
        so no other relay takes over rows that are still being sent."""
        every = max(0.05, self._s.lease_s / 3)
        while True:
            await asyncio.sleep(every)
            if not rounds:
                continue
            try:
                await _see_through(self._repo.renew, self.destination.name, self._s.lease_s)
            except BridgeError as exc:
                # The leases may lapse: another relay then sends those rows (same keys).
                log.warning("outbox_lease_renew_failed", destination=self.name, error=str(exc))

    def _counted(self, accepted: int) -> None:
        self.delivered += accepted
        self._feed.pending = max(0, self._feed.pending - accepted)
        if accepted:
            self._outage = 0

    def _accepted(self) -> None:
        self._accepted_at = time.monotonic()
        self._run_of_failures = 0

    def _failed(self, outcome: Outcome) -> None:
        if isinstance(outcome, Retry):
            self._run_of_failures += 1

    def _working(self) -> bool:
        """The destination accepted an event recently: a failure belongs to its event."""
        last = self._accepted_at
        return last is not None and time.monotonic() - last <= self._s.working_window_s

    def _decide(
        self, events: list[OutboxEvent], outcomes: dict[int, Outcome], accepted_now: bool
    ) -> dict[int, RetryDecision]:
        now = time.time()
        counted = accepted_now or self._working()
        out: dict[int, RetryDecision] = {}
        for e in events:
            outcome = outcomes.get(e.id)
            if isinstance(outcome, Retry):
                out[e.id] = self._policy.decide(
                    e.retries,
                    e.first_failed_at,
                    outcome.reason,
                    now,
                    counted=counted,
                    run=self._run_of_failures,
                    hint_s=outcome.after_s,
                )
        for d in out.values():
            if d.next_attempt_at > now and not d.dead:
                # Wake up for it then, not at the next rescan (a second later by default).
                heapq.heappush(self._due, d.next_attempt_at)
        return out

    async def _send_claimed(
        self, claim: Claim, recorder: _Recorder, sent: _Sent
    ) -> dict[int, Outcome]:
        """Send the claimed events; returns the outcome of every event that was sent.

        An asset's next event is sent only once its previous one was accepted, so an asset
        never has two events in flight and a failure holds back the rest of its queue.
        """
        queues: dict[str, list[OutboxEvent]] = {}
        for e in claim.events:  # oldest first, so each queue is in delivery order
            queues.setdefault(e.asset, []).append(e)
        outcomes: dict[int, Outcome] = {}
        if self._caps.batch_size > 1:
            await self._waves(queues, outcomes, recorder, sent, self._caps.batch_size)
        else:
            await asyncio.gather(
                *(self._lane(claim, q, outcomes, recorder, sent) for q in queues.values())
            )
        return outcomes

    async def _lane(
        self,
        claim: Claim,
        queue: list[OutboxEvent],
        outcomes: dict[int, Outcome],
        recorder: _Recorder,
        sent: _Sent,
    ) -> None:
        # A lane wants a slot from its start until its last send returned: the dispatcher
        # claims more only while fewer lanes want one than there are slots.
        self._demand += 1
        wanting = True
        try:
            for i, e in enumerate(queue):
                async with self._limit:
                    outcome = await self._send(e)
                outcomes[e.id] = outcome
                if outcome is not None or i == len(queue) - 1:
                    wanting = False
                    self._demand -= 1
                    self._wake.set()
                if outcome is not None:
                    self._failed(outcome)
                    await self._settle_early(claim, queue[i:], outcomes, sent)
                    return
                self._accepted()
                # The asset's next event waits until this one is recorded (the commit is
                # shared with every lane's replies): a crash re-sends at most one accepted
                # event per asset, the one whose commit was under way.
                if not await recorder.add([e.id]):
                    sent.unrecorded.append(e.id)
                    return  # the store failed: finish() records it, or the round is sent again
                sent.recorded.append(e.id)
            # Every event of the asset in this claim is accepted and recorded: its later
            # events may go in the next claim, whatever the rest of this round does.
            asset = queue[0].asset
            sent.held.discard(asset)
            self._free({asset})
        finally:
            if wanting:
                self._demand -= 1

    async def _settle_early(
        self,
        claim: Claim,
        rest: list[OutboxEvent],
        outcomes: dict[int, Outcome],
        sent: _Sent,
    ) -> None:
        """An asset's send failed: schedule its retry and release it now, not when the whole
        claim is done (a long round would hold it back far beyond its backoff)."""
        try:
            await self._settle(claim, rest, outcomes, sent, part=True)
        except BridgeError as exc:
            # The round's own finish tries again; until then the asset stays held.
            log.warning("outbox_settle_failed", destination=self.name, error=str(exc))
            return
        asset = rest[0].asset
        sent.held.discard(asset)
        self._free({asset})

    async def _waves(
        self,
        queues: dict[str, list[OutboxEvent]],
        outcomes: dict[int, Outcome],
        recorder: _Recorder,
        sent: _Sent,
        size: int,
    ) -> None:
        depth = 0
        while True:
            wave = [q[depth] for q in queues.values() if depth < len(q)]
            if not wave:
                return
            # A wave holds one event per asset, so a request never carries two events of one
            # asset: order per asset does not depend on how the MES processes a batch.
            chunks = [wave[i : i + size] for i in range(0, len(wave), size)]
            self._demand += len(chunks)
            try:
                results = await asyncio.gather(*(self._send_batch(c) for c in chunks))
            finally:
                self._demand -= len(chunks)
                self._wake.set()
            accepted: list[int] = []
            for e, outcome in zip(wave, (o for chunk in results for o in chunk), strict=True):
                outcomes[e.id] = outcome
                if outcome is None:
                    accepted.append(e.id)
                else:
                    self._failed(outcome)
                    del queues[e.asset]
            if accepted:
                self._accepted()
                if not await recorder.add(accepted):
                    sent.unrecorded.extend(accepted)
                    return
                sent.recorded.extend(accepted)
            depth += 1

    async def _send_batch(self, events: list[OutboxEvent]) -> list[Outcome]:
        async with self._limit:
            return await self._deliver(events)

    async def _send(self, event: OutboxEvent) -> Outcome:
        (outcome,) = await self._deliver([event])
        return outcome

    async def _deliver(self, events: list[OutboxEvent]) -> list[Outcome]:
        """One ``deliver`` call: one outcome per event, in order."""
        try:
            outcomes = list(
                await self.destination.deliver([Envelope(e.event_id, e.body) for e in events])
            )
            if len(outcomes) != len(events):
                raise ValueError(f"{len(outcomes)} outcomes for {len(events)} events")
            return outcomes
        except Exception as exc:
            # A bug in the destination: count it as a rejection so it ends in the dead
            # letters (visible, replayable) instead of spinning on one event forever.
            log.exception(
                "outbox_deliver_crashed",
                destination=self.destination.name,
                event_ids=[e.event_id for e in events],
            )
            return [f"internal error: {type(exc).__name__}: {exc}"] * len(events)


@dataclass(slots=True)
class _Sent:
    """A round's state: the assets it still ``held`` (busy in the relay), its accepted events:
    ``recorded`` (deleted as their replies arrived) and ``unrecorded`` (that commit failed:
    the round's ``finish`` deletes them)."""

    held: set[str]
    recorded: list[int] = field(default_factory=list)
    unrecorded: list[int] = field(default_factory=list)
    settled: set[int] = field(default_factory=set)  # by a lane's early ``finish``


class _Recorder:
    """Records accepted rows as their replies arrive: one commit for whatever came meanwhile,
    from every round of the relay.

    ``add`` returns once its rows are committed (True) or the store failed (False: the caller
    leaves them to its round's ``finish``). The rows that arrive while a commit runs share the
    next one (and one future: a round can hold 16,000 events).
    """

    def __init__(
        self, repo: OutboxRepository, destination: str, counted: Callable[[int], None]
    ) -> None:
        self._repo = repo
        self._destination = destination
        self._counted = counted
        self._ids: list[int] = []
        self._done: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last = 0.0  # monotonic time the last commit ended

    async def add(self, ids: list[int]) -> bool:
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        done = self._done
        self._ids.extend(ids)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self._flush(), name=f"outbox:{self._destination}:record"
            )
        return await asyncio.shield(done)

    async def wait(self) -> None:
        """Until the commit in progress ended (bounded)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), _SETTLE_TIMEOUT_S)

    async def close(self) -> None:
        """Wait for the commit in progress (a stopped relay still records what it sent)."""
        await self.wait()
        self._settle(self._done, False)
        self._ids, self._done = [], None

    @staticmethod
    def _settle(done: asyncio.Future[bool] | None, ok: bool) -> None:
        if done is not None and not done.done():
            done.set_result(ok)

    async def _flush(self) -> None:
        while self._ids:
            if (gap := self._last + _RECORD_GAP_S - time.monotonic()) > 0:
                await asyncio.sleep(gap)  # replies arriving meanwhile share the commit
            ids, done = self._ids, self._done
            self._ids, self._done = [], None
            try:
                await _see_through(self._repo.record_accepted, self._destination, ids)
                ok = True
            except BridgeError as exc:
                log.warning("outbox_record_failed", destination=self._destination, error=str(exc))
                ok = False
            self._last = time.monotonic()
            if ok:
                self._counted(len(ids))
            self._settle(done, ok)


class _Settler:
    """Settles failed lanes (``finish_parts``): one transaction for every lane that failed
    while the previous one ran, from every round of the relay.

    ``finish`` returns the part's dead letters once committed, or raises the store's error.
    """

    def __init__(self, repo: OutboxRepository, destination: str) -> None:
        self._repo = repo
        self._destination = destination
        self._parts: list[tuple[PartOutcome, asyncio.Future[list[OutboxEvent] | BridgeError]]] = []
        self._task: asyncio.Task[None] | None = None

    async def finish(self, part: PartOutcome) -> list[OutboxEvent]:
        done: asyncio.Future[list[OutboxEvent] | BridgeError]
        done = asyncio.get_running_loop().create_future()
        self._parts.append((part, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(
                self._flush(), name=f"outbox:{self._destination}:settle"
            )
        # A result, never an exception, in the future: a cancelled lane leaves none unread.
        try:
            result = await asyncio.shield(done)
        except asyncio.CancelledError:
            # Like ``_see_through``: the round closes its claim next (releases its leases),
            # which must not run beside the settle of the same rows (a deadlock on PostgreSQL).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(done), _SETTLE_TIMEOUT_S)
            raise
        if isinstance(result, BridgeError):
            raise result
        return result

    async def wait(self) -> None:
        """Until the settles under way ended (bounded): a stopped relay still records them."""
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), _SETTLE_TIMEOUT_S)

    async def _flush(self) -> None:
        while self._parts:
            batch, self._parts = self._parts, []
            results: list[list[OutboxEvent]] | BridgeError
            try:
                results = await _see_through(self._repo.finish_parts, [p for p, _ in batch])
            except BridgeError as exc:
                results = exc
            for i, (_, done) in enumerate(batch):
                if not done.done():
                    done.set_result(results if isinstance(results, BridgeError) else results[i])
