"""The state of one asset+model's alarm (an OPC UA ``OffNormalAlarmType`` condition) and the
Part 9 transitions that make its events. Pure: no asyncua, no I/O, no clock.

Active: the alert rule's state (``bridge.alertrule.LabelTrack``, with the model's hold) is a
fault label. It is stepped with every prediction the server is handed, as the alert writer
(``bridge.runtime.alertsink``) steps its own over the same predictions, so the prediction that
raises the alarm is the one whose id the stored alert carries. Inactive again when the track
is back to the normal label (``clear_after`` normal runs).

Acknowledgeable, with confirmation (Part 9, 5.7): a new alert is unacknowledged and has
nothing to confirm (ConfirmedState true); the acknowledgement makes it acknowledged and
unconfirmed; the confirmation confirmed. ``Retain`` is true while the alarm is active,
unacknowledged or unconfirmed: what an HMI's alarm list keeps showing. No branches: a new
alert (another fault label, or a new fault after a return to normal) replaces the alarm's
state; an older alert nobody acknowledged stays open in the store (REST API) only.

The stored alert is the truth for what was acknowledged and confirmed, whoever did it (the HMI
method, the REST API, another gateway): ``stored`` applies what the store says. An alert the
store holds that this track did not raise (a gateway restart: the alert writer starts from
normal, this one from the store) is ``adopt``-ed, and the track takes its label as its state.

Event ids are ``<prediction id>:<kind>``: one per moment of one alert, the same in the live
events, after a restart and in the events history.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.alertrule import LabelTrack, label_of
from bridge.types import AlarmRecord, Prediction, PredictionSlot

__all__ = ["AlarmState", "AlertInfo", "Refusal", "Snapshot", "event_id"]

Refusal = str  # "event_unknown", "already_acked", "already_confirmed", "not_acked", "no_alert"


@dataclass(slots=True)
class AlertInfo:
    """The alert the alarm shows: its raising prediction and, once known, its stored row."""

    prediction_id: str
    label: str
    previous: str
    raised_at: float
    version: str = ""
    reason: str = ""
    alert_id: int | None = None  # the stored alert's id, once the store has it


# Not frozen (see bridge.types.TagSample); made once per event and never changed afterwards.
@dataclass(slots=True)
class Snapshot:
    """The alarm as one event shows it: ``kind`` is what just happened (raised, inactive,
    acknowledged, confirmed, removed) at ``time``; the rest is the whole state afterwards."""

    kind: str
    event_id: bytes
    time: float
    active: bool | None  # None: not known (events history: the store keeps no clearing)
    acked: bool
    confirmed: bool
    retain: bool | None
    severity: int
    message: str
    comment: str
    user: str
    alert: AlertInfo
    active_since: float
    acked_at: float | None
    confirmed_at: float | None


def event_id(prediction_id: str, kind: str) -> bytes:
    return f"{prediction_id}:{kind}".encode()


class AlarmState:
    def __init__(self, slot: PredictionSlot) -> None:
        self.asset = slot.asset
        self.model = slot.model
        self.normal = slot.labels[0]
        self.faults = frozenset(slot.labels[1:])
        self.severity = slot.alarm.severity
        self.track = LabelTrack.held(self.normal, slot.alarm)
        self.alert: AlertInfo | None = None
        self.active = False
        self.acked = True
        self.confirmed = True
        self.comment = ""
        self.user = ""
        self.active_since = 0.0
        self.acked_at: float | None = None
        self.confirmed_at: float | None = None
        self.last: Snapshot | None = None  # the latest event

    @property
    def retain(self) -> bool:
        return self.alert is not None and (self.active or not self.acked or not self.confirmed)

    def follow(self, slot: PredictionSlot) -> None:
        """A mapping reload kept this slot: a new severity applies from the next event; a new
        normal label or hold starts the rule over (``bridge.alertrule.follow_tracks``)."""
        self.severity = slot.alarm.severity
        self.faults = frozenset(slot.labels[1:])
        hold = (slot.labels[0], slot.alarm.raise_after, slot.alarm.clear_after)
        if hold != (self.normal, self.track.raise_after, self.track.clear_after):
            self.normal = slot.labels[0]
            self.track = LabelTrack.held(self.normal, slot.alarm)

    # -- what the predictions do ---------------------------------------------------------

    def step(self, p: Prediction) -> Snapshot | None:
        label = label_of(p)
        if label is None:  # a Bad prediction neither raises nor clears (the rule's own rule)
            return None
        previous = self.track.step(label)
        if previous is not None:
            reason = p.explanation.reason if p.explanation is not None else ""
            alert = AlertInfo(p.id, label, previous, p.timestamp, p.version, reason)
            return self._raise(alert)
        if self.active and self.track.state == self.normal:
            self.active = False
            return self._snapshot("inactive", p.timestamp)
        return None

    def _raise(self, alert: AlertInfo) -> Snapshot:
        self.alert = alert
        self.active = True
        self.active_since = alert.raised_at
        self.acked, self.confirmed = False, True
        self.acked_at = self.confirmed_at = None
        self.comment = self.user = ""
        return self._snapshot("raised", alert.raised_at)

    # -- what the store says ---------------------------------------------------------------

    def seed(self, record: AlarmRecord | None, latest_label: str | None) -> Snapshot | None:
        """Start from the store (server start, or a slot a reload adds): ``record`` is the
        newest alarm alert of this asset+model, ``latest_label`` the label of its last stored
        prediction. Still in that fault: active, and the track continues from the label (as
        the outbox's rules do, ``LabelTrack.seed``). Back to normal (or another label) but not
        yet acknowledged or confirmed: shown inactive until it is. Otherwise nothing to show."""
        if record is None or record.label not in self.faults:
            return None
        still = latest_label == record.label
        if not still and record.acked_at is not None and record.confirmed_at is not None:
            return None
        if still:
            self.track.seed(record.label)
        self._take(record)
        self.active = still
        kind = "raised"
        if record.acked_at is not None:
            kind = "acknowledged" if record.confirmed_at is None else "confirmed"
        return self._snapshot(kind, _time_of(record, kind))

    def adopt(self, record: AlarmRecord) -> list[Snapshot]:
        """An alarm alert the store holds for this asset+model: the one shown (its stored state
        applies), or a newer one the alert writer raised and this track did not (taken over:
        active, and the track's state becomes its label so it is not raised twice)."""
        if record.label not in self.faults:
            return []
        alert = self.alert
        if alert is not None and alert.prediction_id == record.prediction_id:
            return self.stored(record)
        if alert is not None and record.raised_at <= alert.raised_at:
            return []  # an older alert: the alarm moved on
        self.track.state = record.label
        out = [self._raise(self._info(record))]
        return out + self.stored(record)

    def stored(self, record: AlarmRecord) -> list[Snapshot]:
        """What the store says about the alert shown: acknowledged or confirmed by anyone."""
        alert = self.alert
        if alert is None or alert.prediction_id != record.prediction_id:
            return []
        alert.alert_id = record.alert_id
        out = []
        if not self.acked and record.acked_at is not None:
            self.acked, self.confirmed = True, False
            self.acked_at = record.acked_at
            self.user, self.comment = record.acked_by or "", record.ack_comment or ""
            out.append(self._snapshot("acknowledged", record.acked_at))
        if self.acked and not self.confirmed and record.confirmed_at is not None:
            self.confirmed = True
            self.confirmed_at = record.confirmed_at
            self.user, self.comment = record.confirmed_by or "", record.confirm_comment or ""
            out.append(self._snapshot("confirmed", record.confirmed_at))
        return out

    def removed(self, now: float) -> Snapshot | None:
        """The slot left the mapping: a last event with Retain false, so HMIs drop the alarm."""
        if not self.retain:
            return None
        self.active, self.acked, self.confirmed = False, True, True
        return self._snapshot("removed", now)

    # -- what an operator may do -----------------------------------------------------------

    def refuse_acknowledge(self, given: bytes) -> Refusal | None:
        """Why an Acknowledge with EventId ``given`` is refused, or None."""
        if self.alert is None or self.last is None:
            return "no_alert"
        if given != self.last.event_id:
            return "event_unknown"
        if self.acked:
            return "already_acked"
        return None

    def refuse_confirm(self, given: bytes) -> Refusal | None:
        if self.alert is None or self.last is None:
            return "no_alert"
        if given != self.last.event_id:
            return "event_unknown"
        if not self.acked:
            return "not_acked"
        if self.confirmed:
            return "already_confirmed"
        return None

    # -- events ----------------------------------------------------------------------------

    def _take(self, record: AlarmRecord) -> None:
        self.alert = self._info(record)
        self.active_since = record.raised_at
        self.acked = record.acked_at is not None
        self.confirmed = not self.acked or record.confirmed_at is not None
        self.acked_at, self.confirmed_at = record.acked_at, record.confirmed_at
        if record.confirmed_at is not None:
            self.user, self.comment = record.confirmed_by or "", record.confirm_comment or ""
        else:
            self.user, self.comment = record.acked_by or "", record.ack_comment or ""

    @staticmethod
    def _info(record: AlarmRecord) -> AlertInfo:
        return AlertInfo(
            record.prediction_id,
            record.label,
            record.previous,
            record.raised_at,
            record.version or "",
            record.reason,
            record.alert_id,
        )

    def _snapshot(self, kind: str, time: float) -> Snapshot:
        alert = self.alert
        assert alert is not None
        snap = Snapshot(
            kind=kind,
            event_id=event_id(alert.prediction_id, kind),
            time=time,
            active=self.active,
            acked=self.acked,
            confirmed=self.confirmed,
            retain=self.retain,
            severity=self.severity,
            message=message(self.asset, self.model, alert),
            comment=self.comment,
            user=self.user,
            alert=alert,
            active_since=self.active_since,
            acked_at=self.acked_at,
            confirmed_at=self.confirmed_at,
        )
        self.last = snap
        return snap


def message(asset: str, model: str, alert: AlertInfo) -> str:
    """One line for the alarm list: what, why, which model version, which prediction. The
    same for every event of one alert (the states and the comment say what happened)."""
    parts = [f"{asset}/{model}: {alert.label} (was {alert.previous})"]
    if alert.reason:
        parts.append(alert.reason)
    if alert.version:
        parts.append(f"model {alert.version}")
    parts.append(f"prediction {alert.prediction_id}")
    return "; ".join(parts)


def _time_of(record: AlarmRecord, kind: str) -> float:
    if kind == "confirmed" and record.confirmed_at is not None:
        return record.confirmed_at
    if kind == "acknowledged" and record.acked_at is not None:
        return record.acked_at
    return record.raised_at
