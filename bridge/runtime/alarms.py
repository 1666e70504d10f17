"""``StoreAlarms``: the store's alerts behind the HMI server's alarms (``AlarmService``).

The HMI's Acknowledge and Confirm act on the stored alert of the prediction that raised the
alarm, through the same repository calls the REST API uses (one acknowledgement, one ledger
entry, counted once by time-to-acknowledge); the rest are bounded reads. Every call runs in a
worker thread: the store is synchronous and the server's event loop must not wait on it.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping, Sequence
from typing import cast

from bridge.alertrule import label_of
from bridge.store.alerts import (
    EVENT_KINDS,
    Alert,
    AlertEvent,
    AlertRepository,
    AlertScope,
    AlreadyAcknowledged,
    EventCursor,
)
from bridge.store.outbox import OutboxRepository
from bridge.types import AlarmAnswer, AlarmEvent, AlarmEventKind, AlarmRecord

__all__ = ["StoreAlarms"]

# A continuation point: format byte, event time, alert id, kind. Anything else is refused.
_CURSOR = struct.Struct(">Bdqb")
_CURSOR_FORMAT = 1


class StoreAlarms:
    def __init__(self, alerts: AlertRepository, outbox: OutboxRepository) -> None:
        self._alerts = alerts
        self._outbox = outbox

    async def acknowledge(
        self, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]:
        return await asyncio.to_thread(self._acknowledge, prediction_id, by, comment)

    def _acknowledge(
        self, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]:
        found = self._alerts.of_predictions([prediction_id])
        if not found:
            return "missing", None
        try:
            done = self._alerts.acknowledge(
                found[0].id, by, None, comment, actor=f"opcua:{by}", channel="opcua"
            )
        except AlreadyAcknowledged:
            again = self._alerts.of_predictions([prediction_id])
            return "before", (_record(again[0]) if again else None)
        if done is None:  # removed (retention) between the two statements
            return "missing", None
        return "done", _record(done)

    async def confirm(
        self, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]:
        return await asyncio.to_thread(self._confirm, prediction_id, by, comment)

    def _confirm(
        self, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]:
        found = self._alerts.of_predictions([prediction_id])
        if not found:
            return "missing", None
        alert, changed = self._alerts.confirm(
            found[0].id, by, comment, actor=f"opcua:{by}", channel="opcua"
        )
        if alert is None:
            return "missing", None
        if changed:
            return "done", _record(alert)
        return ("unacknowledged" if alert.acked_at is None else "before"), _record(alert)

    async def of_predictions(self, prediction_ids: Sequence[str]) -> list[AlarmRecord]:
        found = await asyncio.to_thread(self._alerts.of_predictions, list(prediction_ids))
        return [_record(a) for a in found]

    async def raised_after(self, alert_id: int, limit: int) -> list[AlarmRecord]:
        found = await asyncio.to_thread(self._alerts.raised_after, alert_id, limit)
        return [_record(a) for a in found]

    async def last_id(self) -> int:
        return await asyncio.to_thread(self._alerts.last_id)

    async def newest(
        self, faults: Mapping[str, tuple[str, ...]], assets: Sequence[str]
    ) -> list[AlarmRecord]:
        scope = AlertScope(dict(faults), tuple(assets))
        return await asyncio.to_thread(self._newest, scope)

    def _newest(self, scope: AlertScope) -> list[AlarmRecord]:
        found = self._alerts.newest(scope)
        raising = self._alerts.raising([a.prediction_id for a in found])
        return [_record(a, *raising.get(a.prediction_id, (None, ""))) for a in found]

    async def latest_labels(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        latest = await asyncio.to_thread(self._outbox.latest_predictions, list(pairs))
        out: dict[tuple[str, str], str] = {}
        for p in latest:
            label = label_of(p)
            if label is not None:
                out[(p.asset, p.model)] = label
        return out

    async def events(
        self,
        faults: Mapping[str, tuple[str, ...]],
        assets: Sequence[str] | None,
        since: float | None,
        until: float | None,
        limit: int,
        after: bytes | None = None,
        newest_first: bool = False,
    ) -> list[AlarmEvent]:
        cursor = None if after is None else _decode(after)
        scope = AlertScope(dict(faults), None if assets is None else tuple(assets))
        found = await asyncio.to_thread(
            self._alerts.events,
            scope,
            since,
            until,
            limit,
            after=cursor,
            newest_first=newest_first,
        )
        return [_event(e) for e in found]


def _record(a: Alert, version: str | None = None, reason: str = "") -> AlarmRecord:
    return AlarmRecord(
        alert_id=a.id,
        prediction_id=a.prediction_id,
        asset=a.asset,
        model=a.model,
        label=a.label,
        previous=a.previous,
        raised_at=a.raised_at,
        acked_at=a.acked_at,
        acked_by=a.acked_by,
        ack_comment=a.ack_comment,
        confirmed_at=a.confirmed_at,
        confirmed_by=a.confirmed_by,
        confirm_comment=a.confirm_comment,
        version=version,
        reason=reason,
    )


def _event(e: AlertEvent) -> AlarmEvent:
    c = e.cursor
    cursor = _CURSOR.pack(_CURSOR_FORMAT, c.time, c.alert_id, c.kind)
    kind = cast(AlarmEventKind, e.kind)
    return AlarmEvent(kind, e.time, _record(e.alert, e.version, e.reason), cursor)


def _decode(raw: bytes) -> EventCursor:
    if len(raw) != _CURSOR.size:
        raise ValueError("not a continuation point of this server")
    fmt, at, alert_id, kind = _CURSOR.unpack(raw)
    if fmt != _CURSOR_FORMAT or not 0 <= kind < len(EVENT_KINDS) or at != at:
        raise ValueError("not a continuation point of this server")
    return EventCursor(at, alert_id, kind)
