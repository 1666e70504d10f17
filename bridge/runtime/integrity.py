"""Runtime integrity: the files the gateway runs on are hashed again at start, every
``gateway.audit.integrity_s`` and after each reload, and compared with what was approved.

- the **mapping file** with the running revision (the sha256 the gateway loaded);
- each serving **model file** (active and candidate) with the sha256 the registry approved and
  the runner serves (the registry's row is read again too: a row rewritten in the database to
  match a new file shows as a version whose sha256 is not the one served);
- each mapping **reference statistics** file with its hash when the gateway loaded it.

A mismatch is logged, raises an alert (label ``artifact_changed``) and writes an audit entry
(``integrity.mismatch``), once per artifact and content: not every period. In the ``production``
profile the models that depend on the artifact are withheld (every prediction Bad, with the
reason) until the file is back to what was approved, or an approved version (or a reloaded
mapping) takes its place. A mapping file edited but not reloaded is reported, never withheld:
the running mapping is the approved one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bridge.audit.ledger import AuditLedger
from bridge.cancel import cancel_and_wait
from bridge.errors import StoreError
from bridge.prepare import Prepared
from bridge.runtime.runner import ModelRunner
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.store.auditchain import NewAuditEntry
from bridge.store.registry import RegistryRepository
from bridge.types import ComponentHealth, HealthState

__all__ = ["ARTIFACT_LABEL", "Artifact", "IntegrityWatch", "Mismatch"]

log = structlog.get_logger(__name__)

ARTIFACT_LABEL = "artifact_changed"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Artifact:
    kind: str  # mapping | model | reference
    subject: str  # mapping:<file> | model:<name>/<version> | reference:<model>
    path: Path
    expected: str  # sha256 of what was approved
    models: tuple[str, ...] = ()  # the models withheld when it does not match (production)


@dataclass(frozen=True, slots=True)
class Mismatch:
    artifact: Artifact
    found: str  # sha256 now, or "missing" / "unreadable: ..."

    @property
    def reason(self) -> str:
        a = self.artifact
        return (
            f"{a.kind} file {a.path} is not the one approved (sha256 {a.expected[:12]}, "
            f"now {self.found[:24]})"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_or_problem(path: Path) -> str:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


@dataclass
class IntegrityWatch:
    prepared: Prepared
    runners: Sequence[ModelRunner]
    registry: RegistryRepository
    alerts: AlertRepository
    audit: AuditLedger | None
    interval_s: float
    production: bool
    gateway_id: str
    checks: int = 0
    mismatches: int = 0
    last_error: str = ""
    # What is wrong now, by subject and the content found (one alert per content).
    _open: dict[str, str] = field(default_factory=dict)
    _references: dict[str, tuple[Path, str]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _reload_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    clock: Callable[[], float] = time.time

    async def start(self) -> None:
        await self._baseline_references()
        await self.check()
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="integrity")

    async def close(self) -> None:
        for task in (self._task, self._reload_task):
            if task is not None:
                await cancel_and_wait(task)
        self._task = self._reload_task = None

    def after_reload(self, prepared: Prepared) -> None:
        """A reload applied: the new mapping's files are the approved ones from now on."""
        self.prepared = prepared

        async def again() -> None:
            await self._baseline_references()
            await self.check()

        self._reload_task = asyncio.create_task(again(), name="integrity:reload")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()

    async def _baseline_references(self) -> None:
        refs: dict[str, tuple[Path, str]] = {}
        for name, model in self.prepared.mapping.models.items():
            if model.reference is not None:
                found = await asyncio.to_thread(_hash_or_problem, model.reference)
                refs[name] = (model.reference, found)
        self._references = refs

    def artifacts(self) -> list[Artifact]:
        """What is checked, from the running mapping and what the runners serve; the
        registry's paths are read in ``check`` (a thread)."""
        mapping = self.prepared.mapping
        out = [Artifact("mapping", f"mapping:{mapping.path.name}", mapping.path, mapping.revision)]
        for name, (path, sha) in self._references.items():
            out.append(Artifact("reference", f"reference:{name}", path, sha, (name,)))
        return out

    async def check(self) -> list[Mismatch]:
        async with self._lock:
            try:
                found = await asyncio.to_thread(self._check_files)
            except StoreError as exc:
                self.last_error = f"cannot read the registry: {exc}"
                log.warning("integrity_check_skipped", error=str(exc))
                return []
            self.checks += 1
            self.last_error = ""
            await self._report(found)
            self._withhold(found)
            return found

    def _served(self) -> list[Artifact]:
        out: list[Artifact] = []
        for runner in self.runners:
            d = runner.deployment
            for served in (d.active, d.candidate):
                if served is None:
                    continue
                subject = f"model:{runner.model.name}/{served.version}"
                record = self.registry.get(runner.model.name, served.version)
                if record is None:
                    path = runner.model.path
                elif record.sha256 != served.sha256:
                    # The registry row was rewritten: report it against the served hash.
                    path = Path(record.path)
                    name = (runner.model.name,)
                    out.append(Artifact("registry", subject, path, served.sha256, name))
                    continue
                else:
                    path = Path(record.path)
                out.append(Artifact("model", subject, path, served.sha256, (runner.model.name,)))
        return out

    def _check_files(self) -> list[Mismatch]:
        found: list[Mismatch] = []
        for artifact in [*self.artifacts(), *self._served()]:
            if artifact.kind == "registry":
                found.append(Mismatch(artifact, "registry row changed"))
                continue
            now = _hash_or_problem(artifact.path)
            if now != artifact.expected:
                found.append(Mismatch(artifact, now))
        return found

    async def _report(self, found: list[Mismatch]) -> None:
        now_open = {m.artifact.subject: m.found for m in found}
        for m in found:
            if self._open.get(m.artifact.subject) == m.found:
                continue  # reported already
            self.mismatches += 1
            a = m.artifact
            withheld = self.production and bool(a.models) and a.kind != "mapping"
            log.error(
                "integrity_mismatch",
                kind=a.kind,
                subject=a.subject,
                path=str(a.path),
                expected=a.expected,
                found=m.found,
                withheld=list(a.models) if withheld else [],
            )
            model = a.models[0] if a.models else ""
            alert = NewAlert(
                str(uuid.uuid4()), self.gateway_id, model, ARTIFACT_LABEL, "", None, self.clock()
            )
            try:
                await asyncio.to_thread(self.alerts.add_many, [alert])
            except StoreError as exc:
                log.warning("integrity_alert_not_stored", subject=a.subject, error=str(exc))
            if self.audit is not None:
                entry = NewAuditEntry(
                    "system",
                    "system",
                    "integrity.mismatch",
                    a.subject,
                    {"sha256": a.expected, "path": str(a.path)},
                    {"sha256": m.found, "withheld": withheld},
                    m.reason,
                )
                await self.audit.record(entry)
        for subject in set(self._open) - set(now_open):
            log.info("integrity_restored", subject=subject)
            if self.audit is not None:
                entry = NewAuditEntry("system", "system", "integrity.restored", subject)
                await self.audit.record(entry)
        self._open = now_open

    def _withhold(self, found: list[Mismatch]) -> None:
        reasons: dict[str, str] = {}
        if self.production:
            for m in found:
                if m.artifact.kind == "mapping":
                    continue
                for model in m.artifact.models:
                    reasons.setdefault(model, f"withheld: {m.reason}")
        for runner in self.runners:
            reason = reasons.get(runner.model.name, "")
            if reason != runner.withheld:
                event = "model_withheld" if reason else "model_released"
                log.warning(event, model=runner.model.name, reason=reason)
            runner.withheld = reason

    def health(self) -> ComponentHealth:
        state: HealthState = "degraded" if self._open or self.last_error else "ok"
        detail = "; ".join(sorted(self._open)) or self.last_error
        counters = {"checks": self.checks, "mismatches": self.mismatches, "open": len(self._open)}
        return ComponentHealth("integrity", state, detail, counters)
