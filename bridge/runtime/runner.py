"""Runs one model: one batched call per run, off the event loop. A ``trigger: period`` model
runs every ``period_s`` over all its assets; a ``trigger: change`` model runs when inputs change,
over the assets whose inputs changed since its last run (``bridge.runtime.trigger``).

What runs is the runner's ``Deployment`` (``bridge.lifecycle.deployment``): the active version
and, optionally, a candidate in shadow mode (same rows, outputs stored, never published) or in
canary mode (it serves its share of the assets; the active version still runs on those rows so
the two can be compared). ``swap`` replaces the deployment between two ticks.

A model with ``backfill: {predictions: true}`` also makes predictions for the past, flagged
``historical``, over the gaps a source filled from the server's history: before each tick, a
chunk of at most ``PAST_ROWS_PER_TICK`` rows of them, so a long gap over many assets is worked
off over several ticks while the live ones keep their pace (``tick_past``: all at once).

Hooks: every callable in ``observers`` is called once per tick, after the predictions are
made and before they are published, with a ``TickOutcome`` (the feature batch, the active and
candidate results and the predictions). Observers must be quick and must not raise; slow work
belongs in their own task.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import structlog

from bridge.config.resolved import ResolvedModel
from bridge.errors import BridgeError, InferenceError
from bridge.features.vector import AssetRow, FeatureBatch, WindowedTag, build_batch
from bridge.fleet.shard import Shard
from bridge.inference.model import BatchResult, LoadedModel
from bridge.lifecycle.deployment import Deployment, Served
from bridge.lifecycle.shadow import CandidateComparison, agrees, value_text
from bridge.lifecycle.version_stats import VersionStats
from bridge.runtime.tagtable import Backfill
from bridge.runtime.trigger import ChangeTrigger
from bridge.types import ComponentHealth, HealthState, Prediction, Quality

__all__ = ["Enricher", "ModelRunner", "Observer", "TickOutcome"]

log = structlog.get_logger(__name__)

# Stable namespace for prediction ids: uuid5(namespace, gateway/boot/asset/model/seq). ``seq``
# goes on across restarts (persisted); the boot id (random per start) keeps ids unique even when
# a store is replaced and numbering starts over.
PREDICTION_NS = uuid.UUID("6f1b2a3e-8c1d-5e0f-9a7b-2c4d6e8f0a1b")

Value = str | float | None
# Fleet ticks start this long after the period's start on the wall clock (at most a 20th of
# the period): far enough from the boundary that a slew of the clock does not move a tick
# into the period before.
_WALL_PHASE_S = 0.05
# Predictions for the past: at most this many periods per asset per backfill (the newest; an
# hour at 1 s); at most this many rows (one model call, published at once) before a tick.
# Measured on 2 shared cores, the bundled model, a 60 s gap over 2,000 assets: 10,000-20,000
# past predictions/s, so a chunk delays a tick by ~0.2-0.4 s and the gap takes ~30 periods.
MAX_PAST_STEPS = 3600
PAST_ROWS_PER_TICK = 4096


def id_prefix(gateway_id: str, boot_id: str) -> hashlib._Hash:
    """The SHA-1 state of a prediction id's namespace and ``gateway/boot/``: hashed once."""
    return hashlib.sha1(PREDICTION_NS.bytes + f"{gateway_id}/{boot_id}/".encode())


def prediction_id(prefix: hashlib._Hash, rest: str) -> str:
    """``str(uuid.uuid5(PREDICTION_NS, gateway/boot/rest))``, the same text, without building
    a UUID object (uuid5 was a fifth of a 2,000-row run on the event loop)."""
    h = prefix.copy()
    h.update(rest.encode())
    b = bytearray(h.digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """One tick, for observers. ``active`` is ``None`` when nothing ran or the run failed;
    ``candidate_rows`` indexes ``batch.runnable`` rows the candidate ran on."""

    model: str
    deployment: Deployment
    batch: FeatureBatch
    active: BatchResult | None
    candidate: BatchResult | None
    candidate_rows: tuple[int, ...]
    predictions: Sequence[Prediction]


@dataclass(slots=True)
class _PastWork:
    """The planned past times of one backfill: (period number on the wall clock, assets) in
    time order, the next one to make, and the wall clock minus the monotonic one then."""

    backfill: Backfill
    steps: list[tuple[int, list[str]]]
    offset: float
    next: int = 0


Observer = Callable[[TickOutcome], None]
# Enrichers may replace predictions (same ids and order) before they are published, e.g. with
# drift scores and explanations (bridge.runtime.insight); they run after the observers.
Enricher = Callable[[TickOutcome], Awaitable[Sequence[Prediction]]]


@dataclass
class ModelRunner:
    model: ResolvedModel
    loaded: LoadedModel
    labels: tuple[str, ...]
    lookup: Callable[[str], WindowedTag]
    publish: Callable[[Sequence[Prediction]], Awaitable[None]]
    gateway_id: str
    boot_id: str
    # Where shadow/canary comparisons go (the registry's store); None keeps them in memory only.
    record_comparisons: Callable[[Sequence[CandidateComparison]], Awaitable[None]] | None = None
    # Set for a `trigger: change` model (the tag table marks its changed assets).
    trigger: ChangeTrigger | None = None
    observers: list[Observer] = field(default_factory=list)
    enrichers: list[Enricher] = field(default_factory=list)
    # Windows and input ages on the monotonic clock (bridge.runtime.tagtable); prediction
    # timestamps on the wall clock. Parameters so that tests can step the wall clock.
    wall_clock: Callable[[], float] = time.time
    monotonic_clock: Callable[[], float] = time.monotonic
    runs: int = 0
    overruns: int = 0
    errors: int = 0
    last_latency_ms: float = 0.0
    last_error: str = ""
    # Time spent handing predictions to the sinks: the store writer makes the runner wait
    # there while its queue is full (backpressure), so ticks slow down instead of losing rows.
    publish_wait_s: float = 0.0
    # Set (to the reason) while the runtime integrity check withholds this model's outputs.
    withheld: str = ""
    # Set when a canary crossed its guard limit, or when a candidate failed (an error or a
    # NaN/inf output) and its guard does not tolerate failures: the registry watcher retires it.
    guard_tripped: str | None = None
    # Set by the registry watcher when it refused a registry version (``""`` once a new
    # deployment serves): health names it, the old version keeps serving.
    refused: str = ""
    refusals: int = 0
    deployment: Deployment = field(init=False)
    stats: dict[str, VersionStats] = field(default_factory=dict)
    # Fleet: the assets this gateway serves and their fencing tokens (None: every asset).
    # A period model then ticks on the wall clock's multiples of ``period_s``, as every
    # gateway of the fleet does: an asset that changes hands gets one prediction per period.
    shard: Shard | None = None
    # The tag table's backfills this model has yet to make predictions for the past over
    # (``TagTable.take_past``); None: it makes none.
    past: Callable[[str], Sequence[Backfill]] | None = None
    past_made: int = 0  # historical predictions made
    past_skipped: int = 0  # past rows without a prediction (blocked then, or unusable output)
    _past_work: deque[_PastWork] = field(default_factory=deque, repr=False)
    _seq: dict[str, int] = field(default_factory=dict)
    _fences: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deployment = Deployment(
            Served(self.model.version, self.loaded.sha256, self.loaded, self.labels)
        )

    def swap(self, deployment: Deployment) -> None:
        """Serve ``deployment`` from the next tick on. The sequence of each asset goes on."""
        old = self.deployment
        self.deployment = deployment
        self.loaded, self.labels = deployment.active.loaded, deployment.active.labels
        self.refused = ""
        if old.candidate != deployment.candidate:
            self.guard_tripped = None
        log.info(
            "model_deployment_changed",
            model=self.model.name,
            active=deployment.active.version,
            previous=old.active.version,
            candidate=deployment.candidate.version if deployment.candidate else None,
            mode=deployment.mode,
        )

    def version_stats(self, version: str) -> VersionStats:
        st = self.stats.get(version)
        if st is None:
            st = self.stats[version] = VersionStats(version)
        return st

    def health(self) -> ComponentHealth:
        state: HealthState = "degraded" if self.last_error or self.refused else "ok"
        counters = {
            "runs": self.runs,
            "overruns": self.overruns,
            "errors": self.errors,
            "last_latency_us": int(self.last_latency_ms * 1000),
            "backpressure_ms": int(self.publish_wait_s * 1000),
            "refused_versions": self.refusals,
        }
        if self.past_made or self.past_skipped or self._past_work:
            counters["historical_predictions"] = self.past_made
            counters["historical_skipped"] = self.past_skipped
            counters["historical_pending_periods"] = sum(
                len(w.steps) - w.next for w in self._past_work
            )
        if self.trigger is not None:
            counters["input_changes"] = self.trigger.marks
            counters["coalesced_changes"] = self.trigger.coalesced
        detail = "; ".join(d for d in (self.last_error, self.refused) if d)
        return ComponentHealth(f"model:{self.model.name}", state, detail, counters)

    async def run(self) -> None:
        if self.trigger is not None:
            await self._run_on_change(self.trigger)
            return
        if self.shard is not None:
            await self._run_on_the_wall_clock()
            return
        period = self.model.period_s
        next_at = time.monotonic()
        while True:
            await self._safe_tick(None)
            next_at += period
            now = time.monotonic()
            if now > next_at:  # skip ticks we missed instead of bursting to catch up
                missed = int((now - next_at) // period) + 1
                self.overruns += missed
                next_at += missed * period
            await asyncio.sleep(next_at - now)

    async def _run_on_the_wall_clock(self) -> None:
        """Fleet: tick in period ``k`` of the wall clock at ``k * period_s`` plus a small
        phase, as every gateway of the fleet does, each time from the wall clock (not by
        adding periods on another clock): a prediction's timestamp then names its period
        even when the clocks slew by a few milliseconds, and a hand-over between two ticks
        gives the asset one prediction per period."""
        period = self.model.period_s
        phase = min(_WALL_PHASE_S, period / 20)
        # Not in the period under way: another gateway may have ticked in it for an asset
        # this one is handed in it.
        last: int | None = math.floor(self.wall_clock() / period)
        while True:
            now = self.wall_clock()
            slot = math.floor(now / period)
            start = slot * period + phase
            if slot == last:  # ticked in this period already: the next one
                start += period
            if now < start:  # woken early (timer resolution) or not yet: look again then
                await asyncio.sleep(start - now)
                continue
            if last is not None and slot > last + 1:  # ticks missed: not made up for
                self.overruns += slot - last - 1
            last = slot
            await self._safe_tick(None)

    async def _run_on_change(self, trigger: ChangeTrigger) -> None:
        """Wait for a change (an event, no polling), wait out the minimum interval, run over
        the changed assets; changes meanwhile join the next run (one row per asset). A burst
        runs in chunks (``ChangeTrigger.take``), the loop free between them."""
        while True:
            if not trigger.ready:
                self._take_past()
                if self._past_work:
                    # Predictions for the past still to make: a chunk per period_s meanwhile.
                    try:
                        async with asyncio.timeout(self.model.period_s):
                            await trigger.changed.wait()
                    except TimeoutError:
                        await self._safe_past()
                        continue
                else:
                    await trigger.changed.wait()
            delay = trigger.wait_s(self.monotonic_clock())
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Between two chunks of a burst: let the loop deliver what arrived meanwhile
                # (a lone change then goes first in the next chunk).
                await asyncio.sleep(0)
            assets = trigger.take(self.monotonic_clock())
            if assets:
                await self._safe_tick(assets)

    async def _safe_tick(self, assets: Sequence[str] | None) -> None:
        if self.past is not None:
            await self._safe_past()  # first the past, then the tick of now
        try:
            await self.tick(assets)
        except Exception as exc:  # a bug in one tick must not end the gateway: next tick
            self.errors += 1
            self.last_error = f"tick failed: {exc!r}"
            log.exception("model_tick_failed", model=self.model.name)

    async def tick(self, assets: Sequence[str] | None = None) -> list[Prediction]:
        """One run over ``assets`` (default: all the model's assets)."""
        deployment = self.deployment  # one deployment for the whole tick
        if self.shard is not None:
            # Only the assets whose leases this gateway holds now, each with its token.
            self._fences = fences = self.shard.fences()
            assets = [a for a in (self.model.assets if assets is None else assets) if a in fences]
            if not assets:
                return []
        now = self.wall_clock()  # prediction time, for people and the store
        batch = build_batch(self.model, self.lookup, self.monotonic_clock(), assets)
        if self.withheld:
            # An artifact nobody approved (bridge.runtime.integrity): every asset is Bad with
            # the reason, and the model does not run.
            rows = [*batch.blocked, *batch.runnable]
            blocked = [replace(r, quality=Quality.BAD, reason=self.withheld) for r in rows]
            batch = FeatureBatch(batch.x[:0], [], blocked)
        predictions = [self._blocked(row, now, deployment.active) for row in batch.blocked]
        active: BatchResult | None = None
        candidate: BatchResult | None = None
        cand_rows: tuple[int, ...] = ()
        comparisons: list[CandidateComparison] = []
        if batch.runnable:
            active = await self._run_active(deployment.active, batch.x)
            if deployment.candidate is not None:
                cand_rows = tuple(
                    i
                    for i, row in enumerate(batch.runnable)
                    if deployment.runs_candidate(self.model.name, row.asset)
                )
                if cand_rows:
                    candidate = await self._run_candidate(deployment, batch.x, cand_rows)
            try:
                predictions += self._made_all(
                    deployment, batch, active, candidate, cand_rows, now, comparisons
                )
            except Exception as exc:  # reading the outputs failed: this tick is Bad, go on
                self._failed(deployment.active, f"cannot read the model's outputs: {exc!r}")
                log.exception("model_outputs_unreadable", model=self.model.name)
                active = candidate = None
                comparisons.clear()
                predictions += self._made_all(deployment, batch, None, None, (), now, [])
        self.runs += 1
        outcome = TickOutcome(
            self.model.name, deployment, batch, active, candidate, cand_rows, predictions
        )
        for observer in self.observers:
            try:
                observer(outcome)
            except Exception:  # an observer's bug must not stop predictions
                log.exception("model_observer_failed", model=self.model.name)
        for enrich in self.enrichers:
            try:
                enriched = list(await enrich(outcome))
            except Exception:  # an enricher's bug must not stop predictions
                log.exception("model_enricher_failed", model=self.model.name)
                continue
            if [p.id for p in enriched] == [p.id for p in predictions]:
                predictions = enriched
                outcome = replace(outcome, predictions=predictions)
        started = time.monotonic()
        try:
            await self.publish(predictions)
        finally:
            self.publish_wait_s += time.monotonic() - started
        if comparisons and self.record_comparisons is not None:
            try:
                await self.record_comparisons(comparisons)
            except BridgeError as exc:
                log.warning("comparisons_not_stored", model=self.model.name, error=str(exc))
        self._check_guard(deployment)
        return predictions

    def _take_past(self) -> None:
        """Plan the table's new backfills of this model (``_plan_past``)."""
        if self.past is not None:
            for backfill in self.past(self.model.name):
                self._plan_past(backfill)

    async def _safe_past(self) -> None:
        """The new backfills planned, then one chunk of the predictions for the past."""
        try:
            self._take_past()
            if self._past_work:
                await self._past_chunk(PAST_ROWS_PER_TICK)
        except Exception as exc:  # the live tick still runs
            self.errors += 1
            self.last_error = f"predictions for the past failed: {exc!r}"
            log.exception("past_predictions_failed", model=self.model.name)

    async def tick_past(self, backfill: Backfill) -> list[Prediction]:
        """All the predictions for the past over ``backfill`` (and those still planned), now;
        the runner itself makes them a chunk per tick (``_safe_past``)."""
        self._plan_past(backfill)
        made: list[Prediction] = []
        while self._past_work:
            made += await self._past_chunk(PAST_ROWS_PER_TICK)
        return made

    def _plan_past(self, backfill: Backfill) -> None:
        """Which past times to predict for over a gap a source filled from the server's
        history: the multiples of ``period_s`` on the wall clock within each asset's span, in
        time order, at most ``MAX_PAST_STEPS`` per asset (the newest)."""
        if self.withheld or not self.model.backfill_predictions:
            return
        assets = [a for a in self.model.assets if a in backfill.spans]
        if self.shard is not None:
            fences = self.shard.fences()
            assets = [a for a in assets if a in fences]
        period = self.model.period_s
        offset = self.wall_clock() - self.monotonic_clock()  # wall time of a monotonic one
        steps: dict[int, list[str]] = {}  # period number on the wall clock -> assets
        for asset in assets:
            first, last = backfill.spans[asset]
            k0, k1 = math.ceil((first + offset) / period), math.floor((last + offset) / period)
            if k1 - k0 >= MAX_PAST_STEPS:
                log.warning(
                    "past_predictions_cut",
                    model=self.model.name,
                    asset=asset,
                    periods=k1 - k0 + 1,
                    kept=MAX_PAST_STEPS,
                )
                k0 = k1 - MAX_PAST_STEPS + 1
            for k in range(k0, k1 + 1):
                steps.setdefault(k, []).append(asset)
        if steps:
            self._past_work.append(_PastWork(backfill, sorted(steps.items()), offset))
            log.info(
                "past_predictions_planned",
                model=self.model.name,
                assets=len(assets),
                periods=len(steps),
                rows=sum(len(a) for a in steps.values()),
            )

    async def _past_chunk(self, budget: int) -> list[Prediction]:
        """Predictions for the next planned past times, until ``budget`` rows: at each, the
        features of the windows as they were then (``Backfill.as_of``), stamped with that
        time and flagged ``historical``; normal ids and sequence numbers.

        The active version only (a candidate's comparisons judge live behaviour); no
        observers or enrichers (drift, metrics and explanations are about the present). A
        row that could not run then (an input stale, a window too short) or whose output is
        not a finite number makes no prediction: the live tick of that time already stored
        one saying the inputs were Bad."""
        served = self.deployment.active
        period = self.model.period_s
        if self.shard is not None:
            self._fences = self.shard.fences()
        rows: list[tuple[AssetRow, float]] = []
        xs: list[np.ndarray] = []
        work = self._past_work
        while work and len(rows) < budget:
            w = work[0]
            if w.next == len(w.steps):
                work.popleft()
                continue
            k, assets = w.steps[w.next]
            w.next += 1
            if self.shard is not None:
                assets = [a for a in assets if a in self._fences]
            wall = k * period
            t = wall - w.offset
            batch = build_batch(self.model, w.backfill.as_of(t), t, assets)
            self.past_skipped += len(batch.blocked)
            if batch.runnable:
                rows += [(row, wall) for row in batch.runnable]
                xs.append(batch.x)
            if w.next == len(w.steps):
                work.popleft()
            await asyncio.sleep(0)  # a step costs about a live tick's features: let others in
        return await self._made_past(served, rows, xs) if rows else []

    async def _made_past(
        self, served: Served, rows: list[tuple[AssetRow, float]], xs: list[np.ndarray]
    ) -> list[Prediction]:
        x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        try:
            result = await served.loaded.run_async(x)
        except Exception as exc:  # the past stays without predictions; live ticks go on
            self.past_skipped += len(rows)
            log.warning(
                "past_predictions_failed",
                model=self.model.name,
                version=served.version,
                rows=len(rows),
                error=str(exc),
            )
            return []
        out: list[Prediction] = []
        for i, (row, wall) in enumerate(rows):
            if result.reason(i):
                self.past_skipped += 1
                continue
            value, score = self._value(result, i, served.labels)
            out.append(
                self._prediction(row, wall, value, score, row.quality, served, historical=True)
            )
        self.past_made += len(out)
        if out:
            started = time.monotonic()
            try:
                await self.publish(out)
            finally:
                self.publish_wait_s += time.monotonic() - started
        return out

    async def _run_active(self, served: Served, x: np.ndarray) -> BatchResult | None:
        """``None`` when the model failed: the tick's rows are then Bad with the reason."""
        started = time.perf_counter()
        try:
            result = await served.loaded.run_async(x)
        except InferenceError as exc:
            self._failed(served, str(exc))
            return None
        except Exception as exc:  # LoadedModel maps its errors; anything else is still a model's
            self._failed(served, f"model {served.version} failed: {exc!r}")
            return None
        self.last_error = ""
        self.last_latency_ms = (time.perf_counter() - started) * 1000
        self.version_stats(served.version).ran(self.last_latency_ms)
        return result

    def _failed(self, served: Served, error: str) -> None:
        self.errors += 1
        self.version_stats(served.version).failed_runs += 1
        self.last_error = error
        log.error("inference_failed", model=self.model.name, version=served.version, error=error)

    async def _run_candidate(
        self, deployment: Deployment, x: np.ndarray, rows: tuple[int, ...]
    ) -> BatchResult | None:
        """A failing candidate never costs a prediction: its rows fall back to the active one.
        A failure is an error or a NaN/inf output on any of its rows."""
        served = deployment.candidate
        assert served is not None
        stats = self.version_stats(served.version)
        started = time.perf_counter()
        try:
            result = await served.loaded.run_async(x[list(rows)])
        except Exception as exc:  # InferenceError, or a model object that did not map its own
            self._candidate_failed(deployment, served, str(exc))
            return None
        if result.invalid is not None:
            self._candidate_failed(deployment, served, result.reason(int(result.invalid.argmax())))
            return None
        stats.ran((time.perf_counter() - started) * 1000)
        return result

    def _candidate_failed(self, deployment: Deployment, served: Served, error: str) -> None:
        """Count it; without a ``max_error_rate`` guard (which states how many failures are
        tolerated) the first failure retires the candidate: a model that fails on live inputs
        is broken, and letting every gateway of a fleet find that out again helps no one."""
        self.version_stats(served.version).failed_runs += 1
        log.warning(
            "candidate_inference_failed",
            model=self.model.name,
            version=served.version,
            error=error,
        )
        guard = deployment.guard
        if (guard is None or not guard.tolerates_failures) and self.guard_tripped is None:
            self.guard_tripped = f"candidate {served.version} failed: {error}"

    def _made_all(
        self,
        deployment: Deployment,
        batch: FeatureBatch,
        active: BatchResult | None,
        candidate: BatchResult | None,
        cand_rows: tuple[int, ...],
        now: float,
        comparisons: list[CandidateComparison],
    ) -> list[Prediction]:
        cand = deployment.candidate
        cand_index = {row: j for j, row in enumerate(cand_rows)} if candidate is not None else {}
        out: list[Prediction] = []
        for i, row in enumerate(batch.runnable):
            a_value, a_score = (
                self._value(active, i, deployment.active.labels) if active else (None, None)
            )
            j = cand_index.get(i)
            c_value: Value = None
            c_score: float | None = None
            if cand is not None and candidate is not None and j is not None:
                c_value, c_score = self._value(candidate, j, cand.labels)
            serve_candidate = (
                cand is not None
                and j is not None
                and deployment.serves_candidate(self.model.name, row.asset)
            )
            if serve_candidate and cand is not None:
                prediction = self._prediction(row, now, c_value, c_score, row.quality, cand)
                self.version_stats(cand.version).counted(c_value)
            elif active is not None and active.reason(i):
                unusable = AssetRow(
                    row.asset, Quality.BAD, active.reason(i), row.inputs, row.input_age_s
                )
                prediction = self._blocked(unusable, now, deployment.active)
            elif active is not None:
                prediction = self._prediction(
                    row, now, a_value, a_score, row.quality, deployment.active
                )
                self.version_stats(deployment.active.version).counted(a_value)
            else:
                failed = AssetRow(
                    row.asset,
                    Quality.BAD,
                    f"inference failed: {self.last_error}",
                    row.inputs,
                    row.input_age_s,
                )
                prediction = self._blocked(failed, now, deployment.active)
            out.append(prediction)
            agree = agrees(a_value, c_value) if cand is not None and j is not None else None
            if agree is not None and cand is not None and deployment.mode is not None:
                self.version_stats(cand.version).agreement.add(row.asset, agree)
                comparisons.append(
                    CandidateComparison(
                        model=self.model.name,
                        asset=row.asset,
                        mode=deployment.mode,
                        active_version=deployment.active.version,
                        candidate_version=cand.version,
                        prediction_id=prediction.id,
                        active_value=value_text(a_value),
                        candidate_value=value_text(c_value),
                        candidate_score=c_score,
                        agree=agree,
                        timestamp=now,
                        gateway=self.gateway_id,
                    )
                )
        return out

    def _check_guard(self, deployment: Deployment) -> None:
        cand, guard = deployment.candidate, deployment.guard
        if cand is None or guard is None or self.guard_tripped is not None:
            return
        reason = guard.tripped(self.version_stats(cand.version))
        if reason is not None:
            self.guard_tripped = reason
            log.warning(
                "canary_guard_tripped", model=self.model.name, version=cand.version, reason=reason
            )

    def resume(self, last: Mapping[str, int]) -> None:
        """Go on from the sequence numbers committed before this start (asset -> last seq)."""
        for asset, seq in last.items():
            self._seq[asset] = max(self._seq.get(asset, 0), seq)

    @property
    def sequences(self) -> dict[str, int]:
        """Asset -> last sequence number used (a runner rebuilt by a reload goes on from it)."""
        return dict(self._seq)

    def _next_id(self, asset: str) -> tuple[str, int]:
        seq = self._seq.get(asset, 0) + 1
        self._seq[asset] = seq
        return prediction_id(self._id_prefix, f"{asset}/{self.model.name}/{seq}"), seq

    @cached_property
    def _id_prefix(self) -> hashlib._Hash:
        return id_prefix(self.gateway_id, self.boot_id)

    @staticmethod
    def _value(result: BatchResult, i: int, labels: tuple[str, ...]) -> tuple[Value, float | None]:
        value: Value = None
        if result.labels is not None:
            index = int(result.labels[i])
            value = labels[index] if 0 <= index < len(labels) else str(index)
        elif result.values is not None:
            value = float(result.values[i])
        score = float(result.scores[i]) if result.scores is not None else None
        return value, score

    def _blocked(self, row: AssetRow, now: float, served: Served) -> Prediction:
        return self._prediction(row, now, None, None, Quality.BAD, served)

    def _prediction(
        self,
        row: AssetRow,
        now: float,
        value: Value,
        score: float | None,
        quality: Quality,
        served: Served,
        historical: bool = False,
    ) -> Prediction:
        pid, seq = self._next_id(row.asset)
        return Prediction(
            id=pid,
            seq=seq,
            asset=row.asset,
            model=self.model.name,
            version=served.version,
            sha256=served.sha256,
            value=value,
            score=score,
            quality=quality,
            timestamp=now,
            input_age_s=row.input_age_s,
            inputs=row.inputs,
            reason=row.reason,
            fence=self._fences.get(row.asset) if self.shard is not None else None,
            historical=historical,
        )
