"""Keeps each model runner's deployment in step with the registry, without a gap in predictions.

The watcher polls the registry (every ``poll_s``, or at once when woken by the in-process API);
when a model's active or candidate version changed, it loads the new version in a worker thread,
checks its hash, signature and fit to the mapping (including what it computes on a probe
batch), and only then hands the runner a new ``Deployment``: the runner picks it up at its next
tick. A version that fails any check is refused and logged, the old deployment keeps serving,
and the registry is made to say so: the version moves to ``refused`` (with the reason) and, if
it was the active one, the version that still serves is active again. The runner's health names
the refusal until another deployment serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from bridge.config.resolved import ResolvedModel
from bridge.errors import BridgeError
from bridge.lifecycle.accuracy import with_accuracy
from bridge.lifecycle.canary import canary_assets
from bridge.lifecycle.canary_guard import CanaryGuard
from bridge.lifecycle.deployment import CandidateMode, Deployment, Served
from bridge.lifecycle.loading import ModelRefused, check_signature, load_version
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.signature import SignatureError
from bridge.lifecycle.states import refusal
from bridge.lifecycle.version_stats import VersionStats
from bridge.store.registry import RegistryRepository, VersionRecord
from bridge.types import ModelStatus

__all__ = ["RegistryWatcher", "Switchable"]

log = structlog.get_logger(__name__)


class Switchable(Protocol):
    """What the watcher needs of a model runner."""

    model: ResolvedModel
    deployment: Deployment
    guard_tripped: str | None
    refused: str
    refusals: int
    stats: dict[str, VersionStats]

    def swap(self, deployment: Deployment) -> None: ...


StatusPublisher = Callable[[Sequence[ModelStatus]], Awaitable[None]]


@dataclass
class RegistryWatcher:
    repo: RegistryRepository
    runners: Sequence[Switchable]
    poll_s: float = 2.0
    policy: ModelPolicy = field(default_factory=ModelPolicy)
    publish_status: StatusPublisher | None = None
    swaps: int = 0
    refusals: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Registry keys that failed to load: not retried until the registry says something else.
    _refused: dict[str, tuple[object, ...]] = field(default_factory=dict)

    def wake(self) -> None:
        """Look at the registry now (the API calls this after changing it in-process)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except BridgeError as exc:  # the store is down: keep serving what we have
                log.warning("registry_poll_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    async def seed(self) -> None:
        """Register each mapping model that the registry does not know yet, as active, so the
        mapping's file is a version one can roll back to. Its signature, if any, is the file
        ``<model file>.sig`` beside it (what ``bridge models sign`` writes).

        With signatures required (the production profile) a mapping model that is not signed
        for its name and version stops the start: it would serve from the first tick."""
        service = RegistryService(self.repo, self.policy)
        for runner in self.runners:
            model, served = runner.model, runner.deployment.active
            signature = await asyncio.to_thread(_mapping_signature, model.path)
            if self.policy.require_signature:
                self._check_mapping_model(model, served, signature)
            known = await asyncio.to_thread(self.repo.list, model.name)
            if known:
                continue
            try:
                await asyncio.to_thread(
                    service.register,
                    model.path,
                    model.name,
                    served.version,
                    actor="mapping",
                    signature=signature,
                    activate=True,
                    from_mapping=True,
                )
            except BridgeError as exc:  # e.g. another gateway seeded it a moment ago
                log.info("model_not_seeded", model=model.name, reason=str(exc))

    def _check_mapping_model(
        self, model: ResolvedModel, served: Served, signature: str | None
    ) -> None:
        try:
            check_signature(self.policy, model.name, served.version, served.sha256, signature)
        except SignatureError as exc:
            log.error("model_refused", model=model.name, path=str(model.path), reason=str(exc))
            raise ModelRefused(
                f"{model.name} {served.version} (the mapping's {model.path.name}): {exc}; "
                f"its signature is read from {model.path.name}.sig beside it"
            ) from exc

    async def sync(self) -> None:
        await self._guards()
        serving = await asyncio.to_thread(self.repo.serving)
        changed = False
        for runner in self.runners:
            rows = [r for r in serving if r.name == runner.model.name]
            changed |= await self._sync_one(runner, rows)
        if self.publish_status is not None:
            statuses = [self.status(r) for r in self.runners]
            # Accuracy needs operator labels, which only the store has (from every gateway).
            await self.publish_status(await asyncio.to_thread(with_accuracy, self.repo, statuses))
        if changed:
            log.debug("registry_synced", swaps=self.swaps)

    def status(self, runner: Switchable) -> ModelStatus:
        d = runner.deployment
        cand = d.candidate
        tally = (
            runner.stats[cand.version].agreement if cand and cand.version in runner.stats else None
        )
        return ModelStatus(
            model=runner.model.name,
            active_version=d.active.version,
            active_sha256=d.active.sha256,
            candidate_version=cand.version if cand else "",
            candidate_sha256=cand.sha256 if cand else "",
            candidate_mode=d.mode or "",
            canary_share=d.canary_share,
            agreement=tuple(
                (asset, tally.rate(asset) if tally else None) for asset in runner.model.assets
            ),
        )

    async def _guards(self) -> None:
        service = RegistryService(self.repo, self.policy)
        for runner in self.runners:
            reason, cand = runner.guard_tripped, runner.deployment.candidate
            if reason is None or cand is None:
                continue
            current = await asyncio.to_thread(self.repo.get, runner.model.name, cand.version)
            if current is not None and current.is_candidate:
                await asyncio.to_thread(
                    service.rollback, runner.model.name, "guard", f"automatic: {reason}"
                )
                log.warning(
                    "canary_rolled_back",
                    model=runner.model.name,
                    version=cand.version,
                    reason=reason,
                )
            runner.guard_tripped = None

    async def _sync_one(self, runner: Switchable, rows: list[VersionRecord]) -> bool:
        name = runner.model.name
        active = next((r for r in rows if r.state == "active"), None)
        cand = next((r for r in rows if r.is_candidate), None)
        want = _key(active, cand)
        current = runner.deployment
        if want == _deployment_key(current) or self._refused.get(name) == want:
            return False
        try:
            new_active = await self._served(runner, active, current.active)
            new_cand = (
                await self._served(runner, cand, current.candidate) if cand is not None else None
            )
        except ModelRefused as exc:
            self.refusals += 1
            self._refused[name] = want
            bad = cand if active is None or _same(active, current.active) else active
            if bad is not None:
                serving = current.active.version
                runner.refusals += 1
                what = f"registry version {bad.version} ({bad.state})"
                runner.refused = f"{what} refused, {serving} serves: {exc}"
                await self._record_refusal(bad, str(exc), serving)
            return False
        self._refused.pop(name, None)
        mode: CandidateMode | None = (
            "shadow" if cand and cand.state == "shadow" else "canary" if cand else None
        )
        chosen = None
        if cand is not None and mode == "canary":
            chosen = canary_assets(name, runner.model.assets, cand.canary_share, cand.canary_assets)
            if not chosen:
                log.warning(
                    "canary_covers_no_asset",
                    model=name,
                    version=cand.version,
                    share=cand.canary_share,
                    listed=cand.canary_assets,
                    assets=len(runner.model.assets),
                )
        deployment = Deployment(
            active=new_active,
            candidate=new_cand,
            mode=mode,
            canary_share=cand.canary_share if cand else None,
            canary_assets=chosen,
            guard=CanaryGuard.of(cand.guard) if cand else None,
        )
        if deployment.key() == current.key():
            return False
        runner.swap(deployment)
        self.swaps += 1
        return True

    async def _served(
        self, runner: Switchable, record: VersionRecord | None, current: Served | None
    ) -> Served:
        if record is None:  # nothing active in the registry: keep what serves (the mapping's)
            assert current is not None
            return current
        if current is not None and _same(record, current):
            return current
        return await asyncio.to_thread(load_version, runner.model, record, self.policy)

    async def _record_refusal(self, record: VersionRecord, reason: str, serving: str) -> None:
        """The registry must say what serves: ``record`` becomes ``refused`` and, if it was the
        active version, ``serving`` (what this gateway kept) is active again."""
        try:
            restore = serving if record.state == "active" else None
            changed = await asyncio.to_thread(
                self.repo.transition,
                record.name,
                record.version,
                refusal(record.version, restore, reason),
                "runtime",
                sha256=record.sha256,
            )
        except BridgeError as exc:
            log.warning("refusal_not_recorded", model=record.name, error=str(exc))
            return
        log.warning(
            "registry_version_refused",
            model=record.name,
            version=record.version,
            was=record.state,
            serving=serving,
            recorded=changed is not None,  # False: another gateway recorded it first
        )


def _mapping_signature(path: Path) -> str | None:
    sig = path.with_name(path.name + ".sig")
    try:
        return sig.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("model_signature_unreadable", path=str(sig), error=str(exc))
        return None


def _same(record: VersionRecord, served: Served) -> bool:
    return record.version == served.version and record.sha256 == served.sha256


def _key(active: VersionRecord | None, cand: VersionRecord | None) -> tuple[object, ...]:
    return (
        (active.version, active.sha256) if active else None,
        (
            cand.version,
            cand.sha256,
            cand.state,
            cand.canary_share,
            cand.canary_assets,
            CanaryGuard.of(cand.guard),
        )
        if cand
        else None,
    )


def _deployment_key(d: Deployment) -> tuple[object, ...]:
    cand = d.candidate
    return (
        (d.active.version, d.active.sha256),
        (
            cand.version,
            cand.sha256,
            d.mode,
            d.canary_share,
            tuple(sorted(d.canary_assets)) if d.canary_assets is not None else None,
            d.guard,
        )
        if cand
        else None,
    )
