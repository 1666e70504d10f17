"""Section 6, AI risk: evidence for NIST AI RMF 1.0's GOVERN, MAP, MEASURE and MANAGE."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from bridge.auth import Scope
from bridge.config.resolved import ResolvedModel
from bridge.config.signing import PUBLIC_KEY_VARIABLE

from .controls import family
from .cryptography import _model_signatures
from .formatting import _duration, _listed, _one_line, _percent, _shown_path, _when, _yes
from .model import Facts, Note, Section, _table
from .monitoring import _drift_coverage, _withheld

if TYPE_CHECKING:
    from .gather import _Evidence


def _task(model: ResolvedModel) -> str:
    if model.outputs.value is not None:
        unit = f" in {model.outputs.unit}" if model.outputs.unit else ""
        return f"regression{unit} (ONNX output {model.outputs.value})"
    labels = f": {_listed(list(model.labels))}" if model.labels else " (labels from the model)"
    return f"classification{labels}"


def _inputs(ev: _Evidence, model: ResolvedModel) -> str:
    units: dict[str, str] = {}
    for asset in model.assets:
        for tag, unit in ev.mapping.input_units(model, asset):
            units.setdefault(tag, unit)
    tags = dict.fromkeys(f.tag for f in model.features)
    return ", ".join(f"{t} [{units[t]}]" if t in units else t for t in tags)


def _govern(ev: _Evidence) -> Section:
    g = ev.mapping.gateway
    admins = [k.key_id for k in ev.keys if k.active and k.scope is Scope.ADMIN]
    actors = Counter(e.actor for e in ev.ledger.kept["model"])
    profile = g.durability.profile
    facts = Facts(
        (
            (
                "Durability profile",
                profile
                + (
                    ": unsigned models never register, activate or load; changed model files "
                    "are withheld"
                    if profile == "production"
                    else ""
                ),
            ),
            ("Model signatures", _model_signatures(ev)),
            (
                "Mapping signatures",
                "required at report time"
                if ev.env.get(PUBLIC_KEY_VARIABLE)
                else "not required at report time",
            ),
            (
                "Inventory of AI systems",
                f"{len(ev.mapping.models)} model(s) in the mapping, {len(ev.versions)} "
                "version(s) in the registry (see Asset inventory)",
            ),
            (
                "Who may change models",
                f"REST API: keys of scope admin ({len(admins)} active: {_listed(admins)}); "
                "CLI: bridge models, by whoever can write to the store (recorded as cli: "
                "and the user's name); the mapping's own version (recorded as mapping); the "
                "runtime's refusals and canary guard (recorded as system)",
            ),
            (
                "Who changed models in the period",
                _listed([f"{actor} ({n})" for actor, n in actors.most_common()]),
            ),
        )
    )
    return Section(family("ai.govern"), (facts,))


def _map(ev: _Evidence) -> Section:
    rows = (
        (
            name,
            m.version,
            _task(m),
            f"{len(m.assets)}: {_listed(list(m.assets))}",
            ", ".join(f.name for f in m.features),
            _inputs(ev, m),
            "on input change" if m.trigger == "change" else f"every {m.period_s:g} s",
        )
        for name, m in sorted(ev.mapping.models.items())
    )
    table = _table(
        "Models, what they decide and from what",
        ("Model", "Version", "Task", "Assets", "Features", "Inputs (tags)", "Runs"),
        rows,
        empty="No model in the mapping.",
    )
    return Section(family("ai.map"), (table,))


def _measure(ev: _Evidence) -> Section:
    watched, features = _drift_coverage(ev)
    al, fb = ev.alerts, ev.feedback
    facts = Facts(
        (
            ("Drift monitoring", watched),
            ("Drift features covered", features),
            ("Alerts raised in the period", str(al.total)),
            (
                "Alerts acknowledged",
                f"{al.acknowledged} of {al.total}; {al.open} open"
                + (
                    f", the oldest for {_duration(al.oldest_open_age_s)}"
                    if al.oldest_open_age_s is not None
                    else ""
                ),
            ),
            ("Mean time to acknowledge (MTTA), alerts", _duration(al.mean_time_to_ack_s)),
            ("Longest time to acknowledge, alerts", _duration(al.max_time_to_ack_s)),
            ("Predictions in the period (Good, with a value)", str(fb.predictions)),
            (
                "Operator feedback",
                f"{fb.with_feedback} prediction(s) answered: {fb.acknowledged} acknowledged, "
                f"{fb.confirmed} confirmed, {fb.rejected} rejected (overridden)",
            ),
            (
                "Mean time to first feedback",
                _duration(fb.mean_time_to_acknowledge_s),
            ),
            (
                "Autonomous decision coverage",
                f"{_percent(fb.autonomous_decision_coverage)} of predictions not overridden "
                "by an operator",
            ),
        )
    )
    drift = _table(
        "Drift monitoring per model",
        ("Model", "Drift", "Threshold (PSI)", "Window", "Reference statistics"),
        (
            (
                name,
                _yes(m.drift is not None),
                f"{m.drift.threshold:g}" if m.drift is not None else "-",
                f"{m.drift.window} rows" if m.drift is not None else "-",
                _shown_path(m.reference, ev.base) if m.reference is not None else "-",
            )
            for name, m in sorted(ev.mapping.models.items())
        ),
        empty="No model in the mapping.",
    )
    comparisons = _table(
        "Shadow and canary comparisons with the active version (stored, all gateways)",
        ("Model", "Candidate", "State", "Compared", "Agreed", "Agreement", "Assets"),
        (
            (
                c.record.name,
                c.record.version,
                c.record.state,
                str(c.compared),
                str(c.agreed),
                _percent(c.agreed / c.compared),
                str(c.assets),
            )
            for c in ev.comparisons
        ),
        empty="No shadow or canary comparison stored.",
    )
    return Section(family("ai.measure"), (facts, drift, comparisons))


def _manage(ev: _Evidence) -> Section:
    entries = ev.ledger.kept["manage"]
    counts = ev.ledger.by_action
    withheld = [e for e in entries if e.action == "integrity.mismatch" and _withheld(e)]
    facts = Facts(
        (
            ("Rollbacks in the period", str(counts["model.rolled_back"])),
            (
                "Refusals in the period",
                f"{counts['model.refused']} model version(s), {counts['mapping.refused']} "
                "mapping reload(s)",
            ),
            (
                "Models withheld in the period",
                f"{len(withheld)} time(s) a changed file withheld models "
                f"({_listed(sorted({e.subject for e in withheld}))})",
            ),
            ("Restored in the period", f"{counts['model.restored']} model version(s)"),
            (
                "Means to supersede or deactivate",
                "rollback, shadow and canary with a guard (bridge models, REST API); the "
                "production profile withholds a model whose file changed",
            ),
        )
    )
    table = _table(
        "Rollbacks, refusals and withheld models",
        ("When (UTC)", "Action", "Subject", "Actor", "Channel", "Reason"),
        (
            (
                _when(e),
                e.action + (" (withheld)" if _withheld(e) else ""),
                e.subject,
                e.actor,
                e.channel,
                _one_line(e.reason),
            )
            for e in entries
        ),
        empty="None in the period.",
        more=ev.ledger.left_out["manage"],
        more_hint=ev.more_hint(),
    )
    return Section(family("ai.manage"), (facts, table))


def _ai_risk(ev: _Evidence) -> Section:
    return Section(
        family("ai"),
        (
            Note(
                "Evidence the gateway holds for the AI RMF functions; the organisational "
                "outcomes (policies, roles, risk tolerance) are the operator's to show."
            ),
        ),
        (_govern(ev), _map(ev), _measure(ev), _manage(ev)),
    )
