"""The write-back actions at run time: the safe write protocol around the pure evaluator.

Predictions (the runners' published batches) and tag changes (the tag table's sample feed) go
into one bounded queue; one worker takes them in order and, for each action they trigger,
evaluates the action on a fresh snapshot of its tags and applies the decision:

- ``write``: record ``attempted`` (no record, no write), write through the source's
  ``TargetWriter``, read back within ``read_back_timeout_s``, compare (exact for integers and
  bools, to float32 precision for float32), then record ``written``. A refused or unanswered
  write, a failed read-back or another value read back puts the action in ``fault``: stored,
  an alert raised, nothing retried, nothing written again until a person resets it.
- ``shadow``: record what would have been written.
- ``await_confirm``: record it and keep one pending confirmation per action until its
  deadline; ``confirm`` re-evaluates (interlocks, limits) and writes, ``refuse`` drops it, the
  deadline expires it without a write.
- ``refuse``: record it with every reason (a faulted action's refusals are only counted).

Decisions, writes, confirmations, arming and resets run one at a time (one lock): writes to
a target are never interleaved, and the state each decision is judged against is the one the
previous write left. In a fleet an action runs only on the gateway holding its asset's lease.

Safe start: an ``auto`` or ``confirm`` action is armed only by a person (``arm``), under the
model version serving then; the arming is stored and lasts across restarts while the
action's definition in the mapping is unchanged. A fault lasts across restarts until reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import structlog

from bridge.actions import (
    HOUR_S,
    ActionState,
    Decision,
    Event,
    ModelView,
    TagChange,
    TagView,
    evaluate,
)
from bridge.cancel import cancel_and_wait
from bridge.config.actions import ResolvedAction
from bridge.config.resolved import Endpoint, ResolvedModel
from bridge.errors import BridgeError, StoreError, WriteError
from bridge.plugins import source_kinds
from bridge.runtime.tagtable import TagTable
from bridge.store.actions import ActionRepository, ActionStateRecord, NewActionEvent
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.store.auditchain import NewAuditEntry
from bridge.types import ComponentHealth, Prediction, TagReading, TargetWriter, WriteValue

__all__ = [
    "FAULT_LABEL",
    "ActionError",
    "ActionRunner",
    "ActionStatus",
    "definition_of",
    "read_back_matches",
]

log = structlog.get_logger(__name__)

FAULT_LABEL = "action_fault"  # the label of the alert a fault raises
SYSTEM = "system"
QUEUE_SIZE = 1000  # triggering events waiting for the worker; beyond, new ones are dropped
SWEEP_S = 0.1  # how often pending confirmations are checked against their deadline

Publish = Callable[[Sequence[Prediction]], Awaitable[None]]
MakeWriter = Callable[[str], TargetWriter]


class ActionError(BridgeError):
    """An operator's request on an action cannot be done (an unknown action, nothing to
    confirm, no serving model version to arm under); the message says which and why."""


@dataclass(frozen=True, slots=True)
class ActionStatus:
    """What a view (REST, the HMI server) shows of one action. ``mode`` is the mapping's;
    ``applied`` what it does now (``shadow`` while not armed or fallen back)."""

    name: str
    asset: str
    mode: str
    applied: str
    armed_version: str | None
    armed_by: str | None
    fallback: str | None
    fault: str | None
    enabled: bool
    last_value: float | int | bool | None
    last_time: float | None
    pending_value: float | int | bool | None
    pending_until: float | None  # wall clock
    # The id of the request waiting for confirmation: a confirmation naming it cannot land on
    # a newer request that replaced it meanwhile.
    pending_id: str | None = None
    read_back: WriteValue | None = None  # what the target held after the last write


@dataclass(slots=True)
class _Pending:
    event: Event
    value: float | int | bool | None
    deadline: float  # monotonic
    until: float  # the same deadline on the wall clock, for people
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(slots=True)
class _Meta:
    """What the stored state holds beyond ``ActionState``."""

    definition: str
    armed_by: str | None = None
    armed_at: float | None = None
    faulted_at: float | None = None
    read_back: WriteValue | None = None


# Called with every action's status after one of them changed (on the event loop; must not block).
StatusCallback = Callable[[Sequence[ActionStatus]], None]


def definition_of(action: ResolvedAction) -> str:
    """A digest of what an action does: an arming holds only for the definition it was
    given under (another target, limit or interlock needs a person to arm it again)."""

    def cond(c: Any) -> str:
        return f"{c.tag} {c.op} {c.literal!r}"

    parts = {
        "asset": action.asset,
        "target": action.target.model_dump(mode="json"),
        "mode": action.mode,
        "limits": action.limits.model_dump(mode="json"),
        "trigger": [action.model, action.label, action.min_score],
        "trigger_tag": cond(action.trigger_tag) if action.trigger_tag else None,
        "value": [
            action.constant,
            action.expression.text if action.expression else None,
            action.output,
        ],
        "interlocks": [cond(c) for c in action.interlocks],
        "confirm_timeout_s": action.confirm_timeout_s,
        "read_back_timeout_s": action.read_back_timeout_s,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _f32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


def read_back_matches(value_type: str, written: WriteValue, back: WriteValue) -> bool:
    """Whether the target holds what was written: bools and integers exactly, float32 as
    the same float32, float64 exactly (the writer reads back what the type holds)."""
    if value_type == "bool" or isinstance(written, bool):
        return isinstance(back, bool) and back is written
    if isinstance(back, bool):
        return False
    if value_type in ("float32", "float64"):
        w, b = float(written), float(back)
        if not (math.isfinite(w) and math.isfinite(b)):
            return False
        return _f32(w) == _f32(b) if value_type == "float32" else w == b
    return float(back).is_integer() and int(back) == int(written)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ActionRunner:
    """A sink of predictions (``write``) and a subscriber of tag changes, made once per
    gateway from the mapping's ``actions:``. ``served``: whether this gateway serves an asset
    (a fleet's lease; None: every asset). ``serving``: the version of a model serving now.
    ``make_writer``: the writer of a source (default: the source kind's ``writer``)."""

    name = "actions"

    def __init__(
        self,
        actions: Mapping[str, ResolvedAction],
        repo: ActionRepository,
        alerts: AlertRepository,
        table: TagTable,
        sources: Mapping[str, Endpoint],
        models: Mapping[str, ResolvedModel],
        *,
        serving: Callable[[str], str | None],
        served: Callable[[str], bool] | None = None,
        make_writer: MakeWriter | None = None,
        queue_size: int = QUEUE_SIZE,
        wall_clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.actions = dict(actions)
        self._repo = repo
        self._alerts = alerts
        self._table = table
        self._sources = sources
        self._models = models
        self._serving = serving
        self._served = served
        self._make_writer = make_writer or self._writer_of_kind
        self._wall = wall_clock
        self._mono = monotonic_clock
        self._queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self._lock = asyncio.Lock()
        self._states: dict[str, ActionState] = {n: ActionState() for n in self.actions}
        self._meta = {n: _Meta(definition_of(a)) for n, a in self.actions.items()}
        self._pending: dict[str, _Pending] = {}
        self._writers: dict[str, TargetWriter] = {}
        self._by_prediction: dict[tuple[str, str], list[ResolvedAction]] = {}
        self._by_tag: dict[str, list[ResolvedAction]] = {}
        for action in self.actions.values():
            if action.trigger_tag is not None:
                self._by_tag.setdefault(action.trigger_tag.tag, []).append(action)
            elif action.model is not None:
                key = (action.model, action.asset)
                self._by_prediction.setdefault(key, []).append(action)
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._watchers: list[StatusCallback] = []
        self.last_error = ""
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "evaluated",
                "written",
                "refused",
                "refused_faulted",
                "shadow",
                "await_confirm",
                "confirmed",
                "expired",
                "faults",
                "fallbacks",
                "dropped",
                "not_served",
                "not_recorded",
            ),
            0,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._restore()
        self._changed()
        self._unsubscribe = self._table.subscribe(self._on_readings)
        self._tasks = [
            asyncio.create_task(self._work(), name="actions:worker"),
            asyncio.create_task(self._sweep(), name="actions:confirmations"),
        ]
        log.info("actions_started", actions=len(self.actions))

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        writers, self._writers = self._writers, {}
        for name, writer in writers.items():
            try:
                await writer.aclose()
            except Exception:
                log.exception("action_writer_close_failed", source=name)

    async def _restore(self) -> None:
        """The stored state of each action: faults always, armings while the definition is
        unchanged, the last write and the writes of the last hour (limits go on)."""
        stored = await asyncio.to_thread(self._repo.states)
        now = self._wall()
        for name, action in self.actions.items():
            state, meta = self._states[name], self._meta[name]
            record = stored.get(name)
            if record is not None:
                state.fault, meta.faulted_at = record.fault, record.faulted_at
                state.last_value, state.last_time = record.last_value, record.last_time
                if record.definition == meta.definition:
                    state.armed_version, state.fallback = record.armed_version, record.fallback
                    meta.armed_by, meta.armed_at = record.armed_by, record.armed_at
                elif record.armed_version is not None:
                    log.warning(
                        "action_disarmed",
                        action=name,
                        reason="its definition in the mapping changed; arm it again",
                    )
            times = await asyncio.to_thread(self._repo.write_times, name, now - HOUR_S)
            state.writes.extend(times)
            if state.fault is not None:
                log.warning("action_faulted_at_start", action=name, fault=state.fault)
            await asyncio.to_thread(self._repo.save, self._record(action))

    def _writer_of_kind(self, source: str) -> TargetWriter:
        endpoint = self._sources[source]
        factory = source_kinds()[endpoint.kind].writer
        if factory is None:
            raise WriteError(f"sources of kind {endpoint.kind} cannot be written", target=source)
        return factory(source, endpoint.settings)

    # --- intake ------------------------------------------------------------------------------

    async def write(self, batch: Sequence[Prediction]) -> None:
        """Take the predictions some action triggers on (a ``Sink``'s write: never waits)."""
        for p in batch:
            if not p.historical and (p.model, p.asset) in self._by_prediction:
                self._offer(p)

    def tapping(self, publish: Publish) -> Publish:
        """``publish`` (a runner's), then hand the batch to the actions."""

        async def publish_and_act(batch: Sequence[Prediction]) -> None:
            await publish(batch)
            await self.write(batch)

        return publish_and_act

    def _on_readings(self, readings: Sequence[TagReading]) -> None:
        for r in readings:
            if r.tag in self._by_tag and not r.heartbeat:
                self._offer(TagChange(r.tag))

    def _offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # Dropping is the safe side: an event not evaluated writes nothing.
            self.counters["dropped"] += 1
            if self.counters["dropped"] == 1 or self.counters["dropped"] % 1000 == 0:
                log.error("action_events_dropped", dropped=self.counters["dropped"])

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            for action in self._triggered(event):
                try:
                    async with self._lock:
                        await self._decide(action, event)
                except Exception as exc:
                    self.last_error = f"{action.name}: {exc!r}"
                    log.exception("action_evaluation_failed", action=action.name)

    def _triggered(self, event: Event) -> list[ResolvedAction]:
        if isinstance(event, TagChange):
            return self._by_tag.get(event.tag, [])
        return self._by_prediction.get((event.model, event.asset), [])

    # --- decisions ---------------------------------------------------------------------------

    def _serves(self, asset: str) -> bool:
        return self._served is None or self._served(asset)

    def serves(self, name: str) -> bool:
        """Whether this gateway acts for action ``name`` now (in a fleet: holds its asset's
        lease); a request to confirm or arm it belongs to the gateway that does."""
        return self._serves(self._action(name).asset)

    def _views(self, action: ResolvedAction) -> dict[str, TagView]:
        mono = self._mono()
        tags = {c.tag for c in action.interlocks}
        tags.update(action.max_age_s)
        tags.update(action.expression_tags.values())
        if action.trigger_tag is not None:
            tags.add(action.trigger_tag.tag)
        views = {}
        for tag in tags:
            entry = self._table.entries.get(tag)
            if entry is None or entry.updated_mono is None:
                continue  # never heard of: no value
            views[tag] = TagView(entry.value, entry.quality, mono - entry.updated_mono)
        return views

    def _model_view(self, action: ResolvedAction, event: Event) -> ModelView | None:
        if not isinstance(event, Prediction):
            return None
        model = self._models.get(event.model)
        threshold = model.drift.threshold if model is not None and model.drift else None
        drifting = (
            threshold is not None
            and event.drift_score is not None
            and event.drift_score > threshold
        )
        return ModelView(event.version, drifting)

    def _evaluate(self, action: ResolvedAction, event: Event) -> Decision:
        self.counters["evaluated"] += 1
        state = self._states[action.name]
        return evaluate(
            action,
            event,
            self._views(action),
            self._model_view(action, event),
            state,
            self._wall(),
        )

    async def _decide(self, action: ResolvedAction, event: Event) -> None:
        if not self._serves(action.asset):
            self.counters["not_served"] += 1
            return
        decision = self._evaluate(action, event)
        state = self._states[action.name]
        if (
            decision.fallback is not None
            and state.fallback is None
            and state.armed_version is not None
            and action.mode != "shadow"
        ):
            await self._fall_back(action, decision.fallback)
        outcome = decision.outcome
        if outcome == "hold":
            return
        if outcome == "refuse":
            if state.fault is not None:
                self.counters["refused_faulted"] += 1  # recorded once, when it faulted
                return
            self.counters["refused"] += 1
            log.info("action_refused", action=action.name, reasons=list(decision.reasons))
            await self._record_only(action, decision, event, "refused", SYSTEM)
        elif outcome == "shadow":
            self.counters["shadow"] += 1
            log.info(
                "action_shadow", action=action.name, value=decision.value, why=decision.fallback
            )
            await self._record_only(action, decision, event, "shadow", SYSTEM)
        elif outcome == "await_confirm":
            await self._offer_confirmation(action, decision, event)
        else:
            await self._write(action, decision, event, SYSTEM)

    async def _fall_back(self, action: ResolvedAction, reason: str) -> None:
        self._states[action.name].fall_back(reason)
        self.counters["fallbacks"] += 1
        log.warning("action_fallback", action=action.name, reason=reason, mode="shadow")
        entry = NewAuditEntry(
            SYSTEM, SYSTEM, "action.fallback", f"action:{action.name}", None, {"reason": reason}
        )
        await self._save(action, (), entry)

    async def _offer_confirmation(
        self, action: ResolvedAction, decision: Decision, event: Event
    ) -> None:
        old = self._pending.pop(action.name, None)
        if old is not None:
            await self._expire(action, old, "replaced by a newer request")
        timeout = action.confirm_timeout_s or 0.0
        self._pending[action.name] = _Pending(
            event, decision.value, self._mono() + timeout, self._wall() + timeout
        )
        self.counters["await_confirm"] += 1
        log.info(
            "action_await_confirm", action=action.name, value=decision.value, timeout_s=timeout
        )
        await self._record_only(action, decision, event, "await_confirm", SYSTEM)

    async def _expire(self, action: ResolvedAction, pending: _Pending, why: str) -> None:
        self.counters["expired"] += 1
        log.info("action_expired", action=action.name, value=pending.value, reason=why)
        event = self._event(action, None, pending.event, "expired", SYSTEM, reason=why)
        await self._save(action, [replace(event, value=pending.value)], None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            now = self._mono()
            due = [n for n, p in self._pending.items() if p.deadline <= now]
            for name in due:
                async with self._lock:
                    pending = self._pending.get(name)
                    if pending is None or pending.deadline > self._mono():
                        continue  # confirmed or replaced meanwhile
                    del self._pending[name]
                    try:
                        await self._expire(self.actions[name], pending, "not confirmed in time")
                    except Exception as exc:
                        self.last_error = f"{name}: {exc!r}"
                        log.exception("action_expiry_failed", action=name)

    # --- the write ---------------------------------------------------------------------------

    async def _write(
        self,
        action: ResolvedAction,
        decision: Decision,
        origin: Event,
        actor: str,
        before: Sequence[NewActionEvent] = (),
    ) -> str:
        """Attempt, write, read back, compare, record; the outcome (written, fault, refused)."""
        value = decision.value
        assert value is not None
        if not self._serves(action.asset):
            self.counters["not_served"] += 1
            reason = f"asset {action.asset} is not served by this gateway now"
            await self._record_only(action, decision, origin, "refused", actor, reason, before)
            return "refused"
        attempted = self._event(action, decision, origin, "attempted", actor)
        try:
            await asyncio.to_thread(self._repo.save, None, [*before, attempted])
        except StoreError as exc:
            # No record, no write: the proof comes first.
            self.counters["not_recorded"] += 1
            self.last_error = str(exc)
            log.error("action_not_written", action=action.name, reason=f"not recorded: {exc}")
            self._changed()  # a confirmed request is gone
            return "refused"
        target = action.target
        bound = action.read_back_timeout_s
        try:
            writer = self._writer(target.source)
            async with asyncio.timeout(bound):
                await writer.write(target, value)
        except WriteError as exc:
            maybe = "; it may have taken effect" if exc.maybe_written else ""
            await self._fault(
                action, decision, origin, actor, f"the write failed ({exc.kind}): {exc}{maybe}"
            )
            return "fault"
        except TimeoutError:
            reason = f"no answer to the write within {bound:g} s; it may have taken effect"
            await self._fault(action, decision, origin, actor, reason)
            return "fault"
        try:
            async with asyncio.timeout(bound):
                back = await writer.read(target)
        except WriteError as exc:
            reason = f"the read-back failed ({exc.kind}): {exc}"
            await self._fault(action, decision, origin, actor, reason)
            return "fault"
        except TimeoutError:
            reason = f"no read-back within {bound:g} s"
            await self._fault(action, decision, origin, actor, reason)
            return "fault"
        if not read_back_matches(action.value_type, value, back):
            reason = f"read back {back!r} after writing {value!r}"
            await self._fault(action, decision, origin, actor, reason, back)
            return "fault"
        now = self._wall()
        self._states[action.name].record_write(value, now)
        self._meta[action.name].read_back = back
        self.counters["written"] += 1
        log.info(
            "action_written",
            action=action.name,
            asset=action.asset,
            value=value,
            read_back=back,
            actor=actor,
        )
        written = self._event(action, decision, origin, "written", actor, read_back=back)
        entry = self._entry(action, "action.written", actor, written)
        await self._save(action, [written], entry)
        return "written"

    def _writer(self, source: str) -> TargetWriter:
        writer = self._writers.get(source)
        if writer is None:
            writer = self._writers[source] = self._make_writer(source)
        return writer

    async def _fault(
        self,
        action: ResolvedAction,
        decision: Decision,
        origin: Event,
        actor: str,
        reason: str,
        read_back: WriteValue | None = None,
    ) -> None:
        """Disable the action (stored), record why, raise an alert; nothing is retried."""
        now = self._wall()
        self._states[action.name].set_fault(reason)
        self._meta[action.name].faulted_at = now
        self._pending.pop(action.name, None)
        self.counters["faults"] += 1
        log.error("action_fault", action=action.name, asset=action.asset, reason=reason)
        event = self._event(
            action, decision, origin, "fault", actor, reason=reason, read_back=read_back
        )
        await self._save(action, [event], self._entry(action, "action.fault", actor, event))
        alert = NewAlert(
            event.event_id,
            action.asset,
            event.model or f"action:{action.name}",
            FAULT_LABEL,
            action.name,
            None,
            now,
        )
        try:
            await asyncio.to_thread(self._alerts.add_many, [alert])
        except StoreError as exc:
            self.last_error = str(exc)
            log.error("action_fault_alert_failed", action=action.name, error=str(exc))

    # --- records -----------------------------------------------------------------------------

    def _event(
        self,
        action: ResolvedAction,
        decision: Decision | None,
        origin: Event,
        outcome: str,
        actor: str,
        reason: str = "",
        read_back: WriteValue | None = None,
    ) -> NewActionEvent:
        p = origin if isinstance(origin, Prediction) else None
        if p is not None:
            lineage: dict[str, Any] = {
                "seq": p.seq,
                "sha256": p.sha256,
                "value": _jsonable(p.value),
                "score": _jsonable(p.score),
                "quality": p.quality.label,
                "timestamp": p.timestamp,
                "drift_score": _jsonable(p.drift_score),
                "input_age_s": _jsonable(p.input_age_s),
            }
        else:
            lineage = {"tag": origin.tag} if isinstance(origin, TagChange) else {}
        if decision is not None:
            lineage["applied_mode_reason"] = decision.fallback
        why = reason or ("; ".join(decision.reasons) if decision is not None else "")
        return NewActionEvent(
            event_id=str(uuid.uuid4()),
            at=self._wall(),
            action=action.name,
            asset=action.asset,
            outcome=outcome,
            mode=decision.mode if decision is not None else action.mode,
            actor=actor,
            requested=decision.requested if decision is not None else None,
            value=decision.value if decision is not None else None,
            read_back=read_back,
            prediction_id=p.id if p is not None else None,
            model=p.model if p is not None else None,
            model_version=p.version if p is not None else None,
            lineage=lineage,
            interlocks=[
                {**asdict(r), "quality": r.quality.label if r.quality is not None else None}
                for r in (decision.interlocks if decision is not None else ())
            ],
            checks=[asdict(c) for c in (decision.checks if decision is not None else ())],
            reason=why,
        )

    def _entry(
        self, action: ResolvedAction, what: str, actor: str, event: NewActionEvent
    ) -> NewAuditEntry:
        after = {
            "event": event.event_id,
            "value": _jsonable(event.value),
            "read_back": _jsonable(event.read_back),
            "prediction_id": event.prediction_id,
            "model_version": event.model_version,
        }
        return NewAuditEntry(
            actor, self._channel(actor), what, f"action:{action.name}", None, after, event.reason
        )

    async def _record_only(
        self,
        action: ResolvedAction,
        decision: Decision,
        origin: Event,
        outcome: str,
        actor: str,
        reason: str = "",
        before: Sequence[NewActionEvent] = (),
    ) -> None:
        event = self._event(action, decision, origin, outcome, actor, reason)
        await self._save(action, [*before, event], None)

    def _record(self, action: ResolvedAction) -> ActionStateRecord:
        state, meta = self._states[action.name], self._meta[action.name]
        return ActionStateRecord(
            action=action.name,
            asset=action.asset,
            mode=action.mode,
            definition=meta.definition,
            armed_version=state.armed_version,
            armed_by=meta.armed_by,
            armed_at=meta.armed_at,
            fallback=state.fallback,
            fault=state.fault,
            faulted_at=meta.faulted_at,
            enabled=state.fault is None,
            last_value=state.last_value,
            last_time=state.last_time,
            updated_at=self._wall(),
        )

    async def _save(
        self,
        action: ResolvedAction,
        events: Sequence[NewActionEvent],
        entry: NewAuditEntry | None,
    ) -> None:
        """Store the state with ``events`` and ``entry``; a store failure is logged and
        counted (the state in memory, which decisions are judged by, stands)."""
        try:
            await asyncio.to_thread(self._repo.save, self._record(action), events, entry)
        except StoreError as exc:
            self.counters["not_recorded"] += 1
            self.last_error = str(exc)
            log.error("action_not_recorded", action=action.name, error=str(exc))
        self._changed()

    # --- people ------------------------------------------------------------------------------

    def _action(self, name: str) -> ResolvedAction:
        action = self.actions.get(name)
        if action is None:
            known = ", ".join(sorted(self.actions)) or "(none)"
            raise ActionError(f"unknown action {name!r}; the mapping has: {known}")
        return action

    async def arm(self, name: str, actor: str, comment: str = "") -> ActionStatus:
        """Let an ``auto`` or ``confirm`` action act, under the model version serving now
        (a tag-triggered action under ``""``). Clears a fallback, not a fault."""
        action = self._action(name)
        if action.mode == "shadow":
            raise ActionError(f"action {name} is in mode shadow: it never writes; nothing to arm")
        version = ""
        if action.model is not None:
            serving = self._serving(action.model)
            if serving is None:
                raise ActionError(f"model {action.model} serves no version now; arm it later")
            version = serving
        async with self._lock:
            state, meta = self._states[name], self._meta[name]
            before = {"armed_version": state.armed_version, "fallback": state.fallback}
            state.arm(version)
            meta.armed_by, meta.armed_at = actor, self._wall()
            log.info("action_armed", action=name, version=version, actor=actor)
            entry = NewAuditEntry(
                actor,
                self._channel(actor),
                "action.armed",
                f"action:{name}",
                before,
                {"armed_version": version},
                comment,
            )
            await self._save(action, (), entry)
            return self._status(action)

    async def reset(self, name: str, actor: str, comment: str = "") -> ActionStatus:
        """Clear a fault. The action stays in shadow until armed again: whoever resets it
        decides whether it may write after looking at why it faulted."""
        action = self._action(name)
        async with self._lock:
            state, meta = self._states[name], self._meta[name]
            before = {"fault": state.fault}
            state.clear_fault()
            meta.faulted_at = None
            state.armed_version = None
            state.fallback = None
            meta.armed_by = meta.armed_at = None
            log.info("action_reset", action=name, actor=actor, fault=before["fault"])
            entry = NewAuditEntry(
                actor, self._channel(actor), "action.reset", f"action:{name}", before, None, comment
            )
            await self._save(action, (), entry)
            return self._status(action)

    async def confirm(
        self, name: str, actor: str, pending_id: str | None = None, comment: str = ""
    ) -> str:
        """Write what ``name`` waits to have confirmed, if it still passes its interlocks and
        limits now; the outcome (written, fault, refused). ``pending_id``: the request the
        person saw (its ``ActionStatus.pending_id``); another one waiting is not confirmed."""
        action = self._action(name)
        async with self._lock:
            pending = self._take_pending(name, pending_id)
            if pending.deadline <= self._mono():
                await self._expire(action, pending, "not confirmed in time")
                raise ActionError(f"the confirmation of action {name} expired")
            decision = self._evaluate(action, pending.event)
            if decision.outcome != "await_confirm":
                why = "; ".join(decision.reasons) or (
                    f"now {decision.outcome}"
                    + (f" ({decision.fallback})" if decision.fallback else "")
                )
                self.counters["refused"] += 1
                log.info("action_refused", action=name, actor=actor, reasons=why)
                # The person did confirm; the rules, judged again now, refuse the write.
                await self._confirmed(action, decision, pending, actor, comment)
                reason = f"confirmed, but refused at confirmation: {why}"
                await self._record_only(action, decision, pending.event, "refused", actor, reason)
                return "refused"
            self.counters["confirmed"] += 1
            log.info("action_confirmed", action=name, actor=actor, value=decision.value)
            await self._confirmed(action, decision, pending, actor, comment)
            return await self._write(action, decision, pending.event, actor)

    async def _confirmed(
        self,
        action: ResolvedAction,
        decision: Decision,
        pending: _Pending,
        actor: str,
        comment: str,
    ) -> None:
        """A person's confirmation: an event and a ledger entry, before anything follows it."""
        event = self._event(action, decision, pending.event, "confirmed", actor, reason=comment)
        await self._save(action, [event], self._entry(action, "action.confirmed", actor, event))

    async def refuse(
        self, name: str, actor: str, pending_id: str | None = None, comment: str = ""
    ) -> None:
        """Drop what ``name`` waits to have confirmed, recorded as refused by ``actor``
        (``pending_id`` as for ``confirm``)."""
        action = self._action(name)
        async with self._lock:
            pending = self._take_pending(name, pending_id)
            self.counters["refused"] += 1
            log.info("action_refused", action=name, actor=actor, reasons="refused by a person")
            why = f"refused by {actor}" + (f": {comment}" if comment else "")
            event = self._event(action, None, pending.event, "declined", actor, reason=why)
            await self._save(action, [event], self._entry(action, "action.declined", actor, event))

    def _take_pending(self, name: str, pending_id: str | None) -> _Pending:
        pending = self._pending.get(name)
        if pending is None:
            raise ActionError(f"action {name} has nothing waiting for confirmation")
        if pending_id is not None and pending.id != pending_id:
            raise ActionError(
                f"action {name} waits for confirmation of request {pending.id}, not "
                f"{pending_id}: that one was replaced or has ended; look again"
            )
        del self._pending[name]
        return pending

    def subscribe(self, callback: StatusCallback) -> Callable[[], None]:
        """Hand ``callback`` every action's status whenever one changes (a decision recorded,
        arming, a reset, a fault, a confirmation asked for or ended); returns the function
        that unsubscribes it."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None

    def _changed(self) -> None:
        if not self._watchers:
            return
        statuses = self.statuses()
        for callback in list(self._watchers):
            try:
                callback(statuses)
            except Exception:  # a view must not stop a decision
                log.exception("action_status_callback_failed")

    @staticmethod
    def _channel(actor: str) -> str:
        return SYSTEM if actor == SYSTEM else actor.split(":", 1)[0]

    # --- views -------------------------------------------------------------------------------

    def _status(self, action: ResolvedAction) -> ActionStatus:
        state, meta = self._states[action.name], self._meta[action.name]
        pending = self._pending.get(action.name)
        applied: str = action.mode
        if state.fault is not None:
            applied = "fault"
        elif action.mode != "shadow" and (state.armed_version is None or state.fallback):
            applied = "shadow"
        return ActionStatus(
            action.name,
            action.asset,
            action.mode,
            applied,
            state.armed_version,
            meta.armed_by,
            state.fallback,
            state.fault,
            state.fault is None,
            state.last_value,
            state.last_time,
            pending.value if pending is not None else None,
            pending.until if pending is not None else None,
            pending.id if pending is not None else None,
            meta.read_back,
        )

    def statuses(self) -> list[ActionStatus]:
        return [self._status(a) for a in self.actions.values()]

    def health(self) -> ComponentHealth:
        counters = {**self.counters, "pending": len(self._pending), "queued": self._queue.qsize()}
        dead = [t.get_name() for t in self._tasks if t.done()]
        if dead:
            return ComponentHealth(self.name, "down", f"stopped: {', '.join(dead)}", counters)
        faulted = sorted(n for n, s in self._states.items() if s.fault is not None)
        if faulted:
            detail = f"faulted until reset: {', '.join(faulted)}"
            return ComponentHealth(self.name, "degraded", detail, counters)
        return ComponentHealth(self.name, "ok", self.last_error, counters)
