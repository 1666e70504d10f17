"""The model registry over HTTP (admin scope): the same operations as ``bridge models``.

Changes take effect in this gateway at once (the registry watcher is woken) and in other
gateways sharing the database within their ``gateway.models.poll_s``. Each is recorded (the
registry's events, the audit ledger) as the admin key that made it, ``key:<id>``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel, Field

from bridge.api.auth import audit_actor, require, secured
from bridge.api.deps import LiveModels, Registry
from bridge.api.services import LiveModelState
from bridge.auth import Scope
from bridge.errors import BridgeError, StoreError
from bridge.lifecycle.accuracy import accuracy
from bridge.lifecycle.service import RegistryService
from bridge.store.apikeys import ApiKeyRecord
from bridge.store.registry import RegistryError, RegistryNotFound, VersionRecord

__all__ = [
    "VersionMetricsOut",
    "VersionOut",
    "build_models_admin_router",
    "registry_status",
    "version_metrics",
]

NamePath = Annotated[str, Path(min_length=1, max_length=200)]
VersionPath = Annotated[str, Path(min_length=1, max_length=100)]
# The admin key of the call (the same check ``secured`` runs, so FastAPI runs it once).
AdminKey = Annotated[ApiKeyRecord, Depends(require(Scope.ADMIN))]


class VersionOut(BaseModel):
    name: str
    version: str
    sha256: str
    path: str
    size_bytes: int
    signed: bool
    state: Literal["registered", "active", "shadow", "canary", "retired", "refused"] = Field(
        description="`refused`: a gateway would not load it (the reason is in its events); "
        "the version it kept serving is active."
    )
    canary_share: float | None
    canary_assets: list[str] | None
    guard: dict[str, float] | None
    spec: dict[str, Any]
    reference: dict[str, Any] | None
    metrics: dict[str, Any]
    registered_by: str
    registered_at: float
    state_changed_at: float
    refusal: str | None = Field(
        None, description="Why a gateway refused it (state `refused`; one version's GET only)."
    )

    @classmethod
    def of(cls, r: VersionRecord, refusal: str | None = None) -> VersionOut:
        return cls(
            name=r.name,
            version=r.version,
            sha256=r.sha256,
            path=r.path,
            size_bytes=r.size_bytes,
            signed=r.signature is not None,
            state=r.state,
            canary_share=r.canary_share,
            canary_assets=list(r.canary_assets) if r.canary_assets is not None else None,
            guard=r.guard,
            spec=r.spec,
            reference=r.reference,
            metrics=r.metrics,
            registered_by=r.registered_by,
            registered_at=r.registered_at,
            state_changed_at=r.state_changed_at,
            refusal=refusal,
        )


class RegisterIn(BaseModel):
    version: str = Field(min_length=1, max_length=100)
    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Model file in the gateway's models directory (gateway.models.directory), "
        "relative to it or absolute. Anything else (outside it, a symbolic link leaving it, "
        "not a regular file, missing, above gateway.models.max_file_mib) is refused with 422.",
    )
    reference: dict[str, Any] | None = Field(None, description="bridge-reference/1 statistics.")
    signature: str | None = Field(
        None,
        description="Base64 Ed25519 signature over name, version and sha256 "
        "(`bridge models sign`); required with a public key or the production profile.",
    )
    metrics: dict[str, Any] | None = None


class VersionIn(BaseModel):
    version: str = Field(min_length=1, max_length=100)


class CanaryIn(BaseModel):
    version: str = Field(min_length=1, max_length=100)
    share: float | None = Field(None, gt=0, le=100, description="Percent of assets.")
    assets: list[str] | None = Field(None, min_length=1)
    max_disagreement: float | None = Field(None, ge=0, le=1)
    max_error_rate: float | None = Field(None, ge=0, le=1)
    min_samples: int | None = Field(None, ge=1)


class AgreementOut(BaseModel):
    asset: str
    compared: int
    agreed: int
    rate: float | None


class AccuracyOut(BaseModel):
    asset: str
    active_version: str = Field(description="The version this one was compared with.")
    labelled: int = Field(description="Compared predictions an operator confirmed or rejected.")
    active_judged: int
    active_correct: int
    active_accuracy: float | None
    candidate_judged: int = Field(
        description="A reject judges a version only if it predicted the rejected value: "
        "the right answer is not known otherwise."
    )
    candidate_correct: int
    candidate_accuracy: float | None


class VersionMetricsOut(BaseModel):
    version: str
    state: str
    predictions_stored: int
    labels: dict[str, int]
    agreement: list[AgreementOut]
    accuracy: list[AccuracyOut] = Field(
        description="Where operators labelled predictions this version was compared on: "
        "per asset, how often the active and this (candidate) version were right."
    )
    live: dict[str, Any] | None = Field(
        None, description="This gateway's counters since start (latency, errors, labels)."
    )


def _wake(live: LiveModelState | None) -> None:
    # Outside a running gateway there is no watcher: other gateways follow within their poll.
    if live is not None:
        live.wake()


def registry_status(exc: RegistryError) -> int:
    """404 for a missing model or version, 409 for any other refusal (RegistryConflict): chosen
    by the error's type, so rewording a message cannot change the answer."""
    if isinstance(exc, RegistryNotFound):
        return status.HTTP_404_NOT_FOUND
    return status.HTTP_409_CONFLICT


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except RegistryError as exc:
        raise HTTPException(registry_status(exc), str(exc)) from exc
    except StoreError:
        raise
    except BridgeError as exc:  # tampered, unsigned, unloadable: refused
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


async def version_metrics(
    svc: RegistryService, live: LiveModelState | None, name: str, version: str
) -> VersionMetricsOut:
    """What ``GET /models/{name}/versions/{version}/metrics`` answers (the console shows it too)."""
    record = await _call(svc.show, name, version)
    counts = (await _call(svc.repo.prediction_counts, name)).get(version, {})
    agreement = await _call(svc.repo.agreement, name, version)
    judged = await _call(accuracy, svc.repo, name, version)
    stats = (
        next((s for s in live.version_stats(name) if s.version == version), None)
        if live is not None
        else None
    )
    return VersionMetricsOut(
        version=version,
        state=record.state,
        predictions_stored=sum(counts.values()),
        labels=counts,
        agreement=[
            AgreementOut(asset=a.asset, compared=a.compared, agreed=a.agreed, rate=a.rate)
            for a in agreement
        ],
        accuracy=[
            AccuracyOut(
                asset=r.asset,
                active_version=r.active_version,
                labelled=r.labelled,
                active_judged=r.active_judged,
                active_correct=r.active_correct,
                active_accuracy=r.active_rate,
                candidate_judged=r.candidate_judged,
                candidate_correct=r.candidate_correct,
                candidate_accuracy=r.candidate_rate,
            )
            for r in judged
        ],
        live=stats.as_dict() if stats is not None else None,
    )


def build_models_admin_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/models", tags=["model registry"])
    admin = secured(Scope.ADMIN, (404, "No such model or version"), (409, "Not allowed now"))
    read = secured(Scope.READ, (404, "No such model or version"))

    @router.get("/{name}/versions", response_model=list[VersionOut], summary="Versions", **read)
    async def versions(svc: Registry, name: NamePath) -> list[VersionOut]:
        return [VersionOut.of(r) for r in await _call(svc.list, name)]

    @router.get(
        "/{name}/versions/{version}", response_model=VersionOut, summary="One version", **read
    )
    async def version(svc: Registry, name: NamePath, version: VersionPath) -> VersionOut:
        record = await _call(svc.show, name, version)
        return VersionOut.of(record, await _call(svc.refusal, record))

    @router.post(
        "/{name}/versions",
        response_model=VersionOut,
        status_code=status.HTTP_201_CREATED,
        summary="Register a version (file already on the gateway)",
        **secured(Scope.ADMIN, (409, "Version exists"), (422, "File refused")),
    )
    async def register(
        request: Request, key: AdminKey, svc: Registry, name: NamePath, body: RegisterIn
    ) -> VersionOut:
        actor, channel = audit_actor(request, key)
        record = await _call(
            svc.register,
            FsPath(body.path),
            name,
            body.version,
            actor=actor,
            reference=body.reference,
            signature=body.signature,
            metrics=body.metrics,
            channel=channel,
        )
        return VersionOut.of(record)

    @router.post("/{name}/activate", response_model=VersionOut, summary="Activate", **admin)
    async def activate(
        request: Request,
        key: AdminKey,
        live: LiveModels,
        svc: Registry,
        name: NamePath,
        body: VersionIn,
    ) -> VersionOut:
        actor, channel = audit_actor(request, key)
        record = await _call(svc.activate, name, body.version, actor, channel=channel)
        _wake(live)
        return VersionOut.of(record)

    @router.post("/{name}/shadow", response_model=VersionOut, summary="Shadow", **admin)
    async def shadow(
        request: Request,
        key: AdminKey,
        live: LiveModels,
        svc: Registry,
        name: NamePath,
        body: VersionIn,
    ) -> VersionOut:
        actor, channel = audit_actor(request, key)
        record = await _call(svc.shadow, name, body.version, actor, channel=channel)
        _wake(live)
        return VersionOut.of(record)

    @router.post("/{name}/canary", response_model=VersionOut, summary="Canary", **admin)
    async def canary(
        request: Request,
        key: AdminKey,
        live: LiveModels,
        svc: Registry,
        name: NamePath,
        body: CanaryIn,
    ) -> VersionOut:
        actor, channel = audit_actor(request, key)
        guard = {
            k: float(v)
            for k, v in (
                ("max_disagreement", body.max_disagreement),
                ("max_error_rate", body.max_error_rate),
                ("min_samples", body.min_samples),
            )
            if v is not None
        }
        record = await _call(
            svc.canary,
            name,
            body.version,
            actor,
            share=body.share,
            assets=body.assets,
            guard=guard or None,
            channel=channel,
        )
        _wake(live)
        return VersionOut.of(record)

    @router.post("/{name}/promote", response_model=VersionOut, summary="Promote", **admin)
    async def promote(
        request: Request, key: AdminKey, live: LiveModels, svc: Registry, name: NamePath
    ) -> VersionOut:
        actor, channel = audit_actor(request, key)
        record = await _call(svc.promote, name, actor, channel=channel)
        _wake(live)
        return VersionOut.of(record)

    @router.post("/{name}/rollback", response_model=VersionOut, summary="Roll back", **admin)
    async def rollback(
        request: Request, key: AdminKey, live: LiveModels, svc: Registry, name: NamePath
    ) -> VersionOut:
        actor, channel = audit_actor(request, key)
        record = await _call(svc.rollback, name, actor, channel=channel)
        _wake(live)
        return VersionOut.of(record)

    @router.get(
        "/{name}/versions/{version}/metrics",
        response_model=VersionMetricsOut,
        summary="Per-version metrics: predictions, labels, agreement with the active version "
        "and accuracy where operators labelled predictions",
        **read,
    )
    async def metrics(
        live: LiveModels, svc: Registry, name: NamePath, version: VersionPath
    ) -> VersionMetricsOut:
        return await version_metrics(svc, live, name, version)

    return router
