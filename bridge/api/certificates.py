"""The trust lists of peer certificates over HTTP (admin scope): the same as ``bridge certs
list|trust|reject|remove``, on the trust lists of the running mapping (``ApiServices.trust_lists``):
``servers``, the servers its OPC UA sources connect to, and ``clients``, the clients of its OPC UA
server. Each change is an audit ledger entry by the admin key that made it, ``key:<id>``.

The running gateway sees a change at its next check of a peer (it watches the folders); a
session already open is not closed by a rejection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from bridge.auth import Scope
from bridge.pki.seen import Sighting
from bridge.pki.trustlists import (
    AlreadyInState,
    AmbiguousCertificate,
    Change,
    Listed,
    PkiError,
    Side,
    State,
    TrustDir,
    UnknownCertificate,
    list_certificates,
    reject,
    remove,
    trust,
)
from bridge.store.apikeys import ApiKeyRecord
from bridge.store.auditchain import NewAuditEntry

from .auth import audit_actor, require, secured
from .deps import Queries, Services

__all__ = [
    "CertificateChangeOut",
    "CertificateOut",
    "CertificatesOut",
    "SightingOut",
    "TrustListOut",
    "build_certificates_router",
]

SidePath = Annotated[
    Side,
    Path(
        description="`servers`: certificates of servers the gateway connects to (its opcua "
        "sources); `clients`: of clients that connect to its opcua-server."
    ),
]
ThumbprintPath = Annotated[
    str,
    Path(
        pattern=r"^[0-9a-fA-F]{8,40}$",
        description="SHA-1 thumbprint (hex) of the certificate, or its first 8 or more digits "
        "when they name one certificate only.",
    ),
]
Reason = Annotated[
    str, Query(max_length=500, description="Why; recorded with the change in the audit ledger.")
]
# The admin key of the call (the same check ``secured`` runs, so FastAPI runs it once).
AdminKey = Annotated[ApiKeyRecord, Depends(require(Scope.ADMIN))]


class SightingOut(BaseModel):
    first_seen: datetime = Field(description="When a peer first showed it (UTC).")
    last_seen: datetime = Field(description="When a peer last showed it (UTC).")
    refused: int = Field(description="How often it was refused.")
    accepted: int = Field(
        description="How often it was accepted (written at most once a minute: recent "
        "acceptances may not be counted yet)."
    )
    last_outcome: Literal["refused", "accepted"]
    reason: str = Field(description="Why it was last refused ('' if never).")
    peers: list[str] = Field(
        description="Who showed it, newest last (at most 5): a server's endpoint URL, a "
        "client's address."
    )

    @classmethod
    def of(cls, s: Sighting) -> SightingOut:
        return cls(
            first_seen=s.first_seen,
            last_seen=s.last_seen,
            refused=s.refused,
            accepted=s.accepted,
            last_outcome=s.last_outcome,
            reason=s.reason,
            peers=list(s.peers),
        )


class CertificateOut(BaseModel):
    side: Side | None = Field(description="Whose certificates the trust list holds.")
    pki_dir: str = Field(description="The trust list's folder on the gateway host.")
    state: State = Field(
        description="`trusted`; `issuers`: a CA that only completes chains; `rejected`: "
        "refused (a peer showed it and it was not trusted, or an operator rejected it)."
    )
    thumbprint: str = Field(description="SHA-1 of the DER certificate, hex.")
    subject: str = Field(description="Common name of the subject (else the whole name).")
    issuer: str = Field(description="Common name of the issuer (the subject if self-signed).")
    application_uri: str | None = Field(description="The SAN URI (OPC UA ApplicationUri).")
    not_before: datetime
    not_after: datetime
    expired: bool = Field(description="not_after has passed: refused even when trusted.")
    is_ca: bool
    file: str = Field(description="The file's name in the state's folder.")
    seen: SightingOut | None = Field(
        description="Where and when a peer showed it; null if never recorded."
    )

    @classmethod
    def of(cls, e: Listed) -> CertificateOut:
        return cls(
            side=e.trust_dir.side,
            pki_dir=str(e.trust_dir.path),
            state=e.state,
            thumbprint=e.thumbprint,
            subject=e.subject,
            issuer=e.issuer,
            application_uri=e.application_uri,
            not_before=e.not_before,
            not_after=e.not_after,
            expired=e.expired(),
            is_ca=e.is_ca,
            file=e.path.name,
            seen=None if e.seen is None else SightingOut.of(e.seen),
        )


class TrustListOut(BaseModel):
    side: Side | None
    pki_dir: str
    used_by: list[str] = Field(description="The mapping's sources and outputs that use it.")


class CertificatesOut(BaseModel):
    trust_lists: list[TrustListOut] = Field(description="The running mapping's trust lists.")
    certificates: list[CertificateOut]


class CertificateChangeOut(BaseModel):
    side: Side | None
    pki_dir: str
    thumbprint: str
    subject: str
    before: State | None = Field(description="Where it was (null: nowhere).")
    after: State | None = Field(description="Where it is now (null: removed).")
    audit_seq: int = Field(description="Its entry in the audit ledger.")


def build_certificates_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/certificates", tags=["certificates"])
    # One change at a time through this API: two at once on one certificate would race.
    changing = asyncio.Lock()

    async def change(
        request: Request,
        admin: ApiKeyRecord,
        services: Services,
        queries: Queries,
        side: Side,
        operation: Callable[[Sequence[TrustDir]], list[Change]],
        reason: str,
    ) -> list[CertificateChangeOut]:
        dirs = [d for d in services.trust_lists() if d.side == side]
        if not dirs:
            raise HTTPException(404, f"the running mapping has no trust list of {side}")
        actor, channel = audit_actor(request, admin)
        async with changing:
            try:
                changes = await asyncio.to_thread(operation, dirs)
            except PkiError as exc:
                raise HTTPException(_status_of(exc), str(exc)) from exc
            out = []
            for c in changes:
                action, subject, before, after = c.audit()
                entry = NewAuditEntry(actor, channel, action, subject, before, after, reason)
                recorded = await queries.run(services.audit.append, entry)
                out.append(
                    CertificateChangeOut(
                        side=c.trust_dir.side,
                        pki_dir=str(c.trust_dir.path),
                        thumbprint=c.thumbprint,
                        subject=c.subject,
                        before=c.before,
                        after=c.after,
                        audit_seq=recorded.seq,
                    )
                )
        return out

    conflict = (409, "The prefix names several certificates, or it is there already")

    @router.get(
        "",
        response_model=CertificatesOut,
        summary="Certificates of the trust lists, both sides, with where each was seen",
        **secured(Scope.ADMIN),
    )
    async def list_all(
        services: Services,
        side: Annotated[Side | None, Query(description="Only this side.")] = None,
    ) -> CertificatesOut:
        dirs = [d for d in services.trust_lists() if side is None or d.side == side]
        entries = await asyncio.to_thread(list_certificates, dirs)
        return CertificatesOut(
            trust_lists=[
                TrustListOut(side=d.side, pki_dir=str(d.path), used_by=list(d.used_by))
                for d in dirs
            ],
            certificates=[CertificateOut.of(e) for e in entries],
        )

    @router.post(
        "/{side}/{thumbprint}/trust",
        response_model=list[CertificateChangeOut],
        summary="Trust a rejected certificate (moved to trusted/)",
        **secured(Scope.ADMIN, conflict),
    )
    async def trust_one(
        request: Request,
        admin: AdminKey,
        services: Services,
        queries: Queries,
        side: SidePath,
        thumbprint: ThumbprintPath,
        reason: Reason = "",
    ) -> list[CertificateChangeOut]:
        def operation(dirs: Sequence[TrustDir]) -> list[Change]:
            return trust(dirs, thumbprint)

        return await change(request, admin, services, queries, side, operation, reason)

    @router.post(
        "/{side}/{thumbprint}/reject",
        response_model=list[CertificateChangeOut],
        summary="Reject a trusted certificate (moved to rejected/)",
        **secured(Scope.ADMIN, conflict),
    )
    async def reject_one(
        request: Request,
        admin: AdminKey,
        services: Services,
        queries: Queries,
        side: SidePath,
        thumbprint: ThumbprintPath,
        reason: Reason = "",
    ) -> list[CertificateChangeOut]:
        def operation(dirs: Sequence[TrustDir]) -> list[Change]:
            return reject(dirs, thumbprint)

        return await change(request, admin, services, queries, side, operation, reason)

    @router.delete(
        "/{side}/{thumbprint}",
        response_model=list[CertificateChangeOut],
        summary="Remove a certificate from the trust list (every folder)",
        **secured(Scope.ADMIN, conflict),
    )
    async def remove_one(
        request: Request,
        admin: AdminKey,
        services: Services,
        queries: Queries,
        side: SidePath,
        thumbprint: ThumbprintPath,
        reason: Reason = "",
    ) -> list[CertificateChangeOut]:
        def operation(dirs: Sequence[TrustDir]) -> list[Change]:
            return remove(dirs, thumbprint)

        return await change(request, admin, services, queries, side, operation, reason)

    return router


def _status_of(exc: PkiError) -> int:
    if isinstance(exc, UnknownCertificate):
        return 404
    if isinstance(exc, AmbiguousCertificate | AlreadyInState):
        return 409
    return 422
