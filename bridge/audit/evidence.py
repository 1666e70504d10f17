"""The facts of a compliance report: what a gateway's mapping and store hold as evidence, per
control family, and which ISO/IEC 27001:2022 Annex A controls and NIST AI RMF 1.0 subcategories
each family gives evidence for (``CONTROL_MAP``, the one place that table lives).

Evidence only: the report states what is configured and what the store recorded, it does not
grade anything. The few *findings* at its top are facts an auditor must not miss (the audit
chain does not verify, a required mapping signature does not verify, interfaces without
encryption, an unsigned tail); a ``fail`` finding makes ``bridge compliance report`` exit 1.

Read-only, and never a secret: nothing is written to the store or beside the mapping (the
gateway's checkpoint key is looked at, never made), URLs are shown through
``bridge.redact.redact_url``, passwords and header values are never read out (only whether
there is one), and API keys are listed by id (the store holds only their hashes, which are
not read either).

Rendering (Markdown, HTML) is ``bridge.audit.report_render``'s; everything here is plain text.
"""

from __future__ import annotations

import ipaddress
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from bridge.auth import Scope
from bridge.config.resolved import Mapping, ResolvedModel
from bridge.config.signing import PUBLIC_KEY_VARIABLE, check_mapping_signature, signature_path
from bridge.ed25519 import SignatureError, load_private_key, load_public_key, public_key_text
from bridge.errors import ConfigError
from bridge.redact import redact_url
from bridge.store.alerts import AlertMetrics, AlertRepository
from bridge.store.apikeys import ApiKeyRecord, ApiKeyRepository
from bridge.store.audit import AuditFilter, AuditRepository, default_writer
from bridge.store.auditchain import AuditEntry
from bridge.store.db import Store
from bridge.store.labels import FeedbackMetrics, LabelRepository
from bridge.store.registry import RegistryRepository, VersionRecord

from .ledger import trusted_keys
from .verify import Verification, verify_chain

__all__ = [
    "CONTROL_MAP",
    "MAX_ROWS",
    "Block",
    "Control",
    "Facts",
    "Family",
    "Finding",
    "Header",
    "Note",
    "Period",
    "Report",
    "Section",
    "Table",
    "family",
    "gather",
]

# -- the control map -------------------------------------------------------------------------------

ISO_27001: Final = "ISO/IEC 27001:2022"
AI_RMF: Final = "NIST AI RMF 1.0"


@dataclass(frozen=True, slots=True)
class Control:
    """A control by number and name only. ISO names are the standard's control titles; NIST AI
    RMF subcategories have no titles, so ``name`` is a short label of our own for the number."""

    framework: str
    ref: str
    name: str

    @property
    def label(self) -> str:
        if self.framework == AI_RMF:
            return f"{self.framework} {self.ref} ({self.name})"
        return f"{self.framework} {self.ref} {self.name}"


def _iso(ref: str, name: str) -> Control:
    return Control(ISO_27001, ref, name)


def _rmf(ref: str, name: str) -> Control:
    return Control(AI_RMF, ref, name)


A_5_9 = _iso("A.5.9", "Inventory of information and other associated assets")
A_5_14 = _iso("A.5.14", "Information transfer")
A_5_15 = _iso("A.5.15", "Access control")
A_5_17 = _iso("A.5.17", "Authentication information")
A_5_18 = _iso("A.5.18", "Access rights")
A_5_33 = _iso("A.5.33", "Protection of records")
A_8_2 = _iso("A.8.2", "Privileged access rights")
A_8_5 = _iso("A.8.5", "Secure authentication")
A_8_9 = _iso("A.8.9", "Configuration management")
A_8_15 = _iso("A.8.15", "Logging")
A_8_16 = _iso("A.8.16", "Monitoring activities")
A_8_24 = _iso("A.8.24", "Use of cryptography")
A_8_32 = _iso("A.8.32", "Change management")
# Subcategory numbers checked against NIST AI 100-1 (AI RMF 1.0) and its Playbook.
GOVERN_1_6 = _rmf("GOVERN 1.6", "inventory of AI systems")
GOVERN_2_1 = _rmf("GOVERN 2.1", "roles and responsibilities for AI risks")
MAP_2_1 = _rmf("MAP 2.1", "tasks and methods of the AI system defined")
MAP_4_1 = _rmf("MAP 4.1", "risks of the AI system's components mapped")
MEASURE_2_4 = _rmf("MEASURE 2.4", "AI system monitored in production")
MEASURE_3_3 = _rmf("MEASURE 3.3", "feedback from users integrated into evaluation")
MANAGE_2_4 = _rmf("MANAGE 2.4", "supersede, disengage or deactivate AI systems")
MANAGE_4_1 = _rmf("MANAGE 4.1", "post-deployment monitoring, override, incident response")


@dataclass(frozen=True, slots=True)
class Family:
    """A control family of the report: one section (``ai.*``: one part of the AI risk one)."""

    key: str
    title: str
    controls: tuple[Control, ...]


# Which controls each section of the report gives evidence for. Docs reuse it as it is.
CONTROL_MAP: Final[tuple[Family, ...]] = (
    Family("inventory", "Asset inventory", (A_5_9, A_8_9, GOVERN_1_6)),
    Family("access", "Access control", (A_5_15, A_5_17, A_5_18, A_8_2, A_8_5)),
    Family("cryptography", "Cryptography", (A_8_24, A_5_14)),
    Family("logging", "Logging and monitoring", (A_8_15, A_8_16, A_5_33, MEASURE_2_4)),
    Family("changes", "Change management", (A_8_32, A_8_9)),
    Family("ai", "AI risk (NIST AI RMF 1.0: GOVERN, MAP, MEASURE, MANAGE)", ()),
    Family("ai.govern", "GOVERN", (GOVERN_1_6, GOVERN_2_1, A_8_2)),
    Family("ai.map", "MAP", (MAP_2_1, MAP_4_1)),
    Family("ai.measure", "MEASURE", (MEASURE_2_4, MEASURE_3_3)),
    Family("ai.manage", "MANAGE", (MANAGE_2_4, MANAGE_4_1)),
)


def family(key: str) -> Family:
    for f in CONTROL_MAP:
        if f.key == key:
            return f
    raise KeyError(key)


# -- the report's structure ------------------------------------------------------------------------

Level = Literal["fail", "warn", "info"]

# Longest table: an asset list of 20,000 or a year of model changes would bury the rest; what is
# left out is counted and the command to list it named.
MAX_ROWS: Final = 500


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    level: Level = "info"


@dataclass(frozen=True, slots=True)
class Facts:
    """Label and value pairs."""

    rows: tuple[tuple[str, str], ...]
    caption: str = ""


@dataclass(frozen=True, slots=True)
class Table:
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str = "None."
    more: int = 0  # rows left out beyond MAX_ROWS
    more_hint: str = ""  # where to see them


Block = Note | Facts | Table


@dataclass(frozen=True, slots=True)
class Section:
    family: Family
    blocks: tuple[Block, ...]
    subsections: tuple[Section, ...] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    level: Literal["fail", "warn"]
    text: str


@dataclass(frozen=True, slots=True)
class Header:
    gateway_id: str
    mapping_file: str
    mapping_revision: str
    since: str
    until: str
    days: float
    generated_at: str
    bridge_version: str
    store: str  # redacted


@dataclass(frozen=True, slots=True)
class Period:
    """Epoch seconds, both inclusive (as the stores' filters)."""

    since: float
    until: float

    def __post_init__(self) -> None:
        if self.since > self.until:
            raise ValueError(
                f"the period starts ({utc(self.since)}) after it ends ({utc(self.until)})"
            )


@dataclass(frozen=True, slots=True)
class Report:
    header: Header
    findings: tuple[Finding, ...]
    sections: tuple[Section, ...]
    chain: Verification

    @property
    def failed(self) -> bool:
        return any(f.level == "fail" for f in self.findings)


# -- formatting ------------------------------------------------------------------------------------


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(entry: AuditEntry) -> str:
    return entry.at[:19] + "Z"  # to the second: the exact time is in `bridge audit show --json`


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f} %"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _listed(items: Sequence[str], at_most: int = 10) -> str:
    if not items:
        return "-"
    shown = ", ".join(items[:at_most])
    return shown if len(items) <= at_most else f"{shown} and {len(items) - at_most} more"


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _table(
    caption: str,
    columns: tuple[str, ...],
    rows: Iterable[tuple[str, ...]],
    empty: str = "None.",
    more: int = 0,
    more_hint: str = "",
) -> Table:
    listed = list(rows)
    return Table(
        caption,
        columns,
        tuple(listed[:MAX_ROWS]),
        empty,
        more + max(0, len(listed) - MAX_ROWS),
        more_hint,
    )


def _shown_url(url: str) -> str:
    """A store URL as the report shows it: without its password."""
    return redact_url(url)


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


# -- what is read once -----------------------------------------------------------------------------

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


# -- interfaces and their protection ---------------------------------------------------------------

Verdict = Literal["protected", "weak", "none", "local", "unassessed"]


@dataclass(frozen=True, slots=True)
class _Link:
    name: str  # sources.plant, outputs.mes, gateway.api
    direction: Literal["in", "out"]
    endpoint: str  # redacted
    protection: str
    detail: str
    verdict: Verdict
    exposed: bool  # reachable over a network (not loopback, not a local file or serial line)


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _endpoint(kind: str, settings: Any) -> str:
    """Where a source or output connects, without credentials. Read by attribute: the core
    knows no connector's settings class (the import contracts keep it so)."""
    for attr in ("endpoint", "url"):
        value = getattr(settings, attr, None)
        if isinstance(value, str) and value:
            return redact_url(value)
    host = getattr(settings, "host", None)
    if isinstance(host, str) and host:
        port = getattr(settings, "port", None)
        transport = getattr(settings, "transport", None)
        where = f"{host}:{port}" if port is not None else host
        return f"{where} ({transport})" if isinstance(transport, str) else where
    serial = getattr(settings, "serial", None)
    if serial is not None:
        return f"serial line {getattr(serial, 'port', '?')}"
    return "-"


def _client_tls(tls: Any, default_ca: str) -> str:
    """CA and client certificate of an outgoing TLS connection (bridge.client_tls)."""
    if tls is None:
        return f"server verified against {default_ca}"
    ca = getattr(tls, "ca_file", None)
    parts = [f"server verified against {ca}" if ca else f"server verified against {default_ca}"]
    if getattr(tls, "client_certificate", None):
        parts.append(f"mutual TLS (client certificate {tls.client_certificate})")
    return "; ".join(parts)


def _http_link(name: str, url: str, tls: Any) -> _Link:
    endpoint = redact_url(url)
    exposed = not _is_loopback(_host_of(url))
    if url.lower().startswith("https://"):
        detail = _client_tls(tls, "the public CAs")
        return _Link(name, "out", endpoint, "TLS (https)", detail, "protected", exposed)
    return _Link(name, "out", endpoint, "none: plain HTTP", "http:// URL", "none", exposed)


def _opcua_source(name: str, s: Any) -> _Link:
    sec = getattr(s, "security", None)
    policy = str(getattr(sec, "policy", "None"))
    mode = str(getattr(sec, "mode", "None"))
    endpoint = redact_url(str(getattr(s, "endpoint", "")))
    exposed = not _is_loopback(_host_of(str(getattr(s, "endpoint", ""))))
    if policy == "None":
        return _Link(name, "out", endpoint, "none: security policy None", "", "none", exposed)
    pinned = getattr(sec, "server_certificate", None)
    trust = (
        f"server certificate pinned ({pinned})"
        if pinned
        else f"server certificates from the trust list {getattr(sec, 'pki_dir', '?')}"
    )
    if getattr(sec, "trust_on_first_use", False):
        trust += "; trust on first use is ON (the first server to answer is trusted)"
    verdict: Verdict = "protected" if mode == "SignAndEncrypt" else "weak"
    return _Link(name, "out", endpoint, f"OPC UA {policy} / {mode}", trust, verdict, exposed)


def _opcua_server(name: str, s: Any) -> _Link:
    policies = [str(p) for p in getattr(s, "security_policies", [])]
    endpoint = redact_url(str(getattr(s, "endpoint", "")))
    exposed = not _is_loopback(_host_of(str(getattr(s, "endpoint", ""))))
    detail = f"anonymous login {'allowed' if getattr(s, 'allow_anonymous', False) else 'refused'}"
    verdict: Verdict
    if "None" in policies:
        verdict = "none" if policies == ["None"] else "weak"
        detail += "; security policy None is offered"
    elif all(p.endswith("SignAndEncrypt") for p in policies):
        verdict = "protected"
    else:
        verdict = "weak"
        detail += "; Sign-only policies are offered (signed, not encrypted)"
    protection = "OPC UA " + ", ".join(policies)
    return _Link(name, "in", endpoint, protection, detail, verdict, exposed)


def _mqtt(name: str, direction: Literal["in", "out"], s: Any) -> _Link:
    endpoint = _endpoint("mqtt", s)
    exposed = not _is_loopback(str(getattr(s, "host", "")))
    if getattr(s, "plaintext", False):
        return _Link(name, direction, endpoint, "none: plaintext MQTT", "", "none", exposed)
    tls = getattr(s, "tls", None)
    if getattr(tls, "insecure_skip_verify", False):
        detail = "broker certificate NOT verified (tls.insecure_skip_verify)"
        return _Link(name, direction, endpoint, "TLS", detail, "weak", exposed)
    return _Link(
        name, direction, endpoint, "TLS", _client_tls(tls, "the public CAs"), "protected", exposed
    )


def _endpoint_link(section: str, name: str, kind: str, s: Any) -> _Link:
    where = f"{section}.{name}"
    direction: Literal["in", "out"] = "out"
    if hasattr(s, "security_policies"):
        return _opcua_server(where, s)
    if kind == "opcua" or hasattr(s, "security"):
        return _opcua_source(where, s)
    if hasattr(s, "plaintext"):
        return _mqtt(where, direction, s)
    url = getattr(s, "url", None)
    if isinstance(url, str):
        return _http_link(where, url, getattr(s, "tls", None))
    if kind == "modbus" or hasattr(s, "transport"):
        serial = getattr(s, "transport", "") == "rtu"
        host = str(getattr(s, "host", "") or "")
        return _Link(
            where,
            direction,
            _endpoint(kind, s),
            "none: Modbus has no security layer",
            "isolate it on the cell's network" if not serial else "serial line",
            "none",
            not serial and not _is_loopback(host),
        )
    return _Link(
        where,
        direction,
        _endpoint(kind, s),
        f"not assessed (kind {kind})",
        "",
        "unassessed",
        False,
    )


def _store_link(url: str) -> _Link:
    shown = _shown_url(url)
    backend = url.split(":", 1)[0].split("+", 1)[0]
    if backend == "sqlite":
        return _Link("gateway.store", "out", shown, "local file", "SQLite", "local", False)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    sslmode = (query.get("sslmode") or [""])[0]
    host = parts.hostname or ""
    exposed = bool(host) and not _is_loopback(host)
    if sslmode in ("verify-ca", "verify-full"):
        return _Link(
            "gateway.store", "out", shown, "TLS", f"sslmode={sslmode}", "protected", exposed
        )
    if sslmode == "require":
        detail = "sslmode=require: encrypted, server certificate not verified"
        return _Link("gateway.store", "out", shown, "TLS", detail, "weak", exposed)
    detail = f"sslmode={sslmode}" if sslmode else "no sslmode in the URL: TLS is not required"
    return _Link("gateway.store", "out", shown, "not required", detail, "none", exposed)


def _links(ev: _Evidence) -> list[_Link]:
    g = ev.mapping.gateway
    links: list[_Link] = []
    api = g.api
    if api.enabled:
        scheme = "https" if api.tls is not None else "http"
        endpoint = f"{scheme}://{api.host}:{api.port}"
        exposed = not _is_loopback(api.host)
        if api.tls is not None:
            protection = "TLS"
            detail = f"certificate {api.tls.certificate}"
            if api.tls.client_ca:
                protection = "mutual TLS"
                detail += f"; client certificates signed by {api.tls.client_ca} only"
            links.append(
                _Link("gateway.api", "in", endpoint, protection, detail, "protected", exposed)
            )
        else:
            detail = (
                "insecure_http: true (a TLS proxy or an isolated network must protect it)"
                if exposed
                else "bound to loopback only"
            )
            links.append(
                _Link("gateway.api", "in", endpoint, "none: plain HTTP", detail, "none", exposed)
            )
    address = g.metrics.address
    if address is not None:
        host, port = address
        links.append(
            _Link(
                "gateway.metrics",
                "in",
                f"http://{g.metrics.listen}/metrics",
                "none: plain HTTP",
                f"scrape listener of its own on port {port}",
                "none",
                not _is_loopback(host),
            )
        )
    for name, src in ev.mapping.sources.items():
        links.append(_endpoint_link("sources", name, src.kind, src.settings))
    for name, out in ev.mapping.outputs.items():
        links.append(_endpoint_link("outputs", name, out.kind, out.settings))
    for name, model in ev.mapping.models.items():
        if model.drift is not None and model.drift.webhook:
            where = f"models.{name}.drift.webhook"
            links.append(_http_link(where, model.drift.webhook, model.drift.webhook_tls))
    links.append(_store_link(ev.store_url))
    return links


# -- 1. asset inventory ----------------------------------------------------------------------------


def _model_signed(record: VersionRecord) -> str:
    return "signed" if record.signature else "unsigned"


def _inventory(ev: _Evidence) -> Section:
    m = ev.mapping
    tags_per_source = Counter(t.source for t in m.tags.values())
    models_per_asset: dict[str, list[str]] = {}
    for model in m.models.values():
        for asset in model.assets:
            models_per_asset.setdefault(asset, []).append(model.name)
    registered = {r.name for r in ev.versions}
    facts = Facts(
        (
            ("Sources", str(len(m.sources))),
            ("Assets", str(len(m.assets))),
            ("Tags", str(len(m.tags))),
            ("Models in the mapping", str(len(m.models))),
            (
                "Model versions in the registry",
                f"{len(ev.versions)} (of {len(registered)} model(s))",
            ),
            ("Outputs", str(len(m.outputs))),
            ("Mapping revision", f"{m.revision} (sha256 of {m.path.name})"),
        )
    )
    sources = _table(
        "Sources",
        ("Source", "Kind", "Endpoint", "Tags"),
        (
            (name, src.kind, _endpoint(src.kind, src.settings), str(tags_per_source[name]))
            for name, src in sorted(m.sources.items())
        ),
    )
    assets = _table(
        "Assets",
        ("Asset", "Tags", "Models"),
        (
            (name, str(len(tags)), ", ".join(models_per_asset.get(name, [])) or "-")
            for name, tags in sorted(m.assets.items())
        ),
    )
    models = _table(
        "Models in the mapping",
        ("Model", "Version", "File", "Pinned sha256", "Assets"),
        (
            (
                name,
                model.version,
                _shown_path(model.path, ev.base),
                model.sha256 or "not pinned",
                str(len(model.assets)),
            )
            for name, model in sorted(m.models.items())
        ),
    )
    registry = _table(
        "Model versions in the registry",
        ("Model", "Version", "State", "sha256", "Signature", "Registered by", "Registered at"),
        (
            (
                r.name,
                r.version,
                r.state,
                r.sha256,
                _model_signed(r),
                r.registered_by,
                utc(r.registered_at),
            )
            for r in ev.versions
        ),
        empty="No version registered.",
    )
    outputs = _table(
        "Outputs",
        ("Output", "Kind", "Endpoint"),
        (
            (name, out.kind, _endpoint(out.kind, out.settings))
            for name, out in sorted(m.outputs.items())
        ),
    )
    blocks: list[Block] = [facts, sources, assets, models, registry, outputs]
    if m.needs:
        waiting = "; ".join(f"{var} ({', '.join(keys)})" for var, keys in sorted(m.needs.items()))
        blocks.append(
            Note(
                "Made without these environment variables (their values are not known to the "
                f"report; the keys that use them are shown as written): {waiting}."
            )
        )
    return Section(family("inventory"), tuple(blocks))


def _shown_path(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base.resolve()))
    except ValueError:
        return str(path)


# -- 2. access control -----------------------------------------------------------------------------


def _age_days(ev: _Evidence, since: float) -> str:
    return f"{max(0.0, ev.now - since) / 86400:.0f}"


def _identity(s: Any) -> str:
    """How the gateway logs in to a source or output: the kind of credential, never its value."""
    if getattr(s, "user_certificate", None):
        return f"X.509 user certificate {s.user_certificate}"
    username = getattr(s, "username", None)
    secret = ""
    if getattr(s, "password_file", None):
        secret = f" (password from the file {s.password_file})"
    elif getattr(s, "password", None) is not None:
        secret = " (password set, not shown)"
    if username:
        return f"user name {username}{secret}"
    parts: list[str] = []
    headers = getattr(s, "headers", None)
    if isinstance(headers, dict) and headers:
        parts.append(f"HTTP headers {', '.join(sorted(headers))} (values not shown)")
    tls = getattr(s, "tls", None)
    if tls is not None and getattr(tls, "client_certificate", None):
        parts.append(f"TLS client certificate {tls.client_certificate}")
    if parts:
        return "; ".join(parts)
    if hasattr(s, "security_policies"):
        return "-"  # the gateway's own server: its logins are listed apart
    return "anonymous" if hasattr(s, "username") or hasattr(s, "security") else "none"


def _server_logins(ev: _Evidence) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, out in sorted(ev.mapping.outputs.items()):
        s = out.settings
        if not hasattr(s, "security_policies"):
            continue
        if getattr(s, "allow_anonymous", False):
            rows.append((name, "(anonymous)", "anonymous", "read-only"))
        for user in getattr(s, "users", []):
            how = "scrypt password hash" if user.password_hash else "password (not shown)"
            rows.append((name, str(user.username), how, str(user.role)))
        for cert in getattr(s, "user_certificates", []):
            label = cert.name or "(certificate's common name)"
            rows.append((name, str(label), f"X.509 certificate {cert.certificate}", str(cert.role)))
    return rows


def _access(ev: _Evidence) -> Section:
    g = ev.mapping.gateway
    api = g.api
    active = [k for k in ev.keys if k.active]
    by_scope = Counter(k.scope.label for k in active)
    scopes = ", ".join(f"{by_scope[s.label]} {s.label}" for s in reversed(Scope))
    facts: list[tuple[str, str]] = []
    if api.enabled:
        scheme = "https" if api.tls is not None else "http"
        facts.append(("REST API", f"enabled at {scheme}://{api.host}:{api.port}"))
        open_paths = "/api/v1/health (status only), /livez, /readyz, /docs, /openapi.json"
        if g.metrics.listen is None:
            open_paths += ", /metrics"
        facts.append(
            (
                "API keys required",
                "yes: every other /api/v1 operation needs a key of the scope it names "
                f"(Authorization: Bearer or X-API-Key); open without a key: {open_paths}",
            )
        )
    else:
        facts.append(("REST API", "disabled (gateway.api.enabled: false): no key is accepted"))
    facts += [
        (
            "Scopes",
            "read; operate: also acknowledge alerts, operator feedback, outbox retries; "
            "admin: also API keys, models, mapping reload, the audit ledger",
        ),
        ("API keys", f"{len(active)} active ({scopes}), {len(ev.keys) - len(active)} revoked"),
        (
            "Key storage",
            "only the sha256 of each key is stored; a key is shown once, when it is created",
        ),
        (
            "Rate limits per key",
            f"{api.rate_limit_per_s:g} requests/s, bursts of {api.rate_burst}, "
            f"{api.max_concurrent_per_key} at once",
        ),
    ]
    console = api.console
    if api.enabled and console.enabled:
        secure = "Secure" if api.tls is not None else "not Secure (plain HTTP)"
        facts.append(
            (
                "Console login",
                f"/console: log in with an API key; the browser holds a session cookie only "
                f"(HttpOnly, SameSite=Strict, {secure}); a session lasts at most "
                f"{console.session_hours:g} h and ends after {console.idle_minutes:g} min "
                "unused; failed logins are throttled",
            )
        )
    else:
        facts.append(("Console login", "console disabled"))
    keys = _table(
        "API keys (never the keys or their hashes)",
        ("Key id", "Name", "Scope", "Created", "Age (days)", "Status"),
        (
            (
                k.key_id,
                k.name,
                k.scope.label,
                utc(k.created_at),
                _age_days(ev, k.created_at),
                "active" if k.revoked_at is None else f"revoked {utc(k.revoked_at)}",
            )
            for k in ev.keys
        ),
        empty="No API key.",
    )
    blocks: list[Block] = [Facts(tuple(facts)), keys]
    servers = [o for o in ev.mapping.outputs.values() if hasattr(o.settings, "security_policies")]
    if servers:
        blocks.append(
            _table(
                "OPC UA server logins (HMIs)",
                ("Output", "Login", "Credential", "Role"),
                _server_logins(ev),
                empty="No login configured: no client can open a session.",
            )
        )
        lockouts = tuple(
            (
                f"outputs.{o.name}.login_lockout",
                f"after {o.settings.login_lockout.after_failures} failures in a row: "
                f"{o.settings.login_lockout.first_lockout_s:g} s, doubling up to "
                f"{o.settings.login_lockout.max_lockout_s:g} s",
            )
            for o in servers
            if getattr(o.settings, "login_lockout", None) is not None
        )
        if lockouts:
            blocks.append(Facts(lockouts, "Failed logins"))
    identities = [
        (f"sources.{n}", s.kind, _identity(s.settings))
        for n, s in sorted(ev.mapping.sources.items())
    ] + [
        (f"outputs.{n}", o.kind, _identity(o.settings))
        for n, o in sorted(ev.mapping.outputs.items())
        if not hasattr(o.settings, "security_policies")
    ]
    blocks.append(
        _table(
            "Credentials the gateway presents to the plant and the MES",
            ("Connection", "Kind", "Identity"),
            identities,
        )
    )
    entries = ev.ledger.kept["apikey"]
    blocks.append(
        _table(
            "API key changes in the period",
            ("When (UTC)", "Action", "Key", "Actor", "Channel", "Reason"),
            (
                (_when(e), e.action, e.subject, e.actor, e.channel, _one_line(e.reason))
                for e in entries
            ),
            empty="No API key created or revoked in the period.",
            more=ev.ledger.left_out["apikey"],
            more_hint=ev.more_hint("apikey."),
        )
    )
    return Section(family("access"), tuple(blocks))


# -- 3. cryptography -------------------------------------------------------------------------------


def _checkpoint_key(ev: _Evidence) -> str:
    path = ev.relative(ev.mapping.gateway.audit.signing_key)
    shown = _shown_path(path, ev.base)
    if not path.exists():
        half = path.with_name(path.name + ".pub")
        if half.exists():
            try:
                text = public_key_text(load_public_key(half))
            except SignatureError as exc:
                return f"absent here ({shown}); its public half is unreadable: {exc}"
            return f"absent here ({shown}); its public half is: public key {text}"
        return (
            f"absent ({shown}): a gateway makes it at its first start; until then it signs "
            "no checkpoint"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    try:
        public = public_key_text(load_private_key(path).public_key())
    except SignatureError as exc:
        return f"present ({shown}) but unreadable: {exc}"
    private = "readable by its owner only" if mode & 0o077 == 0 else f"mode {mode:o}: NOT private"
    return f"present ({shown}, {private}); public key {public}"


def _model_signatures(ev: _Evidence) -> str:
    g = ev.mapping.gateway
    key = g.models.public_key
    if key is not None:
        return (
            f"required: every version must be signed with the key of gateway.models.public_key "
            f"({key}); an unsigned or wrongly signed version is refused"
        )
    if g.durability.profile == "production":
        return (
            "required by the production profile, but gateway.models.public_key is not set: "
            "every version is refused"
        )
    return "not required (gateway.models.public_key is not set)"


def _mapping_signature(ev: _Evidence) -> str:
    m = ev.mapping
    sig = signature_path(m.path)
    key = ev.env.get(PUBLIC_KEY_VARIABLE, "")
    if not key:
        there = "present" if sig.exists() else "absent"
        ev.findings.append(
            Finding(
                "warn",
                f"Mapping signatures are not required where this report was made "
                f"({PUBLIC_KEY_VARIABLE} is not set); a gateway enforces them only with it.",
            )
        )
        return (
            f"not required at report time ({PUBLIC_KEY_VARIABLE} is not set); {sig.name} "
            f"{there}, not verified"
        )
    try:
        check_mapping_signature(m.path, m.revision, ev.env)
    except ConfigError as err:
        why = "; ".join(i.message for i in err.issues)
        ev.findings.append(Finding("fail", f"The mapping's signature does not verify ({why})."))
        return f"required ({PUBLIC_KEY_VARIABLE}={key}); does NOT verify: {why}"
    return (
        f"required ({PUBLIC_KEY_VARIABLE}={key}); {sig.name} verifies for revision "
        f"{m.revision[:12]}"
    )


def _cryptography(ev: _Evidence) -> Section:
    signed = sum(1 for r in ev.versions if r.signature)
    trusted = ev.mapping.gateway.audit.trusted_keys
    facts = Facts(
        (
            ("Model signatures (Ed25519)", _model_signatures(ev)),
            ("Signed versions in the registry", f"{signed} of {len(ev.versions)}"),
            ("Mapping signature (Ed25519)", _mapping_signature(ev)),
            ("Audit checkpoint key (Ed25519)", _checkpoint_key(ev)),
            (
                "Other gateways' checkpoint keys trusted",
                _listed(trusted) if trusted else "none (gateway.audit.trusted_keys)",
            ),
            ("Audit chain", "sha256 over each entry's canonical encoding, linked by prev_hash"),
        )
    )
    links = _table(
        "Interfaces",
        ("Interface", "Direction", "Endpoint", "Protection", "Details"),
        (
            (link.name, link.direction, link.endpoint, link.protection, link.detail or "-")
            for link in ev.links
        ),
    )
    if ev.mapping.gateway.models.public_key is None:
        ev.findings.append(Finding("warn", f"Model signatures: {_model_signatures(ev)}."))
    exposed = [x for x in ev.links if x.exposed and x.verdict in ("none", "weak")]
    blocks: list[Block] = [links, facts]
    if exposed:
        names = ", ".join(f"{x.name} ({x.protection})" for x in exposed)
        text = f"Network interfaces without (full) encryption: {names}."
        blocks.insert(1, Note(text, "warn"))
        ev.findings.append(Finding("warn", text))
    return Section(family("cryptography"), tuple(blocks))


# -- 4. logging and monitoring ---------------------------------------------------------------------


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


# -- 5. change management --------------------------------------------------------------------------


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


# -- 6. AI risk ------------------------------------------------------------------------------------


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
