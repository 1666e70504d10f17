"""Section 5, change management: mapping loads, reloads and refusals, model changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.store.auditchain import AuditEntry

from .controls import family
from .formatting import _one_line, _when
from .model import Facts, Section, _table

if TYPE_CHECKING:
    from .gather import _Evidence


def _state(value: Any) -> str:
    if isinstance(value, dict) and "state" in value:
        return str(value["state"])
    return "-"


def _change(entry: AuditEntry) -> str:
    before, after = _state(entry.before), _state(entry.after)
    if before == "-":
        return after  # a new version: no state before
    return f"{before} \u2192 {after}"


def _revision(entry: AuditEntry) -> str:
    for value in (entry.after, entry.before):
        if isinstance(value, dict) and isinstance(value.get("revision"), str):
            return str(value["revision"])[:12]
    return "-"


def _changes(ev: _Evidence) -> Section:
    counts = ev.ledger.by_action
    facts = Facts(
        (
            ("Running mapping revision", ev.mapping.revision),
            (
                "Mapping in the period",
                f"{counts['mapping.loaded']} loaded, {counts['mapping.reloaded']} reloaded, "
                f"{counts['mapping.refused']} refused",
            ),
            ("Model changes in the period", str(ev.ledger.prefixed("model."))),
            (
                "Gateway starts and stops in the period",
                f"{counts['gateway.started']} started, {counts['gateway.stopped']} stopped",
            ),
        )
    )
    mapping = _table(
        "Mapping loads, reloads and refusals",
        ("When (UTC)", "Action", "Actor", "Channel", "Revision", "Reason"),
        (
            (_when(e), e.action, e.actor, e.channel, _revision(e), _one_line(e.reason))
            for e in ev.ledger.kept["mapping"]
        ),
        empty="No mapping change in the period.",
        more=ev.ledger.left_out["mapping"],
        more_hint=ev.more_hint("mapping."),
    )
    models = _table(
        "Model changes",
        ("When (UTC)", "Action", "Version", "Actor", "Channel", "State", "Reason"),
        (
            (
                _when(e),
                e.action,
                e.subject.removeprefix("model:"),
                e.actor,
                e.channel,
                _change(e),
                _one_line(e.reason),
            )
            for e in ev.ledger.kept["model"]
        ),
        empty="No model change in the period.",
        more=ev.ledger.left_out["model"],
        more_hint=ev.more_hint("model."),
    )
    return Section(family("changes"), (facts, mapping, models))
