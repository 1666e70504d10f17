"""Section 4, logging and monitoring: the audit chain, alerts, drift and integrity checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.store.auditchain import AuditEntry

from .controls import family
from .formatting import _duration, _one_line, _when, _yes
from .model import Block, Facts, Finding, Note, Section, _table

if TYPE_CHECKING:
    from .gather import _Chain, _Evidence


def _chain_verdict(chain: _Chain) -> str:
    r = chain.result
    if r.ok:
        span = f" (seq 1-{r.last_seq})" if r.entries else ""
        return f"verified: {r.entries} entries{span}, every hash and link intact"
    first = r.first_problem
    assert first is not None
    more = f"; {len(r.problems) - 1} more problem(s)" if len(r.problems) > 1 else ""
    return f"BROKEN at entry {first.seq} ({first.kind}): {first.message}{more}"


def _drift_coverage(ev: _Evidence) -> tuple[str, str]:
    models = list(ev.mapping.models.values())
    watched = [m for m in models if m.drift is not None]
    features = sum(len(m.features) for m in models)
    covered = sum(len(m.features) for m in watched)
    return (
        f"{len(watched)} of {len(models)} model(s) with drift monitoring"
        + (f" ({', '.join(m.name for m in watched)})" if watched else ""),
        f"{covered} of {features} model input feature(s) compared with reference statistics (PSI)",
    )


def _metrics_endpoint(ev: _Evidence) -> str:
    g = ev.mapping.gateway
    if g.metrics.listen is not None:
        return f"served by a listener of its own at http://{g.metrics.listen}/metrics"
    if g.api.enabled:
        return f"served at /metrics on the REST API's port {g.api.port} (no key needed)"
    return "not served (the REST API is disabled and gateway.metrics.listen is not set)"


def _integrity_interval(ev: _Evidence) -> str:
    a = ev.mapping.gateway.audit
    when = (
        f"every {a.integrity_s:g} s, at start and after each reload"
        if a.integrity_s > 0
        else "at start and after each reload only (integrity_s: 0)"
    )
    if ev.mapping.gateway.durability.profile == "production":
        return when + "; the production profile withholds models whose files do not match"
    return when + "; mismatches are reported, models keep running (default profile)"


def _withheld(entry: AuditEntry) -> bool:
    return isinstance(entry.after, dict) and entry.after.get("withheld") is True


def _logging(ev: _Evidence) -> Section:
    g = ev.mapping.gateway
    a = g.audit
    chain = ev.chain
    r = chain.result
    if not r.ok:
        first = r.first_problem
        assert first is not None
        ev.findings.append(
            Finding(
                "fail",
                f"The audit chain is BROKEN at entry {first.seq} ({first.kind}): {first.message}.",
            )
        )
    elif r.unsigned_tail:
        ev.findings.append(
            Finding(
                "warn",
                f"{r.unsigned_tail} audit entr(ies) after the last valid checkpoint: cutting "
                "them off would not show in the store alone.",
            )
        )
    if chain.key_problem:
        ev.findings.append(
            Finding("warn", f"The trusted checkpoint keys cannot be read: {chain.key_problem}.")
        )
    mirror = "not configured"
    if a.mirror is not None:
        path = ev.relative(a.mirror)
        mirror = f"{a.mirror} ({'present' if path.exists() else 'not there yet'})"
    last = r.last_checkpoint_seq
    watched, features = _drift_coverage(ev)
    al = ev.alerts
    facts = Facts(
        (
            (
                "Audit ledger",
                "kept by the gateway" if a.enabled else "gateway.audit.enabled: false",
            ),
            ("Chain verification", _chain_verdict(chain)),
            ("Entries", str(r.entries)),
            ("Checkpoints", f"{r.checkpoints} valid of {chain.checkpoints_read}"),
            ("Last valid checkpoint", f"entry {last}" if last else "none"),
            ("Unsigned tail", f"{r.unsigned_tail} entr(ies) after the last valid checkpoint"),
            ("Checkpoint signers", chain.signer),
            ("Checkpoint interval", f"every {a.checkpoint_s:g} s while entries are added"),
            ("Mirror file", mirror),
            ("Entries in the period", str(ev.ledger.total)),
            ("Metrics endpoint", _metrics_endpoint(ev)),
            (
                "Alerts in the period",
                f"{al.total} raised, {al.acknowledged} acknowledged, {al.open} open; "
                f"mean time to acknowledge {_duration(al.mean_time_to_ack_s)}",
            ),
            ("Drift monitoring", watched),
            ("Drift features covered", features),
            ("Integrity check", _integrity_interval(ev)),
            (
                "Retention",
                f"alerts {g.retention.alerts_days:g} d, operator feedback "
                f"{g.retention.labels_days:g} d, drift events {g.retention.drift_days:g} d; "
                "audit entries are never deleted by retention",
            ),
        )
    )
    blocks: list[Block] = [facts]
    if not r.ok:
        blocks.insert(0, Note(f"Audit chain {_chain_verdict(chain)}", "fail"))
        if len(r.problems) > 1:
            blocks.append(
                _table(
                    "Chain problems",
                    ("Entry", "Kind", "What"),
                    ((str(p.seq), p.kind, p.message) for p in r.problems),
                )
            )
    blocks.append(
        _table(
            "Entries in the period by action",
            ("Action", "Entries"),
            ((action, str(n)) for action, n in sorted(ev.ledger.by_action.items())),
            empty="No entry in the period.",
        )
    )
    blocks.append(
        _table(
            "Integrity checks that found a changed file (integrity.*) in the period",
            ("When (UTC)", "Action", "Subject", "Models withheld", "Reason"),
            (
                (
                    _when(e),
                    e.action,
                    e.subject,
                    _yes(_withheld(e)) if e.action == "integrity.mismatch" else "-",
                    _one_line(e.reason),
                )
                for e in ev.ledger.kept["integrity"]
            ),
            empty="No integrity mismatch in the period.",
            more=ev.ledger.left_out["integrity"],
            more_hint=ev.more_hint("integrity."),
        )
    )
    return Section(family("logging"), tuple(blocks))
