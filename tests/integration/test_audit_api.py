"""``GET /api/v1/audit`` and ``GET /api/v1/audit/verify`` over the secured API, on a real store
(SQLite, PostgreSQL): admin only, pages newest first that neither repeat nor skip an entry,
the filters, every field as it was hashed, and a verification that turns false after rows
are tampered with by hand."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from stores import BACKENDS, temp_store

from bridge.api import ApiServices, create_app
from bridge.api.view import ModelInfo, TagState
from bridge.auth import Scope
from bridge.store import Store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.audit import AuditRepository
from bridge.store.auditchain import AuditEntry, NewAuditEntry, entry_hash
from bridge.types import ComponentHealth, Prediction

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z; entry i is written at T0 + i
N = 25


@dataclass
class View:
    gateway_id: str = "gw-audit-api"
    start: float = field(default_factory=time.time)

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return []

    def started_at(self) -> float:
        return self.start


def entry(i: int) -> NewAuditEntry:
    """Every 5th a model activation, the others key changes by two actors."""
    if i % 5 == 0:
        before, after = {"state": "registered"}, {"state": "active"}
        subject = f"model:pump/{i}"
        return NewAuditEntry(
            "key:aaaaaaaaaaaa", "rest", "model.activated", subject, before, after, "canary passed"
        )
    actor = "cli:root" if i % 2 else "console:anna"
    return NewAuditEntry(
        actor, "cli", "apikey.created", f"apikey:{i:012d}", None, {"scope": "read"}
    )


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "api.db", prefix="bridge_audit_api") as s:
        yield s


@dataclass
class Api:
    http: httpx.AsyncClient
    store: Store
    keys: dict[str, str]
    written: list[AuditEntry]
    base: int  # entries before ours (the keys' own apikey.created entries)

    def seq(self, i: int) -> int:
        """The seq of our i-th entry (1..N)."""
        return self.base + i

    def auth(self, scope: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.http.get(path, params=params, headers=self.auth())
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    repo = ApiKeyRepository(store)
    keys = {s.label: repo.create(f"{s.label}-key", s)[1] for s in Scope}
    ledger = AuditRepository(store, "gw-audit-api")
    head = ledger.head()
    base = 0 if head is None else head[0]
    written = [ledger.append(entry(i), at=T0 + i) for i in range(1, N + 1)]
    transport = httpx.ASGITransport(app=create_app(ApiServices.from_store(View(), store)))
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as http:
        yield Api(http, store, keys, written, base)


async def pages(api: Api, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page, following ``next_cursor`` (at most 20 pages: a loop that never ends is a
    failure, not a hang)."""
    got: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(20):
        body = await api.get("/api/v1/audit", **params, **({"cursor": cursor} if cursor else {}))
        got.append(body["entries"])
        cursor = body["next_cursor"]
        if cursor is None:
            return got
    raise AssertionError("next_cursor never ended")


def seqs(entries: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in entries]


async def test_admin_pages_through_every_entry_newest_first(api: Api) -> None:
    # Ours only (written in 2023; the keys' entries are written now): 25 in pages of 10.
    got = await pages(api, limit=10, until=str(T0 + N))
    assert [len(p) for p in got] == [10, 10, 5]
    every = [e for page in got for e in page]
    assert seqs(every) == [api.seq(i) for i in range(N, 0, -1)]  # no repeat or gap, newest first
    everything = [e for page in await pages(api, limit=10) for e in page]
    assert seqs(everything) == list(range(api.seq(N), 0, -1))

    # Every field as stored and hashed: a client recomputes each hash and follows the links.
    by_seq = {e.seq: e for e in api.written}
    for e in every:
        assert e == by_seq[e["seq"]].to_json()
        assert entry_hash({k: v for k, v in e.items() if k != "hash"}) == e["hash"]
    for older, newer in itertools.pairwise(reversed(every)):
        assert newer["prev_hash"] == older["hash"]
    model = next(e for e in every if e["seq"] == api.seq(10))
    assert model["before"] == {"state": "registered"} and model["after"] == {"state": "active"}
    assert model["at"] == "2023-11-14T22:13:30.000000Z" and model["gateway"] == "gw-audit-api"
    key_entry = next(e for e in every if e["seq"] == api.seq(3))
    assert key_entry["before"] is None and key_entry["reason"] == ""

    # Entries appended between two pages come first next time, not inside the paging.
    first = await api.get("/api/v1/audit", limit=10)
    AuditRepository(api.store, "gw-audit-api").append(entry(26), at=T0 + 26)
    second = await api.get("/api/v1/audit", limit=10, cursor=first["next_cursor"])
    assert seqs(second["entries"]) == [api.seq(i) for i in range(15, 5, -1)]
    assert seqs((await api.get("/api/v1/audit", limit=1))["entries"]) == [api.seq(26)]


async def test_filters(api: Api) -> None:
    async def only(**params: Any) -> list[int]:
        # Within the time of our entries (the keys' own entries are written now).
        params.setdefault("until", str(T0 + N))
        got = [s for page in await pages(api, limit=4, **params) for s in seqs(page)]
        return [s - api.base for s in got]

    assert await only(action="model.activated") == [25, 20, 15, 10, 5]
    assert await only(action="model.") == [25, 20, 15, 10, 5]  # a prefix ends in "."
    assert await only(action="model") == []
    assert await only(action="apikey.created", actor="console:anna") == [
        24, 22, 18, 16, 14, 12, 8, 6, 4, 2
    ]  # fmt: skip
    assert await only(subject="apikey:000000000007") == [7]
    assert await only(subject="model:pump/15", action="apikey.") == []
    # since/until inclusive, ISO 8601 or epoch seconds.
    assert await only(since="2023-11-14T22:13:38Z") == [25, 24, 23, 22, 21, 20, 19, 18]
    assert await only(since=str(T0 + 3), until=str(T0 + 6)) == [6, 5, 4, 3]
    assert await only(since=str(T0 + 9), until=str(T0 + 3)) == []  # an empty range, no error
    assert await only(until="2023-11-14T22:13:22Z") == [2, 1]


async def test_only_admin_keys_read_the_ledger(api: Api) -> None:
    for path in ("/api/v1/audit", "/api/v1/audit/verify"):
        for scope in ("read", "operate"):
            r = await api.http.get(path, headers=api.auth(scope))
            assert r.status_code == 403, (path, scope, r.text)
            assert "needs scope 'admin'" in r.json()["detail"]
        r = await api.http.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await api.http.get(path, headers={"Authorization": "Bearer not-a-key"})
        assert r.status_code == 401
    spec = (await api.http.get("/openapi.json")).json()
    for path in ("/api/v1/audit", "/api/v1/audit/verify"):
        assert spec["paths"][path]["get"]["x-required-scope"] == "admin"


async def test_bad_parameters_are_refused(api: Api) -> None:
    for params in ({"cursor": "abc"}, {"limit": 0}, {"limit": 100000}, {"since": "soon"},
                   {"action": ""}, {"subject": "x" * 401}):  # fmt: skip
        r = await api.http.get("/api/v1/audit", params=params, headers=api.auth())
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_verify_says_ok_then_names_the_tampered_entry(api: Api) -> None:
    body = await api.get("/api/v1/audit/verify")
    last = api.seq(N)
    assert body["ok"] is True and body["entries"] == last and body["last_seq"] == last
    assert body["last_hash"] == api.written[-1].hash
    assert body["first_problem"] is None and body["problems"] == []
    assert body["signer_pinned"] is False
    assert (body["checkpoints"], body["unsigned_tail"]) == (0, last)

    with api.store.engine.begin() as conn:
        statement = text("UPDATE audit_entries SET reason = 'routine' WHERE seq = :k")
        conn.execute(statement, {"k": api.seq(12)})
    body = await api.get("/api/v1/audit/verify")
    assert body["ok"] is False
    problem = body["first_problem"]
    assert (problem["seq"], problem["kind"]) == (api.seq(12), "changed")
    assert f"entry {api.seq(12)} was changed" in problem["message"]
    assert body["problems"] == [body["first_problem"]]
