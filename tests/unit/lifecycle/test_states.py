"""The registry's state machine, without a database: which moves are allowed and which
versions each move retires or restores."""

from __future__ import annotations

import pytest

from bridge.lifecycle.states import MAY_FOLLOW, plan_move, plan_refusal
from bridge.store.registry import RegistryConflict, StateChanges, VersionState

STATES: tuple[VersionState, ...] = (
    "registered",
    "active",
    "shadow",
    "canary",
    "retired",
    "refused",
)


def test_every_state_has_its_successors_and_nothing_returns_to_registered() -> None:
    assert set(MAY_FOLLOW) == set(STATES)
    assert all("registered" not in after for after in MAY_FOLLOW.values())
    assert MAY_FOLLOW["active"] == {"retired", "refused"}


def test_activating_retires_the_active_version_and_the_candidate() -> None:
    current: dict[str, VersionState] = {"1": "active", "2": "canary", "3": "registered"}
    changes = plan_move(current, "3", "active", "activate", {"by": "cli"})
    assert changes == StateChanges(
        {"3": "active", "1": "retired", "2": "retired"},
        (("3", "activate", {"by": "cli", "previous": "1"}),),
    )


def test_promoting_the_candidate_remembers_the_active_it_replaced() -> None:
    changes = plan_move({"1": "active", "2": "shadow"}, "2", "active", "promote")
    assert changes.states == {"2": "active", "1": "retired"}
    assert changes.events == (("2", "promote", {"previous": "1"}),)


def test_a_new_candidate_ends_the_old_one_and_keeps_the_active() -> None:
    changes = plan_move({"1": "active", "2": "shadow", "3": "retired"}, "3", "canary", "canary")
    assert changes.states == {"3": "canary", "2": "retired"}
    # A canary started again (a new share) stays the one candidate.
    again = plan_move({"1": "active", "3": "canary"}, "3", "canary", "canary")
    assert again.states == {"3": "canary"}


@pytest.mark.parametrize(
    ("state", "target"),
    [("active", "active"), ("active", "shadow"), ("active", "canary"), ("retired", "retired")],
)
def test_moves_the_machine_does_not_allow_are_conflicts(
    state: VersionState, target: VersionState
) -> None:
    with pytest.raises(RegistryConflict, match=f"from {state} to {target}"):
        plan_move({"1": state}, "1", target, "x")


def test_refusing_the_active_version_restores_the_one_that_still_serves() -> None:
    changes = plan_refusal({"1": "retired", "2": "active"}, "2", "1", "bad signature")
    assert changes == StateChanges(
        {"2": "refused", "1": "active"},
        (
            ("2", "refuse", {"reason": "bad signature", "restored": "1"}),
            ("1", "restore", {"refused": "2"}),
        ),
    )


def test_refusing_a_candidate_restores_nothing() -> None:
    changes = plan_refusal({"1": "active", "2": "canary"}, "2", None, "shape")
    assert changes is not None and changes.states == {"2": "refused"}
    assert [e[1] for e in changes.events] == ["refuse"]


def test_a_refusal_changes_nothing_once_another_gateway_recorded_it() -> None:
    # The first gateway of a fleet to refuse wins; the others find the version refused.
    assert plan_refusal({"1": "active", "2": "refused"}, "2", "1", "again") is None
    assert plan_refusal({"1": "active"}, "9", "1", "gone") is None


def test_no_restore_when_another_version_was_activated_meanwhile() -> None:
    # "1" was activated by hand since: the refused "2" is not active, only refused.
    changes = plan_refusal({"1": "active", "2": "shadow", "3": "retired"}, "2", "3", "x")
    assert changes is not None and changes.states == {"2": "refused"}
    # The restore target must be retired or registered to come back.
    back = plan_refusal({"2": "active", "3": "refused"}, "2", "3", "x")
    assert back is not None and back.states == {"2": "refused"}
