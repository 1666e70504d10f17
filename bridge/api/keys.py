"""API key management over HTTP (admin scope); the same as `bridge apikeys`. Creating and
revoking are audit ledger entries by the admin key of the call, ``key:<id>``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel, Field

from bridge.auth import Scope
from bridge.store.apikeys import MAX_NAME, ApiKeyRecord, ApiKeyRepository

from .auth import audit_actor, require, secured
from .deps import Keys, Queries, Services
from .timeparse import epoch_to_datetime

__all__ = ["ApiKeyIn", "ApiKeyOut", "CreatedApiKeyOut", "build_key_router"]

ScopeLabel = Literal["read", "operate", "admin", "insights"]
_LABELS: dict[Scope, ScopeLabel] = {
    Scope.READ: "read",
    Scope.OPERATE: "operate",
    Scope.ADMIN: "admin",
    Scope.INSIGHTS: "insights",
}


class ApiKeyOut(BaseModel):
    key_id: str = Field(description="Public id of the key (its first part); used to revoke it.")
    name: str
    scope: ScopeLabel
    created_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, r: ApiKeyRecord) -> ApiKeyOut:
        return cls(
            key_id=r.key_id,
            name=r.name,
            scope=_LABELS[r.scope],
            created_at=epoch_to_datetime(r.created_at),
            revoked_at=epoch_to_datetime(r.revoked_at),
        )


class CreatedApiKeyOut(ApiKeyOut):
    key: str = Field(description="The key itself. Shown only here: store it now.")


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=r"\S")
    scope: ScopeLabel = Field(
        "read",
        description="`read` < `operate` < `admin`, each allowing what the lower ones do; "
        "`insights` may only read `GET /api/v1/insights` (the anonymised aggregates).",
    )


def _repo(cache: Keys) -> ApiKeyRepository:
    return cache.repo


KeyStore = Annotated[ApiKeyRepository, Depends(_repo)]
# The admin key of the call (the same check ``secured`` runs, so FastAPI runs it once).
AdminKey = Annotated[ApiKeyRecord, Depends(require(Scope.ADMIN))]


def build_key_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/apikeys", tags=["api keys"])

    @router.get("", response_model=list[ApiKeyOut], summary="API keys", **secured(Scope.ADMIN))
    async def list_keys(
        queries: Queries,
        keys: KeyStore,
        include_revoked: Annotated[bool, Query(description="Also list revoked keys.")] = False,
    ) -> list[ApiKeyOut]:
        return [ApiKeyOut.of(r) for r in await queries.run(keys.list, include_revoked)]

    @router.post(
        "",
        response_model=CreatedApiKeyOut,
        status_code=status.HTTP_201_CREATED,
        summary="Create an API key (the key is returned once)",
        **secured(Scope.ADMIN, (400, "The body is not readable")),
    )
    async def create_key(
        request: Request, admin: AdminKey, queries: Queries, keys: KeyStore, body: ApiKeyIn
    ) -> CreatedApiKeyOut:
        actor, channel = audit_actor(request, admin)
        scope = Scope.parse(body.scope)
        record, key = await queries.run(
            lambda: keys.create(body.name, scope, actor=actor, channel=channel)
        )
        return CreatedApiKeyOut(**ApiKeyOut.of(record).model_dump(), key=key)

    @router.delete(
        "/{key_id}",
        response_model=ApiKeyOut,
        summary="Revoke an API key",
        **secured(Scope.ADMIN),
    )
    async def revoke_key(
        request: Request,
        admin: AdminKey,
        services: Services,
        queries: Queries,
        keys: KeyStore,
        cache: Keys,
        key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")],
    ) -> ApiKeyOut:
        actor, channel = audit_actor(request, admin)
        record = await queries.run(lambda: keys.revoke(key_id, actor=actor, channel=channel))
        cache.forget()  # revoked here: refused from the next request on
        services.sessions.close_key(key_id)
        if record is None:
            raise HTTPException(404, f"no API key {key_id}")
        return ApiKeyOut.of(record)

    return router
