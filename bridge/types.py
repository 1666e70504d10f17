"""Plain, frozen data that flows through the gateway. No protocol types ever appear here."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ActionControl",
    "ActionView",
    "AlarmAnswer",
    "AlarmEvent",
    "AlarmEventKind",
    "AlarmPolicy",
    "AlarmRecord",
    "AlarmService",
    "AssetInfo",
    "ComponentHealth",
    "Contribution",
    "Explanation",
    "Feedback",
    "FeedbackAction",
    "FeedbackService",
    "FollowsActions",
    "FollowsSlots",
    "HealthState",
    "HistoryBucket",
    "HistoryField",
    "HistoryKey",
    "HistorySeries",
    "HistoryService",
    "HistoryValue",
    "InputSnapshot",
    "ModelStatus",
    "Prediction",
    "PredictionSlot",
    "Quality",
    "SampleCallback",
    "SampleFeed",
    "Sink",
    "SinkContext",
    "Source",
    "SourceTag",
    "TagInfo",
    "TagReader",
    "TagReading",
    "TagSample",
    "TagValue",
    "TargetWriter",
    "Trigger",
    "WriteValue",
]

TagValue = float | int | bool | str | None


class Quality(enum.IntEnum):
    """Ordered so that ``max()`` of several qualities is the worst one."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @property
    def label(self) -> str:
        return self.name.capitalize()

    @staticmethod
    def worst(qualities: Sequence[Quality]) -> Quality:
        return max(qualities, default=Quality.BAD)


# Not frozen, on purpose: a frozen dataclass's __init__ sets each field through
# object.__setattr__ (1.6 us for this one, 0.3 us unfrozen), and sources build one per tag update.
# Nothing changes a sample after its source made it.
@dataclass(slots=True)
class TagSample:
    """One raw reading from a source, keyed by the mapping's tag id (``asset.tag``).

    Times are UNIX epoch seconds. ``source_time`` is when the device measured it (if known),
    ``server_time`` when the server/PLC stamped it, ``received_time`` when the gateway got it.
    ``reason`` says why quality is not Good (e.g. ``BadNodeIdUnknown``, ``modbus exception 2``).
    ``historical``: read back from the server's history after an outage (backfill), not live.
    Treat it as immutable.
    """

    tag: str
    value: TagValue
    quality: Quality
    received_time: float
    source_time: float | None = None
    server_time: float | None = None
    reason: str = ""
    historical: bool = False


@dataclass(frozen=True, slots=True)
class TagReading:
    """A tag's normalized state as an output that publishes tag values sees it (the UNS):
    value after scale/convert_to, its unit, quality and times (epoch seconds)."""

    tag: str
    asset: str
    name: str
    value: TagValue
    unit: str | None
    quality: Quality
    source_time: float | None
    received_time: float | None
    reason: str = ""
    # A republish of an unchanged value (the tag's ``heartbeat_s``): same value and source time.
    heartbeat: bool = False


# The tags changed at or after a monotonic time (``time.monotonic()``; 0.0: every tag), read
# from the gateway's tag table; given to the outputs that publish tag values
# (``DestinationContext``).
TagReader = Callable[[float], Sequence[TagReading]]

# Every sample the tag table applies (after normalize and the deadband; live samples, not
# backfilled history), for an output that keeps each value rather than the latest (the
# lakehouse's raw and downsampled telemetry). A ``SampleFeed`` takes a callback and returns the
# function that unsubscribes it; the callback gets each applied batch's readings on the event
# loop, right after the batch is applied, and must only buffer them (no I/O, no awaits).
SampleCallback = Callable[[Sequence[TagReading]], None]
SampleFeed = Callable[[SampleCallback], Callable[[], None]]


@dataclass(frozen=True, slots=True)
class SourceTag:
    """What a source needs to know about one tag: its id and its protocol address.

    ``address`` is the connector's own validated pydantic model (see ``bridge.plugins``).
    """

    tag: str
    address: Any


@dataclass(frozen=True, slots=True)
class InputSnapshot:
    """The state of one model input when a prediction was made (lineage)."""

    tag: str
    value: TagValue
    quality: Quality
    source_time: float | None


@dataclass(frozen=True, slots=True)
class Contribution:
    """How much one model input moved a prediction: the output with the input as measured minus
    the output with the input at its reference (training) mean."""

    feature: str  # "<tag>.<stat>", e.g. "bearing_temperature.mean"
    value: float
    baseline: float
    effect: float


@dataclass(frozen=True, slots=True)
class Explanation:
    """The top contributing inputs of one prediction, largest effect first, and one line for
    operators, e.g. ``bearing temperature +18 °C above normal``."""

    reason: str
    top: tuple[Contribution, ...]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One model output for one asset.

    ``id`` is a deterministic UUID (gateway, asset, model, sequence): it is the MES
    Idempotency-Key and never changes across retries.
    """

    id: str
    seq: int
    asset: str
    model: str
    version: str
    sha256: str
    value: str | float | None
    score: float | None
    quality: Quality
    timestamp: float
    input_age_s: float | None
    inputs: tuple[InputSnapshot, ...] = ()
    reason: str = ""
    explanation: Explanation | None = None
    drift_score: float | None = None  # the asset's drift (max PSI over features) at this time
    # In a fleet, the generation of the asset's lease the prediction was made under (the
    # fencing token): the store refuses it once another gateway took the asset. None: no fleet.
    fence: int | None = None
    # Made after the fact for a past time (an outage gap filled from the server's history,
    # the model's ``backfill: {predictions: true}``), not live: outputs carry the flag, and
    # consumers of the current state (HMI values, alerts, the latest predictions) skip it.
    historical: bool = False


@dataclass(frozen=True, slots=True)
class AlarmPolicy:
    """How a classifier's alarm behaves on the HMI server (the model's ``alerts:`` settings):
    its OPC UA severity (1-1000) and the alert rule's hold (``bridge.alertrule``), so that the
    alarm is raised by the very prediction that raises the stored alert."""

    severity: int = 500
    raise_after: int = 1
    clear_after: int = 1


@dataclass(frozen=True, slots=True)
class PredictionSlot:
    """One (asset, model) pair that will produce predictions; sinks build their layout from it."""

    asset: str
    model: str
    version: str
    sha256: str
    labels: tuple[str, ...] = ()
    unit: str = ""  # of a regressor's value (the model's `outputs.unit`); "" for labels
    # (tag name, unit) of the model's inputs on this asset, units after `convert_to`.
    input_units: tuple[tuple[str, str], ...] = ()
    alarm: AlarmPolicy = AlarmPolicy()  # a classifier's (labels) alarm; regressors have none


@dataclass(frozen=True, slots=True)
class AssetInfo:
    """What the mapping says of one asset, for outputs that describe the plant (a digital
    twin's type and attributes, the lakehouse's context table): the template it is made from
    (``""``: none) and its ``description``."""

    asset: str
    template: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class TagInfo:
    """What the mapping says of one tag, for outputs that describe the plant (the lakehouse's
    context table). ``tag`` is the tag id (``asset.tag``), ``name`` the tag's name on its asset;
    ``unit`` is the unit of its values (after ``convert_to``), ``source_unit`` the unit the
    source's value comes in when ``convert_to`` changes it (else ``""``); ``scale`` and
    ``offset`` make the raw value ``raw * scale + offset`` (in ``source_unit`` if given, else in
    ``unit``), ``clamp`` is the ``(low, high)`` range in ``unit`` beyond which values are
    clamped and marked Uncertain (None: none); ``source`` names the source and
    ``address`` is the tag's address there as text (an OPC UA node id as written, or the
    address block in flow style, e.g. ``{table: holding, address: 0, type: float32}``)."""

    tag: str
    asset: str
    name: str
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    clamp: tuple[float, float] | None = None
    source: str = ""
    address: str = ""
    description: str = ""
    source_unit: str = ""


@dataclass(frozen=True, slots=True)
class Trigger:
    """Why a prediction became an event: the first matching rule (in the destination's order).

    ``previous`` is the label before a label change or alert; ``crossing`` (``enter`` or
    ``clear``), ``limit`` and ``field`` describe a threshold crossing. A ``drift`` event carries
    the drift details (``bridge.drift.events.drift_details``) and the asset's latest prediction,
    its id replaced by the drift event's id (the Idempotency-Key).

    Plain data of the kernel, not of ``bridge.outbox``: it is what a destination connector
    encodes and what the drift writer raises, and neither may import the outbox package.
    """

    prediction: Prediction
    event: str = "prediction"
    previous: str | None = None
    crossing: str | None = None
    limit: float | None = None
    field: str | None = None
    drift: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """What a model serves now, for sinks that show it (the HMI server's ``Models`` folder):
    the active and candidate versions and, per asset, the candidate's agreement so far."""

    model: str
    active_version: str
    active_sha256: str
    candidate_version: str = ""
    candidate_sha256: str = ""
    candidate_mode: str = ""  # "", "shadow" or "canary"
    canary_share: float | None = None
    agreement: tuple[tuple[str, float | None], ...] = ()  # (asset, agreed/compared or None)
    # (asset, active accuracy, candidate accuracy) over operator-labelled predictions, or None
    accuracy: tuple[tuple[str, float | None, float | None], ...] = ()


FeedbackAction = Literal["acknowledge", "confirm", "reject"]


@dataclass(frozen=True, slots=True)
class Feedback:
    """An operator's answer to one prediction: seen (acknowledge), right (confirm) or wrong
    (reject, an override). ``channel`` is where it came from (``opcua``, ``rest``)."""

    prediction_id: str
    asset: str
    model: str
    action: FeedbackAction
    by: str
    channel: str
    prediction_time: float
    value: str | float | None = None
    comment: str = ""
    key_id: str | None = None


class FeedbackService(Protocol):
    """Where sinks (the HMI server's methods) hand operator feedback to the core; raises
    ``bridge.errors.BridgeError`` when it cannot be stored (or looked up)."""

    async def record(self, feedback: Feedback) -> None: ...

    async def find(self, prediction_id: str) -> Prediction | None:
        """The stored prediction with this id, or None if there is none."""
        ...


# The HMI server's variables that have history (OPC UA HistoryRead), one series each per slot.
HistoryField = Literal["Value", "Score", "Quality", "DriftScore"]
# Position of a stored value in its series: (timestamp, row id); the id orders the values of
# one instant, so a page boundary between two of them skips or repeats nothing.
HistoryKey = tuple[float, int]


@dataclass(frozen=True, slots=True)
class HistorySeries:
    """The stored values of one variable: ``field`` of the predictions of ``asset``+``model``.
    ``text``: the slot's Value is a label (a classifier), else a number."""

    asset: str
    model: str
    field: HistoryField
    text: bool = False


# Not frozen: a history page makes 10,000 of them (see TagSample). Treat as immutable.
@dataclass(slots=True)
class HistoryValue:
    """One stored value of a series: the prediction's time, row id, the field's value (the
    label of ``Quality``) and the prediction's quality."""

    timestamp: float
    row_id: int
    value: str | float | None
    quality: Quality


@dataclass(frozen=True, slots=True)
class HistoryBucket:
    """The values of a series in one processing interval (``index`` counted from the start
    of the read): how many were Good (``good``) and how many not (``other``: Uncertain or Bad
    quality, or no value), and average, minimum and maximum of the Good numeric ones."""

    index: int
    good: int
    other: int
    average: float | None = None
    minimum: float | None = None
    maximum: float | None = None


class HistoryService(Protocol):
    """The store's history of the HMI server's variables (``bridge.store.hmihistory``), for
    OPC UA HistoryRead. Reads run off the event loop with the store's query timeout; each
    raises ``bridge.errors.StoreError`` when the store cannot answer. Times of buckets are
    integer microseconds since the UNIX epoch (exact interval borders)."""

    async def values(
        self,
        series: HistorySeries,
        low: HistoryKey | None,
        high: HistoryKey | None,
        descending: bool,
        limit: int,
    ) -> Sequence[HistoryValue]:
        """At most ``limit`` values with ``low <= (timestamp, row id) <= high`` (None: open),
        oldest first, or newest first when ``descending``."""
        ...

    async def buckets(
        self,
        series: HistorySeries,
        origin_us: int,
        stop_us: int,
        interval_us: int,
        first: int,
        count: int,
    ) -> Sequence[HistoryBucket]:
        """Intervals ``first`` .. ``first + count - 1`` of ``interval_us`` from ``origin_us``
        towards ``stop_us`` (excluded), which may be earlier (time read backwards: interval k
        is ``(origin - (k+1)w, origin - kw]``); only those holding values, by index."""
        ...

    async def span(self, series: HistorySeries) -> tuple[float, float] | None:
        """Timestamps of the oldest and the newest value of the series; None if it has none."""
        ...


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    """A stored alert as the HMI's alarm shows it: the prediction that raised it, the label it
    left (``previous``) and took, and the operators' acknowledgement and confirmation.
    ``version`` and ``reason`` (the explanation's) are those of the raising prediction when it
    is still stored (None / "" otherwise, or when not looked up)."""

    alert_id: int
    prediction_id: str
    asset: str
    model: str
    label: str
    previous: str
    raised_at: float
    acked_at: float | None = None
    acked_by: str | None = None
    ack_comment: str | None = None
    confirmed_at: float | None = None
    confirmed_by: str | None = None
    confirm_comment: str | None = None
    version: str | None = None
    reason: str = ""


# What an acknowledgement or confirmation did: "done" by this call; "before": by somebody
# else earlier (the record says who); "missing": no alert of that prediction is stored (yet);
# "unacknowledged": a confirmation of an alert nobody acknowledged.
AlarmAnswer = Literal["done", "before", "missing", "unacknowledged"]
AlarmEventKind = Literal["raised", "acknowledged", "confirmed"]


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """A past moment of an alarm (event history): ``cursor`` is where a page ending with it
    goes on (opaque bytes of the service; a client hands them back as a continuation point)."""

    kind: AlarmEventKind
    time: float
    record: AlarmRecord
    cursor: bytes


class AlarmService(Protocol):
    """The store's alerts for the HMI server's alarms (``bridge.connectors.opcua._alarms``).

    One acknowledgement: an operator's Acknowledge on the alarm acknowledges the stored alert
    of the raising prediction, exactly as the REST API does, so time-to-acknowledge counts each
    alert once; acknowledgements made elsewhere are read back (``of_predictions``). ``faults``:
    per model name the labels that alarm (all but the first). Every call raises
    ``bridge.errors.BridgeError`` when the store fails; nothing retries inside.
    """

    async def acknowledge(
        self, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]: ...

    async def confirm(
        self, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]: ...

    async def of_predictions(self, prediction_ids: Sequence[str]) -> Sequence[AlarmRecord]:
        """The stored alerts of these raising predictions (any may be missing)."""
        ...

    async def raised_after(self, alert_id: int, limit: int) -> Sequence[AlarmRecord]:
        """Alerts stored after ``alert_id`` (any kind: filter by ``faults``), oldest first."""
        ...

    async def last_id(self) -> int: ...

    async def newest(
        self, faults: Mapping[str, tuple[str, ...]], assets: Sequence[str]
    ) -> Sequence[AlarmRecord]:
        """The newest alarm alert of each (asset, model), with version and reason."""
        ...

    async def latest_labels(
        self, pairs: Sequence[tuple[str, str]]
    ) -> Mapping[tuple[str, str], str]:
        """The label of the last stored prediction of each (asset, model) that has one."""
        ...

    async def events(
        self,
        faults: Mapping[str, tuple[str, ...]],
        assets: Sequence[str] | None,
        since: float | None,
        until: float | None,
        limit: int,
        after: bytes | None = None,
        newest_first: bool = False,
    ) -> Sequence[AlarmEvent]:
        """Past moments of the alarm alerts of ``assets`` (None: all) in [since, until],
        oldest first, after the ``cursor`` of an earlier page's last event; raises
        ``ValueError`` for a cursor it did not make."""
        ...


@dataclass(frozen=True, slots=True)
class SinkContext:
    gateway_id: str
    slots: tuple[PredictionSlot, ...]
    feedback: FeedbackService | None = None
    # Stored predictions for the HMI server's HistoryRead; None: its variables have no history.
    history: HistoryService | None = None
    # The store's alerts behind the HMI server's alarms; None: the server raises no alarms.
    alarms: AlarmService | None = None


HealthState = Literal["ok", "degraded", "down", "starting", "stopped"]


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    state: HealthState
    detail: str = ""
    counters: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of_worker(
        cls,
        name: str,
        *,
        closed: bool,
        worker: Any,
        last_error: str,
        counters: Mapping[str, int],
    ) -> ComponentHealth:
        """Health of a component whose work runs in one ``asyncio.Task`` (``worker``; None
        before start): stopped, starting, down when the task ended, degraded after an error."""
        if closed:
            return cls(name, "stopped", counters=counters)
        if worker is None:
            return cls(name, "starting", counters=counters)
        if worker.done():
            return cls(name, "down", "writer task ended", counters)
        if last_error:
            return cls(name, "degraded", last_error, counters)
        return cls(name, "ok", counters=counters)


@runtime_checkable
class Source(Protocol):
    """A connection to one server/PLC.

    ``connect`` and iteration raise ``bridge.errors.ConnectorError`` (or ``NotConnected``) when
    the link fails; a source never retries by itself: the runtime owns reconnects.
    A value problem of a single tag is not an error: it is a TagSample with Bad quality.
    """

    name: str

    async def connect(self) -> None: ...

    def samples(self) -> AsyncIterator[Sequence[TagSample]]: ...

    async def close(self) -> None: ...


# What a write-back writes: a bool to a coil or Boolean, a number to a register or variable.
WriteValue = bool | int | float


class TargetWriter(Protocol):
    """Writes values to the targets of one source and reads them back (write-back actions):
    its own connection with the source's settings, never the source's.

    ``target`` is the mapping's target model of the source's kind (``ModbusTarget``,
    ``OpcUaTarget`` of ``bridge.config.actions``), so no protocol type reaches the core. ``read``
    decodes as ``write`` encodes (type, word order): after a write that took, it returns the
    value as the target's type holds it (a float32 rounds), and whatever the target holds
    otherwise. Every call is one attempt bounded by the source's timeout, plus the (itself
    bounded) opening of the connection when there is none; the writer never retries, and the
    call after a failure opens a new connection. Failures raise ``bridge.errors.WriteError``
    (``WriteRefused``, ``WriteTimedOut``, ``WriteNotConnected``, ``NotRepresentable``); the
    caller decides what follows. Calls may overlap: the writer runs them one at a time.
    """

    async def write(self, target: Any, value: WriteValue) -> None: ...

    async def read(self, target: Any) -> WriteValue: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """A destination for predictions. ``write`` must return quickly: slow I/O is queued inside."""

    name: str

    async def start(self) -> None: ...

    async def write(self, batch: Sequence[Prediction]) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> ComponentHealth: ...


@runtime_checkable
class FollowsSlots(Protocol):
    """An output (a ``Sink`` or a durable destination) whose layout or bodies depend on the
    (asset, model) pairs the gateway serves: a mapping reload that adds or removes assets or
    models, or changes a model's version, labels or units, hands it the new slots instead of
    restarting it (the HMI server adds and removes its nodes; the MES destination's bodies
    take the new units). Optional: an output without it keeps the slots it was built with."""

    async def follow_slots(self, slots: Sequence[PredictionSlot]) -> None: ...


class ActionView(Protocol):
    """What a view shows of one write-back action (``bridge.runtime.actions.ActionStatus``, a
    frozen dataclass): its mode in the mapping, what it does now (``applied``), the model
    version it is armed under, why it fell back or faulted, its last write (value, epoch
    time, what the target held after it) and the request waiting for confirmation (value,
    deadline as epoch time, id)."""

    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def applied(self) -> str: ...
    @property
    def armed_version(self) -> str | None: ...
    @property
    def armed_by(self) -> str | None: ...
    @property
    def fallback(self) -> str | None: ...
    @property
    def fault(self) -> str | None: ...
    @property
    def last_value(self) -> WriteValue | None: ...
    @property
    def last_time(self) -> float | None: ...
    @property
    def read_back(self) -> WriteValue | None: ...
    @property
    def pending_value(self) -> WriteValue | None: ...
    @property
    def pending_until(self) -> float | None: ...
    @property
    def pending_id(self) -> str | None: ...


class ActionControl(Protocol):
    """What a person may do to a write-back action from a view (the HMI server's methods).
    ``actor`` says who (``opcua:<user>``); ``pending_id`` is the waiting request the person
    saw: another one is neither confirmed nor refused. Each raises
    ``bridge.errors.BridgeError`` with the reason when it cannot be done (nothing waits, a
    stale id, no model version serving to arm under, an unknown action)."""

    async def arm(self, name: str, actor: str, comment: str = "") -> object: ...

    async def reset(self, name: str, actor: str, comment: str = "") -> object: ...

    async def confirm(
        self, name: str, actor: str, pending_id: str | None = None, comment: str = ""
    ) -> str:
        """The outcome: ``written``, ``fault`` or ``refused`` (by its interlocks or limits now)."""
        ...

    async def refuse(
        self, name: str, actor: str, pending_id: str | None = None, comment: str = ""
    ) -> None: ...


@runtime_checkable
class FollowsActions(Protocol):
    """A sink that shows the write-back actions and lets operators act on them through
    ``control`` (the HMI server's ``Actions`` folder). Optional. ``show_actions`` gets every
    action's status after any of them changed, on the event loop: it only takes them (no I/O,
    no await) and the sink shows the latest ones itself."""

    def show_actions(self, statuses: Sequence[ActionView], control: ActionControl) -> None: ...
