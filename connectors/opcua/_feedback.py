"""The operator feedback methods of each prediction object: Acknowledge, Confirm and Reject.

Inputs: ``PredictionId`` (the id the HMI showed the operator, from the object's ``Id`` or the
alarm) and ``Comment``; output: the id stored. The id is an argument because the object's value
moves on every tick: feedback applied to "whatever the node shows when the call arrives" lands
on a newer prediction than the one the operator judged. An id that is unknown, or that belongs
to another asset or model, is refused (BadNoMatch / BadInvalidArgument) and nothing is stored.
Only ``operator`` sessions may call them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import structlog
from asyncua import ua
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua._caller import caller_name, caller_role
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.encode import node_string
from bridge.errors import BridgeError
from bridge.types import Feedback, FeedbackAction, FeedbackService, Prediction

__all__ = ["FEEDBACK_METHODS", "FeedbackMethods"]

log = structlog.get_logger(__name__)

FEEDBACK_METHODS: dict[str, FeedbackAction] = {
    "Acknowledge": "acknowledge",
    "Confirm": "confirm",
    "Reject": "reject",
}
# Recent predictions per object answered without a store look-up (the store commits a moment
# after the HMI sees a value, so the newest ids may not be there yet).
_RECENT = 64
_MAX_COMMENT = 2000

Slot = tuple[str, str]


class Shown(NamedTuple):
    """A prediction shown on the HMI, as feedback needs it."""

    id: str
    asset: str
    model: str
    timestamp: float
    value: str | float | None


# What is kept per shown prediction: (timestamp, value). Not the Prediction: 2,000 objects x
# 64 predictions with their input snapshots were ~400,000 objects for the cyclic collector to
# walk in every full collection (100-280 ms pauses at 2,000 assets, bench/trigger.py). A plain
# tuple of numbers and strings is dropped from the collector's lists by its first collection
# (a NamedTuple is not: CPython only untracks exact tuples).
_Kept = tuple[float, str | float | None]


def _argument(name: str, description: str) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = make_node_id(ObjectIds.String, 0)
    arg.ValueRank = -1
    arg.Description = ua.LocalizedText(description)
    return arg


def _text(args: Sequence[Any], index: int) -> str:
    raw = args[index] if index < len(args) else None
    raw = getattr(raw, "Value", raw)
    return raw if isinstance(raw, str) else ""


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(cast(Any, code))


class FeedbackMethods:
    def __init__(self, service: FeedbackService, counters: dict[str, int], logger: Any) -> None:
        self._service = service
        self._counters = counters
        self._log = logger
        self._recent: dict[Slot, OrderedDict[str, _Kept]] = {}

    async def add(self, obj: Node, ns: int, slot: Slot, nid: Callable[[str], ua.NodeId]) -> None:
        inputs = [
            _argument("PredictionId", "Id of the prediction the operator answers"),
            _argument("Comment", "Free text (may be empty)"),
        ]
        outputs = [_argument("PredictionId", "Id of the prediction the feedback is stored for")]
        for method, action in FEEDBACK_METHODS.items():
            nodeid = nid(node_string(slot[0], slot[1], method))
            await obj.add_method(
                nodeid, f"{ns}:{method}", self._handler(slot, action), inputs, outputs
            )

    def shown(self, prediction: Prediction) -> None:
        recent = self._recent.setdefault((prediction.asset, prediction.model), OrderedDict())
        recent[prediction.id] = (prediction.timestamp, prediction.value)
        if len(recent) > _RECENT:
            recent.popitem(last=False)

    def _handler(self, slot: Slot, action: FeedbackAction) -> Any:
        async def handle(parent: Any, *args: Any) -> Any:
            return await self._on_call(slot, action, args)

        return handle

    def _count(self, what: str) -> None:
        self._counters[what] = self._counters.get(what, 0) + 1

    async def _on_call(self, slot: Slot, action: FeedbackAction, args: Sequence[Any]) -> Any:
        # The ruleset already refuses Call to non-operators; checked again where it matters.
        if caller_role() != "operator":
            self._count("feedback_refused")
            return _status(StatusCodes.BadUserAccessDenied)
        prediction_id = _text(args, 0).strip()
        if not prediction_id:
            self._count("feedback_refused")
            return _status(StatusCodes.BadArgumentsMissing)
        try:
            prediction = await self._find(slot, prediction_id)
        except BridgeError as exc:
            self._log.error("feedback_lookup_failed", prediction=prediction_id, error=str(exc))
            return _status(StatusCodes.BadResourceUnavailable)
        if prediction is None:
            self._count("feedback_refused")
            self._log.warning("feedback_for_unknown_prediction", prediction=prediction_id)
            return _status(StatusCodes.BadNoMatch)
        if (prediction.asset, prediction.model) != slot:
            self._count("feedback_refused")
            self._log.warning(
                "feedback_for_foreign_prediction",
                prediction=prediction_id,
                called_on=f"{slot[0]}/{slot[1]}",
                belongs_to=f"{prediction.asset}/{prediction.model}",
            )
            return _status(StatusCodes.BadInvalidArgument)
        try:
            await self._service.record(
                Feedback(
                    prediction_id=prediction.id,
                    asset=prediction.asset,
                    model=prediction.model,
                    action=action,
                    by=caller_name(),
                    channel="opcua",
                    prediction_time=prediction.timestamp,
                    value=prediction.value,
                    comment=_text(args, 1)[:_MAX_COMMENT],
                )
            )
        except BridgeError as exc:
            self._log.error("feedback_not_stored", error=str(exc))
            return _status(StatusCodes.BadResourceUnavailable)
        self._count("feedback")
        return [ua.Variant(prediction.id, ua.VariantType.String)]

    async def _find(self, slot: Slot, prediction_id: str) -> Shown | Prediction | None:
        recent = self._recent.get(slot)
        if recent is not None and prediction_id in recent:
            return Shown(prediction_id, *slot, *recent[prediction_id])
        # Not shown here lately: maybe another object's, or an older one of this object.
        for (asset, model), other in self._recent.items():
            if prediction_id in other:
                return Shown(prediction_id, asset, model, *other[prediction_id])
        return await self._service.find(prediction_id)
