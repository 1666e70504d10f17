"""The registry's operations, shared by the CLI, the REST API and the runtime.

When the mapping is known (the gateway's REST API, ``bridge models ... --mapping``), a version
that does not fit the mapping's model of that name (inputs, feature count, outputs, what it
computes on a probe batch) is refused at register, activate, promote, rollback, shadow and
canary, with the reason: the registry never names a version the gateway would refuse to load.

Every change is an entry of the audit ledger, written by the repository in the change's own
transaction; a version refused at the command (signature, hash, fit) is a ``model.refused``
entry of its own. ``actor`` says who acts (``key:<id>``, ``cli:<user>``, ``mapping``, the
runtime's ``guard``); ``channel`` (rest, console, cli, ...) how, None: what the actor implies.

Synchronous (file reads, SQL): callers on an event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from bridge.config.reference import load_reference, validate_reference
from bridge.config.resolved import ResolvedModel
from bridge.errors import StoreError
from bridge.inference.fit import model_problems
from bridge.inference.model import LoadedModel
from bridge.lifecycle.canary_guard import GUARD_KEYS
from bridge.lifecycle.files import read_confined, read_model_file
from bridge.lifecycle.loading import ModelRefused, load_verified
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.states import move
from bridge.store.registry import (
    CANDIDATE_STATES,
    RegistryConflict,
    RegistryNotFound,
    RegistryRepository,
    VersionRecord,
    VersionState,
)

__all__ = ["RegistryService", "spec_of"]

log = structlog.get_logger(__name__)


def spec_of(loaded: LoadedModel) -> dict[str, Any]:
    """The input/output spec stored with a version (what the model says about itself)."""
    return {
        "inputs": [
            {"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in loaded.io.inputs
        ],
        "outputs": [
            {"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in loaded.io.outputs
        ],
        "metadata": dict(loaded.io.metadata),
        "features": [
            f.strip() for f in loaded.io.metadata.get("features", "").split(",") if f.strip()
        ],
    }


@dataclass
class RegistryService:
    repo: RegistryRepository
    policy: ModelPolicy = field(default_factory=ModelPolicy)
    # The mapping's models by name, when known: versions of these names must fit them.
    models: Mapping[str, ResolvedModel] = field(default_factory=dict)

    def register(
        self,
        path: Path,
        name: str,
        version: str,
        *,
        actor: str,
        reference: Path | Mapping[str, Any] | None = None,
        signature: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        activate: bool = False,
        from_mapping: bool = False,
        channel: str | None = None,
    ) -> VersionRecord:
        """Hash, open (to record the spec) and store a version. Nothing starts serving unless
        ``activate`` (used for the first version, e.g. the one a mapping names).

        ``path`` comes from a user (REST, CLI): it must name a regular file under the
        policy's models directory (relative paths are relative to it). Only the mapping's own
        files (``from_mapping``, trusted like the mapping itself) may lie elsewhere."""
        if from_mapping:
            path = path.resolve()
            data = read_model_file(path, self.policy.max_bytes)
        else:
            path, data = read_confined(path, self.policy.directory, self.policy.max_bytes)
        sha = hashlib.sha256(data).hexdigest()
        with self._refusals(name, version, actor, "register", channel):
            loaded = load_verified(path, name, version, sha, signature, self.policy, data=data)
            self._check_fit(name, version, loaded)
        spec = spec_of(loaded)
        features = spec["features"] or None
        ref: dict[str, Any] | None = None
        if isinstance(reference, Path):
            ref = load_reference(reference, features)
        elif reference is not None:
            ref = validate_reference(dict(reference), features)
        now = time.time()
        record = VersionRecord(
            name=name,
            version=version,
            sha256=loaded.sha256,
            path=str(path),
            size_bytes=len(data),
            signature=signature,
            spec=spec,
            reference=ref,
            metrics=dict(metrics or {}),
            registered_by=actor,
            registered_at=now,
            state="active" if activate else "registered",
            canary_share=None,
            canary_assets=None,
            guard=None,
            state_changed_at=now,
        )
        stored = self.repo.add(record, actor, channel=channel)
        log.info("model_registered", model=name, version=version, sha256=stored.sha256, by=actor)
        return stored

    def list(self, name: str | None = None) -> list[VersionRecord]:
        return self.repo.list(name)

    def show(self, name: str, version: str | None = None) -> VersionRecord:
        """``version`` None: the active version."""
        if version is None:
            active = self._active(name)
            if active is None:
                raise RegistryNotFound(f"model {name} has no active version")
            return active
        return self._get(name, version)

    def refusal(self, record: VersionRecord) -> str | None:
        """Why a gateway refused ``record`` (its latest ``refuse`` event), if it is refused."""
        if record.state != "refused":
            return None
        event = next(
            (
                e
                for e in self.repo.events(record.name, limit=1000)
                if e.version == record.version and e.action == "refuse"
            ),
            None,
        )
        return str(event.detail.get("reason", "")) if event is not None else None

    def activate(
        self, name: str, version: str, actor: str, *, channel: str | None = None
    ) -> VersionRecord:
        record = self._get(name, version)
        if record.state == "active":
            raise RegistryConflict(f"model {name} version {version} is already active")
        with self._refusals(name, version, actor, "activate", channel):
            self._verify(record)
        return self._move(name, version, "active", actor, "activate", channel=channel)

    def promote(self, name: str, actor: str, *, channel: str | None = None) -> VersionRecord:
        cand = self._candidate(name)
        if cand is None:
            raise RegistryConflict(f"model {name} has no shadow or canary version to promote")
        with self._refusals(name, cand.version, actor, "promote", channel):
            self._verify(cand)
        return self._move(name, cand.version, "active", actor, "promote", channel=channel)

    def rollback(
        self, name: str, actor: str, reason: str = "", *, channel: str | None = None
    ) -> VersionRecord:
        """End the candidate if there is one; otherwise reactivate the previous active version."""
        detail = {"reason": reason} if reason else {}
        cand = self._candidate(name)
        if cand is not None:
            return self._move(
                name,
                cand.version,
                "retired",
                actor,
                "rollback-candidate",
                detail=detail,
                channel=channel,
            )
        previous = self.repo.previous_active(name)
        if previous is None:
            raise RegistryConflict(f"model {name} has no earlier active version to roll back to")
        record = self._get(name, previous)
        with self._refusals(name, previous, actor, "rollback", channel):
            self._verify(record)
        return self._move(
            name, previous, "active", actor, "rollback", detail=detail, channel=channel
        )

    def shadow(
        self, name: str, version: str, actor: str, *, channel: str | None = None
    ) -> VersionRecord:
        record = self._startable(name, version, actor, "shadow", channel)
        return self._move(name, record.version, "shadow", actor, "shadow", channel=channel)

    def canary(
        self,
        name: str,
        version: str,
        actor: str,
        *,
        share: float | None = None,
        assets: Sequence[str] | None = None,
        guard: Mapping[str, float] | None = None,
        channel: str | None = None,
    ) -> VersionRecord:
        # A canary's arguments are checked here, not by the API's body schema: a conflict (409),
        # as the API has always answered.
        if (share is None) == (assets is None):
            raise RegistryConflict("a canary needs either a share (percent) or a list of assets")
        if share is not None and not 0 < share <= 100:
            raise RegistryConflict(f"canary share must be in (0, 100] percent, got {share}")
        if assets is not None and not [a for a in assets if a]:
            raise RegistryConflict("a canary asset list must name at least one asset")
        unknown = set(guard or {}) - GUARD_KEYS
        if unknown:
            raise RegistryConflict(
                f"unknown guard keys {sorted(unknown)}; use {', '.join(sorted(GUARD_KEYS))}"
            )
        record = self._startable(name, version, actor, "canary", channel)
        return self._move(
            name,
            record.version,
            "canary",
            actor,
            "canary",
            canary_share=share,
            canary_assets=[a for a in assets if a] if assets is not None else None,
            guard=dict(guard) if guard else None,
            detail={"share": share, "assets": list(assets) if assets else None},
            channel=channel,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _move(
        self,
        name: str,
        version: str,
        target: VersionState,
        actor: str,
        action: str,
        *,
        detail: Mapping[str, Any] | None = None,
        canary_share: float | None = None,
        canary_assets: Sequence[str] | None = None,
        guard: Mapping[str, float] | None = None,
        channel: str | None = None,
    ) -> VersionRecord:
        """``version`` to ``target`` as ``bridge.lifecycle.states`` allows, in one transaction."""
        record = self.repo.transition(
            name,
            version,
            move(version, target, action, detail),
            actor,
            canary_share=canary_share,
            canary_assets=canary_assets,
            guard=guard,
            channel=channel,
        )
        assert record is not None  # a move without a file check always changes its version
        return record

    @contextmanager
    def _refusals(
        self, name: str, version: str, actor: str, operation: str, channel: str | None
    ) -> Iterator[None]:
        """A version refused inside (``ModelRefused``: signature, hash, fit) is recorded in
        the ledger, then the refusal goes on to the caller as before."""
        try:
            yield
        except ModelRefused as exc:
            try:
                self.repo.record_refusal(name, version, actor, operation, str(exc), channel=channel)
            except StoreError as err:
                # The refusal stands whether or not the store can say so: it is logged.
                log.error("model_refusal_not_recorded", model=f"{name} {version}", error=str(err))
            raise

    def _verify(self, record: VersionRecord) -> None:
        """Refuse a tampered or unfitting file at the command, not only later in the runtime."""
        loaded = load_verified(
            Path(record.path),
            record.name,
            record.version,
            record.sha256,
            record.signature,
            self.policy,
        )
        self._check_fit(record.name, record.version, loaded)

    def _check_fit(self, name: str, version: str, loaded: LoadedModel) -> None:
        """The checks the runtime makes before serving a version, made here when the mapping
        is known (a version for a name the mapping does not use is not checked)."""
        model = self.models.get(name)
        if model is None:
            return
        problems = model_problems(model, loaded)
        if problems:
            log.error("model_refused", model=f"{name} {version}", reason="; ".join(problems))
            raise ModelRefused(
                f"{name} {version} does not fit the mapping's model {name}: "
                f"{'; '.join(problems)}. Build the model for the mapping's `input:`, "
                "`features:` and `outputs:`, or change the mapping first"
            )

    def _startable(
        self, name: str, version: str, actor: str, operation: str, channel: str | None
    ) -> VersionRecord:
        record = self._get(name, version)
        if record.state == "active":
            raise RegistryConflict(f"model {name} version {version} is the active version")
        if self._active(name) is None:
            # Not found (404), as the API has always answered: the active version is missing.
            raise RegistryNotFound(
                f"model {name} has no active version to compare with: activate one first"
            )
        with self._refusals(name, version, actor, operation, channel):
            self._verify(record)
        return record

    def _get(self, name: str, version: str) -> VersionRecord:
        record = self.repo.get(name, version)
        if record is None:
            known = ", ".join(r.version for r in self.repo.list(name)) or "none"
            raise RegistryNotFound(f"model {name} has no version {version} (registered: {known})")
        return record

    def _active(self, name: str) -> VersionRecord | None:
        return next((r for r in self.repo.list(name) if r.state == "active"), None)

    def _candidate(self, name: str) -> VersionRecord | None:
        return next((r for r in self.repo.list(name) if r.state in CANDIDATE_STATES), None)
