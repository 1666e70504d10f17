"""The model registry's state machine: which state a version may move to, and what the move does
to the model's other versions. Pure: the repository (``bridge.store.registry``) locks the
model's rows, hands their states to a decision made here and writes what it says.

A version is ``registered`` (known, not serving), ``active`` (serves every asset), ``shadow``
(runs beside the active one, published nowhere), ``canary`` (serves a share of the assets),
``retired``, or ``refused`` (a gateway would not load it). Per model at most one version is
active and at most one is a candidate (shadow or canary): a move to ``active`` retires the
active version it displaces (remembered as ``previous``, which a rollback returns to), and a
move to ``active`` or to a candidate state retires the other candidate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.store.registry import (
    CANDIDATE_STATES,
    Decide,
    RegistryConflict,
    StateChanges,
    VersionState,
)

__all__ = [
    "MAY_FOLLOW",
    "SERVING_STATES",
    "may_follow",
    "move",
    "plan_move",
    "plan_refusal",
    "refusal",
]

SERVING_STATES: tuple[VersionState, ...] = ("active", *CANDIDATE_STATES)

# state -> the states a version in it may move to. ``active -> retired`` only happens to the
# version a new active one displaces; a candidate may be started again (a canary's new share).
MAY_FOLLOW: Mapping[VersionState, frozenset[VersionState]] = {
    "registered": frozenset({"active", "shadow", "canary"}),
    "active": frozenset({"retired", "refused"}),
    "shadow": frozenset({"active", "shadow", "canary", "retired", "refused"}),
    "canary": frozenset({"active", "shadow", "canary", "retired", "refused"}),
    "retired": frozenset({"active", "shadow", "canary"}),
    "refused": frozenset({"active", "shadow", "canary"}),
}


def may_follow(current: VersionState, target: VersionState) -> bool:
    return target in MAY_FOLLOW[current]


def plan_move(
    current: Mapping[str, VersionState],
    version: str,
    target: VersionState,
    action: str,
    detail: Mapping[str, Any] | None = None,
) -> StateChanges:
    """Move ``version`` to ``target`` (its event: ``action`` with ``detail``); the versions it
    displaces are retired. ``current``: every version of the model and its state."""
    state = current[version]
    if not may_follow(state, target):
        raise RegistryConflict(f"version {version} cannot go from {state} to {target}")
    states: dict[str, VersionState] = {version: target}
    info = dict(detail or {})
    for other, other_state in sorted(current.items()):
        if other == version:
            continue
        if target == "active" and other_state == "active":
            states[other] = "retired"
            info.setdefault("previous", other)
        # One candidate at a time: a new shadow/canary (or promoting it) ends the old one.
        if (target == "active" or target in CANDIDATE_STATES) and other_state in CANDIDATE_STATES:
            states[other] = "retired"
    return StateChanges(states, ((version, action, info),))


def move(
    version: str, target: VersionState, action: str, detail: Mapping[str, Any] | None = None
) -> Decide:
    """``plan_move`` as the repository's decision callback."""
    return lambda current: plan_move(current, version, target, action, detail)


def plan_refusal(
    current: Mapping[str, VersionState], version: str, restore: str | None, reason: str
) -> StateChanges | None:
    """A gateway refused to load ``version``: it becomes ``refused``, so that the registry says
    what serves. If it was the active version, ``restore`` (the version that gateway still
    serves) is active again, unless another version was activated meanwhile.

    Only a version still serving changes: every gateway of a fleet refuses the same version,
    the first one to say so wins, the others change nothing (``None``)."""
    state = current.get(version)
    if state not in SERVING_STATES:
        return None
    states: dict[str, VersionState] = {version: "refused"}
    detail: dict[str, Any] = {"reason": reason}
    back = None
    if (
        state == "active"
        and restore is not None
        and restore != version
        and current.get(restore) in ("retired", "registered")
    ):
        back = restore
    if back is None:
        return StateChanges(states, ((version, "refuse", detail),))
    states[back] = "active"
    detail["restored"] = back
    return StateChanges(
        states, ((version, "refuse", detail), (back, "restore", {"refused": version}))
    )


def refusal(version: str, restore: str | None, reason: str) -> Decide:
    """``plan_refusal`` as the repository's decision callback."""
    return lambda current: plan_refusal(current, version, restore, reason)
