"""Write-back actions: the pure evaluator that decides, for one triggering event, whether an
action writes, records what it would write (shadow), waits for an operator, or refuses; and the
per-action state its limits are judged against. No I/O here: the write protocol (arm,
interlocks, write, read back, record) builds on these decisions."""

from bridge.actions.evaluate import (
    Check,
    Decision,
    Event,
    InterlockReading,
    ModelView,
    Outcome,
    TagChange,
    TagView,
    evaluate,
)
from bridge.actions.state import HOUR_S, ActionState

__all__ = [
    "HOUR_S",
    "ActionState",
    "Check",
    "Decision",
    "Event",
    "InterlockReading",
    "ModelView",
    "Outcome",
    "TagChange",
    "TagView",
    "evaluate",
]
