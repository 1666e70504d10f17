"""What is read once from the mapping and the store, and the report made of it (gather)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bridge.audit.ledger import trusted_keys
from bridge.audit.verify import Verification, verify_chain
from bridge.config.resolved import Mapping
from bridge.ed25519 import SignatureError
from bridge.store.alerts import AlertMetrics, AlertRepository
from bridge.store.apikeys import ApiKeyRecord, ApiKeyRepository
from bridge.store.audit import AuditFilter, AuditRepository, default_writer
from bridge.store.auditchain import AuditEntry
from bridge.store.db import Store
from bridge.store.labels import FeedbackMetrics, LabelRepository
from bridge.store.registry import RegistryRepository, VersionRecord

from .access import _access
from .airisk import _ai_risk
from .changes import _changes
from .cryptography import _cryptography
from .formatting import _shown_url, utc
from .interfaces import _Link, _links
from .inventory import _inventory
from .model import MAX_ROWS, Finding, Header, Period, Report
from .monitoring import _logging

# Ledger entries the report lists (beyond counting them): by group, each kept up to MAX_ROWS.
_INTERVENTIONS = frozenset(
    {
        "model.rolled_back",
        "model.refused",
        "model.restored",
        "mapping.refused",
        "integrity.mismatch",
        "integrity.restored",
    }
)
_GROUPS: Final[dict[str, Callable[[str], bool]]] = {
    "mapping": lambda a: a.startswith("mapping."),
    "model": lambda a: a.startswith("model."),
    "apikey": lambda a: a.startswith("apikey."),
    "integrity": lambda a: a.startswith("integrity."),
    "manage": lambda a: a in _INTERVENTIONS,
}
_PAGE = 2000


@dataclass
class _PeriodLedger:
    total: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    kept: dict[str, list[AuditEntry]] = field(default_factory=lambda: {g: [] for g in _GROUPS})
    left_out: Counter[str] = field(default_factory=Counter)

    def add(self, entry: AuditEntry) -> None:
        self.total += 1
        self.by_action[entry.action] += 1
        for group, belongs in _GROUPS.items():
            if belongs(entry.action):
                if len(self.kept[group]) < MAX_ROWS:
                    self.kept[group].append(entry)
                else:
                    self.left_out[group] += 1

    def prefixed(self, prefix: str) -> int:
        return sum(n for action, n in self.by_action.items() if action.startswith(prefix))


def _read_period(repo: AuditRepository, period: Period) -> _PeriodLedger:
    """One pass over the period's entries, a page at a time (a busy year never sits in memory
    whole): every one counted, those the report lists kept."""
    out = _PeriodLedger()
    where = AuditFilter(since=period.since, until=period.until)
    after: int | None = None
    while True:
        rows = repo.page(where, _PAGE, after)
        for entry in rows:
            out.add(entry)
        if len(rows) < _PAGE:
            return out
        after = rows[-1].seq


@dataclass(frozen=True, slots=True)
class _Chain:
    result: Verification
    checkpoints_read: int
    signer: str  # how the signers were pinned, in words
    key_problem: str  # why the trusted keys could not be read ("" when they could)


def _verify(repo: AuditRepository, mapping: Mapping) -> _Chain:
    """As ``bridge audit verify --mapping``: the whole chain (its integrity is not a matter of
    the period), checkpoints counted only when signed by the mapping's trusted keys."""
    problem = ""
    keys: list[str] | None
    try:
        # An auditor's copy of the gateway's files may hold the public half of its key only
        # (the private one never leaves the gateway): it pins the signer just as well.
        keys = trusted_keys(mapping.gateway.audit, mapping.path.parent)
    except SignatureError as exc:
        keys, problem = None, str(exc)
    # The checkpoints first: one signed while the entries are read would vouch for an entry
    # past the last one read, which would look like a chain cut short.
    checkpoints = repo.checkpoints()
    result = verify_chain(repo.iter_entries(), checkpoints, keys)
    if keys is None:
        signer = (
            f"NOT pinned: any valid signature counts (the trusted keys are unreadable: {problem})"
        )
    elif keys:
        signer = f"pinned: only checkpoints signed by the {len(keys)} trusted key(s) count"
    else:
        signer = "pinned to no key: this gateway has no checkpoint key and none is trusted"
    return _Chain(result, len(checkpoints), signer, problem)


@dataclass(frozen=True, slots=True)
class _Comparison:
    record: VersionRecord
    compared: int
    agreed: int
    assets: int


@dataclass
class _Evidence:
    mapping: Mapping
    store_url: str
    period: Period
    now: float
    env: MappingABC[str, str]
    versions: list[VersionRecord]
    keys: list[ApiKeyRecord]
    ledger: _PeriodLedger
    chain: _Chain
    alerts: AlertMetrics
    feedback: FeedbackMetrics
    comparisons: list[_Comparison]
    links: list[_Link] = field(default_factory=list)
    # Appended by the sections as they meet what an auditor must not miss; shown first.
    findings: list[Finding] = field(default_factory=list)

    @property
    def base(self) -> Path:
        return self.mapping.path.parent

    def relative(self, configured: str) -> Path:
        path = Path(configured)
        return path if path.is_absolute() else self.base / path

    def more_hint(self, action: str | None = None) -> str:
        """The command that lists what a table left out."""
        only = f" --action {action}" if action else ""
        return (
            f"bridge audit show --mapping {self.mapping.path.name}{only} "
            f"--since {utc(self.period.since)} --until {utc(self.period.until)} --limit 100000"
        )


def _comparisons(
    registry: RegistryRepository, versions: Sequence[VersionRecord]
) -> list[_Comparison]:
    out: list[_Comparison] = []
    for record in versions:
        if record.state == "active":
            continue  # compared against, never a candidate while active
        per_asset = registry.agreement(record.name, record.version)
        compared = sum(a.compared for a in per_asset)
        if compared:
            agreed = sum(a.agreed for a in per_asset)
            out.append(_Comparison(record, compared, agreed, len(per_asset)))
    return out


def gather(
    mapping: Mapping,
    store: Store,
    store_url: str,
    period: Period,
    *,
    bridge_version: str,
    env: MappingABC[str, str],
    now: float,
) -> Report:
    """Read everything the report states from ``mapping`` and ``store`` (``store_url``: the URL
    it was opened with, shown redacted); ``env``: the environment the report is made in (the
    mapping signature's public key is named there, as for a gateway)."""
    registry = RegistryRepository(store)
    audit = AuditRepository(store, default_writer())
    versions = registry.list()
    ev = _Evidence(
        mapping=mapping,
        store_url=store_url,
        period=period,
        now=now,
        env=env,
        versions=versions,
        keys=ApiKeyRepository(store).list(include_revoked=True),
        ledger=_read_period(audit, period),
        chain=_verify(audit, mapping),
        alerts=AlertRepository(store).metrics(period.since, period.until),
        feedback=LabelRepository(store).metrics(period.since, period.until),
        comparisons=_comparisons(registry, versions),
    )
    ev.links = _links(ev)
    sections = (
        _inventory(ev),
        _access(ev),
        _cryptography(ev),
        _logging(ev),
        _changes(ev),
        _ai_risk(ev),
    )
    header = Header(
        gateway_id=mapping.gateway.id,
        mapping_file=str(mapping.path),
        mapping_revision=mapping.revision,
        since=utc(period.since),
        until=utc(period.until),
        days=(period.until - period.since) / 86400,
        generated_at=utc(now),
        bridge_version=bridge_version,
        store=_shown_url(store_url),
    )
    order = {"fail": 0, "warn": 1}
    findings = tuple(sorted(ev.findings, key=lambda f: order[f.level]))
    return Report(header, findings, sections, ev.chain.result)
