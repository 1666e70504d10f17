"""The audit ledger over the API (scope admin): its entries, newest first and filtered, and a
verification of the whole chain and its signed checkpoints.

Admin only: the entries say who changed what (key ids, user names, the before and after of
settings), which is more than a read or operate key should learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from bridge.audit.verify import Problem, Verification, verify_chain
from bridge.auth import Scope
from bridge.store.audit import AuditFilter, AuditRepository
from bridge.store.auditchain import AuditEntry

from .auth import secured
from .deps import Queries, Services
from .params import MAX_LIMIT, Since, Until, time_range

__all__ = ["AuditEntryOut", "AuditPage", "AuditVerificationOut", "build_audit_router"]


class AuditEntryOut(BaseModel):
    """One entry of the chain, every field as it was hashed: a client can recompute ``hash``
    (sha256 of the canonical JSON of every other field, see docs/governance.md)."""

    seq: int = Field(description="Position in the chain: 1, 2, 3, ... with no gap.")
    at: str = Field(
        description="When it was written: ISO 8601 UTC with microseconds "
        "(`2026-12-04T19:30:00.123456Z`), exactly as hashed."
    )
    gateway: str = Field(description="The gateway (or `cli@<host>`) that wrote it.")
    actor: str = Field(
        description="Who: `key:<id>`, `opcua:<user>`, `console:<user>`, `cli:<user>`, "
        "`mapping` or `system`."
    )
    channel: str = Field(description="How: rest, opcua, console, cli, mapping or system.")
    action: str = Field(description="What, e.g. `model.activated`, `apikey.created`.")
    subject: str = Field(description="On what, e.g. `model:<name>/<version>`, `apikey:<id>`.")
    before: Any = Field(description="The state before the change (any JSON; null: none).")
    after: Any = Field(description="The state after the change (any JSON; null: none).")
    reason: str = Field(description="Why, as given by the actor ('' when none was given).")
    prev_hash: str = Field(description="`hash` of the entry before (64 zeros for seq 1).")
    hash: str = Field(description="sha256 (hex) of this entry's canonical encoding.")

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryOut:
        return cls(**e.to_json())


class AuditPage(BaseModel):
    """One page of ledger entries; follow ``next_cursor`` for the older ones."""

    entries: list[AuditEntryOut] = Field(description="Newest (highest seq) first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null on the last page."
    )


class AuditProblemOut(BaseModel):
    """Where and how the chain, or one of its checkpoints, fails."""

    seq: int = Field(
        description="The entry where the chain breaks (for a checkpoint: the entry it signs)."
    )
    kind: str = Field(
        description="changed, missing, out_of_order, broken_link, truncated, bad_signature "
        "or untrusted_key."
    )
    message: str = Field(description="What is wrong, in words.")

    @classmethod
    def of(cls, p: Problem) -> AuditProblemOut:
        return cls(seq=p.seq, kind=p.kind, message=p.message)


class AuditVerificationOut(BaseModel):
    """The whole chain walked: every entry's hash, its link to the one before, no gap in the
    seq, and the signed checkpoints (which show a chain cut short after them)."""

    ok: bool = Field(description="True when no entry and no checkpoint shows a problem.")
    entries: int = Field(description="Entries read.")
    last_seq: int = Field(description="The highest seq read (0: no entry).")
    last_hash: str = Field(description="`hash` of the last entry read.")
    checkpoints: int = Field(description="Checkpoints with a valid (and trusted) signature.")
    last_checkpoint_seq: int = Field(
        description="The last entry a valid checkpoint vouches for (0: none)."
    )
    unsigned_tail: int = Field(
        description="Entries after the last valid checkpoint: a cut there would not show."
    )
    first_problem: AuditProblemOut | None = Field(
        description="Where the chain first breaks; null when ok."
    )
    problems: list[AuditProblemOut] = Field(description="Every problem (the first 100), by seq.")
    signer_pinned: bool = Field(
        description="True: only checkpoints signed by the gateway's key or a key of "
        "`gateway.audit.trusted_keys` count. False (an API without a gateway's settings): any "
        "validly signed checkpoint counts; pin the keys with `bridge audit verify --mapping` "
        "or `--public-key`."
    )

    @classmethod
    def of(cls, v: Verification, signer_pinned: bool) -> AuditVerificationOut:
        first = v.first_problem
        return cls(
            ok=v.ok,
            entries=v.entries,
            last_seq=v.last_seq,
            last_hash=v.last_hash,
            checkpoints=v.checkpoints,
            last_checkpoint_seq=v.last_checkpoint_seq,
            unsigned_tail=v.unsigned_tail,
            first_problem=None if first is None else AuditProblemOut.of(first),
            problems=[AuditProblemOut.of(p) for p in v.problems],
            signer_pinned=signer_pinned,
        )


def _ledger(s: Services) -> AuditRepository:
    return s.audit


Ledger = Annotated[AuditRepository, Depends(_ledger)]


def _verify(repo: AuditRepository, keys: Sequence[str] | None) -> Verification:
    # The checkpoints first: one signed while the entries are read vouches for an entry past
    # the last one read, which would look like a chain cut short.
    checkpoints = repo.checkpoints()
    return verify_chain(repo.iter_entries(), checkpoints, keys)


def build_audit_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

    @router.get(
        "",
        response_model=AuditPage,
        summary="Audit ledger entries, newest first",
        **secured(Scope.ADMIN),
    )
    async def list_entries(
        queries: Queries,
        repo: Ledger,
        since: Since = None,
        until: Until = None,
        action: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                description="Only this action (`model.activated`), or every action under a "
                "prefix ending in `.` (`model.`).",
            ),
        ] = None,
        subject: Annotated[
            str | None,
            Query(min_length=1, max_length=400, description="Only this subject, exactly."),
        ] = None,
        actor: Annotated[
            str | None,
            Query(min_length=1, max_length=200, description="Only this actor, exactly."),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = 100,
        cursor: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page."),
        ] = None,
    ) -> AuditPage:
        # No bound on the range (unlike history): newest first by seq, a page reads no
        # further than it needs.
        since_ts, until_ts = time_range(since, until)
        where = AuditFilter(since_ts, until_ts, action, subject, actor)
        before = None if cursor is None else int(cursor)
        rows = await queries.run(repo.page, where, limit + 1, before, True)
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(
            entries=[AuditEntryOut.of(e) for e in rows],
            next_cursor=str(rows[-1].seq) if more else None,
        )

    @router.get(
        "/verify",
        response_model=AuditVerificationOut,
        summary="Verify the whole chain and its signed checkpoints",
        **secured(Scope.ADMIN),
    )
    async def verify(queries: Queries, repo: Ledger, services: Services) -> AuditVerificationOut:
        keys = services.audit_keys
        result = await queries.run(_verify, repo, keys)
        return AuditVerificationOut.of(result, signer_pinned=keys is not None)

    return router
