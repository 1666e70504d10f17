"""The API under abuse, on a real uvicorn server (127.0.0.1) and real stores: the key is checked
and the body size capped before a body is read, per-key rate and concurrency limits, bounded
history ranges with statement timeouts, API queries on their own threads (the data path's
thread calls never wait behind them), /tags built off the event loop, a health answer without
details for strangers, offline /docs and RFC 9457 problem details."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from stores import BACKENDS, PG_URL, pg_schema, temp_store
from support import LOOPBACK, free_port, wait_until

from bridge.api import ApiServices, create_app
from bridge.api.view import ModelInfo, TagState
from bridge.auth import Scope
from bridge.config.spec import ApiSettings
from bridge.runtime.apiserver import ApiServer
from bridge.store import Store, open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import QueryTimeoutError, statement_timeout
from bridge.store.history import PredictionHistory
from bridge.types import ComponentHealth, Prediction, Quality

MiB = 1024 * 1024
T0 = 1714564800.0  # 2024-05-01T12:00:00Z
PROBLEM = "application/problem+json"


@dataclass
class View:
    gateway_id: str = "gw-abuse"
    tags: list[TagState] = field(default_factory=list)
    start: float = field(default_factory=time.time)

    def tag_states(self) -> Sequence[TagState]:
        return self.tags

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return [ComponentHealth("plc1", "ok", "polling", {"polls": 7})]

    def started_at(self) -> float:
        return self.start


@dataclass
class Served:
    url: str
    port: int
    store: Store
    app: Any
    keys: dict[str, str]

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@contextlib.asynccontextmanager
async def serve(store: Store, view: View | None = None, **settings: Any) -> AsyncIterator[Served]:
    repo = ApiKeyRepository(store)
    keys = {s.label: repo.create(f"{s.label}-key", s)[1] for s in Scope}
    keys["other"] = repo.create("other-read", Scope.READ)[1]
    api = ApiSettings(host=LOOPBACK, port=free_port(), **settings)
    app = create_app(ApiServices.from_store(view or View(), store, api))
    server = ApiServer(app, api.host, api.port)
    await server.start()
    try:
        yield Served(server.url, api.port, store, app, keys)
    finally:
        await server.stop()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        yield s
    finally:
        s.dispose()


async def _head(port: int, head: str, body: bytes = b"") -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    return reader, writer


async def _status(reader: asyncio.StreamReader, within: float = 5.0) -> tuple[int, bytes]:
    """The status of the answer, which must come within ``within`` seconds."""
    async with asyncio.timeout(within):
        raw = await reader.readuntil(b"\r\n\r\n")
    code = int(raw.split(b" ", 2)[1])
    return code, raw


def _request(method: str, path: str, *headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", *headers]
    return "\r\n".join(lines) + "\r\n"


# -- the key and the size before the body --------------------------------------------------


async def test_no_key_gets_401_before_a_400_mib_body_is_sent(store: Store) -> None:
    async with serve(store) as api:
        for framing in ("Content-Length: 419430400", "Transfer-Encoding: chunked"):
            head = _request("POST", "/api/v1/apikeys", "Content-Type: application/json", framing)
            first = b"{" + b" " * (64 * 1024)
            if framing.startswith("Transfer"):
                first = f"{len(first):x}\r\n".encode() + first + b"\r\n"
            reader, writer = await _head(api.port, head, first)
            try:
                # Only 64 KiB of the 400 MiB were sent: the answer proves the body was not read.
                code, raw = await _status(reader)
                # ... and the server closed the connection instead of reading on.
                async with asyncio.timeout(5):
                    # A reset is a close too (the server dropped bytes it did not read).
                    with contextlib.suppress(ConnectionResetError):
                        await reader.read()
            finally:
                writer.close()
            assert code == 401, raw
            assert b"application/problem+json" in raw.lower()


async def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(store: Store) -> None:
    async with serve(store, max_body_bytes=MiB) as api:
        head = _request(
            "POST",
            "/api/v1/apikeys",
            f"Authorization: Bearer {api.keys['admin']}",
            "Content-Type: application/json",
            f"Content-Length: {MiB + 1}",
        )
        reader, writer = await _head(api.port, head)
        try:
            code, raw = await _status(reader)
        finally:
            writer.close()
        assert code == 413, raw


async def test_a_chunked_body_is_counted_while_it_streams(store: Store) -> None:
    async with serve(store, max_body_bytes=64 * 1024) as api:
        head = _request(
            "POST",
            "/api/v1/apikeys",
            f"Authorization: Bearer {api.keys['admin']}",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked",
        )
        chunk = b" " * 16 * 1024
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        # 96 KiB sent, the last chunk never: the server must stop at 64 KiB and answer.
        reader, writer = await _head(api.port, head, framed * 6)
        try:
            code, raw = await _status(reader)
        finally:
            writer.close()
        assert code == 413, raw
        # Under the cap, a chunked body is read as usual.
        body = json.dumps({"name": "small", "scope": "read"}).encode()
        async with httpx.AsyncClient(base_url=api.url, headers=api.auth(), timeout=10) as http:

            async def chunks() -> AsyncIterator[bytes]:
                yield body[:5]
                yield body[5:]

            r = await http.post(
                "/api/v1/apikeys", content=chunks(), headers={"Content-Type": "application/json"}
            )
        assert r.status_code == 201, r.text


# -- per-key rate and concurrency -----------------------------------------------------------


async def test_rate_limit_per_key_answers_429_with_retry_after(store: Store) -> None:
    async with (
        serve(store, rate_limit_per_s=0.2, rate_burst=3) as api,
        httpx.AsyncClient(base_url=api.url, timeout=10) as http,
    ):
        codes = [
            (await http.get("/api/v1/models", headers=api.auth("read"))).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 200]
        r = await http.get("/api/v1/models", headers=api.auth("read"))
        assert r.status_code == 429
        assert r.headers["content-type"] == PROBLEM
        assert 1 <= int(r.headers["Retry-After"]) <= 5
        assert "rate_limit_per_s" in r.json()["detail"]
        # Another key has its own budget.
        assert (await http.get("/api/v1/models", headers=api.auth("other"))).status_code == 200


async def test_concurrency_limit_per_key(store: Store) -> None:
    async with serve(store, max_concurrent_per_key=1) as api:
        entered, release = asyncio.Event(), asyncio.Event()

        async def slow() -> dict[str, str]:
            entered.set()
            await release.wait()
            return {"done": "yes"}

        api.app.add_api_route("/api/v1/test-slow", slow)
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            first = asyncio.create_task(http.get("/api/v1/test-slow", headers=api.auth("read")))
            async with asyncio.timeout(5):
                await entered.wait()
            r = await http.get("/api/v1/models", headers=api.auth("read"))
            assert r.status_code == 429, r.text
            assert r.headers["Retry-After"] == "1"
            assert "max_concurrent_per_key" in r.json()["detail"]
            assert (await http.get("/api/v1/models", headers=api.auth("other"))).status_code == 200
            release.set()
            assert (await first).status_code == 200
            assert (await http.get("/api/v1/models", headers=api.auth("read"))).status_code == 200


# -- history: bounded ranges and statement timeouts ----------------------------------------


async def test_a_too_wide_history_range_is_400(store: Store) -> None:
    async with (
        serve(store, max_history_days=31) as api,
        httpx.AsyncClient(base_url=api.url, headers=api.auth("read"), timeout=10) as http,
    ):
        wide = {"since": "2024-01-01T00:00:00Z", "until": "2024-06-01T00:00:00Z"}
        r = await http.get("/api/v1/predictions", params=wide)
        assert r.status_code == 400
        assert r.headers["content-type"] == PROBLEM
        assert "at most 31 days" in r.json()["detail"]
        # Open-ended from a moment more than 31 days ago: as wide as "until now".
        r = await http.get("/api/v1/predictions", params={"since": "2024-01-01T00:00:00Z"})
        assert r.status_code == 400
        ok = {"since": "2024-05-01T00:00:00Z", "until": "2024-05-31T00:00:00Z"}
        assert (await http.get("/api/v1/predictions", params=ok)).status_code == 200
        assert (await http.get("/api/v1/predictions")).status_code == 200
        r = await http.get("/api/v1/alerts/metrics", params=wide)
        assert r.status_code == 400, r.text


# A statement that runs for seconds whatever the indexes: counting in SQL.
_LONG = {
    "sqlite": "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) "
    "SELECT count(*) FROM c",
    "postgresql": "SELECT count(*) FROM generate_series(1, {n})",
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_statement_timeout_stops_a_long_statement(backend: str, tmp_path: Path) -> None:
    with temp_store(backend, tmp_path, prefix="bridge_abuse") as s:
        long = text(_LONG[backend].format(n=1_000_000_000))
        started = time.monotonic()
        with (
            pytest.raises(QueryTimeoutError, match=r"longer than 0\.2 s"),
            s.sessions() as session,
            statement_timeout(session, 0.2),
        ):
            session.execute(long)
        assert time.monotonic() - started < 10  # stopped, not run to its end (minutes)
        # The connection goes back to the pool clean: the same statement, shorter, without a
        # timeout, runs to its end on it.
        with s.sessions() as session:
            n = session.execute(text(_LONG[backend].format(n=200_000))).scalar_one()
        assert n == 200_000


@pytest.mark.parametrize(
    ("table", "path"), [("predictions", "/api/v1/predictions"), ("alerts", "/api/v1/alerts")]
)
async def test_a_history_query_past_the_timeout_is_503(table: str, path: str) -> None:
    """PostgreSQL: a lock held by another session keeps the history query waiting, and the
    wait counts towards the statement timeout."""
    with pg_schema("bridge_timeout") as schema:
        s = open_store(PG_URL, schema=schema)
        locker = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
        try:
            history = PredictionHistory(s, timeout_s=0.2)
            assert history.page(None, None, None, 10).items == []
            async with (
                serve(s, query_timeout_s=0.2) as api,
                httpx.AsyncClient(base_url=api.url, headers=api.auth("read"), timeout=30) as http,
            ):
                assert (await http.get(path)).status_code == 200
                with locker.connect() as conn:
                    conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
                    if table == "predictions":
                        with pytest.raises(QueryTimeoutError):
                            history.page(None, None, None, 10)
                    r = await http.get(path)
                    conn.rollback()
                assert (await http.get(path)).status_code == 200
        finally:
            locker.dispose()
            s.dispose()
    assert r.status_code == 503
    assert r.headers["content-type"] == PROBLEM
    assert "query_timeout_s" in r.json()["detail"]


# -- the data path never waits behind API queries ------------------------------------------


async def test_api_queries_cannot_starve_the_data_paths_threads(tmp_path: Path) -> None:
    """PostgreSQL: a lock held by another session blocks every API history query for as long
    as the test wants, without a timing threshold. While they are stuck, a thread call of the
    data path (asyncio.to_thread, as the store writer and relays use) must still finish."""
    with pg_schema("bridge_starve") as schema:
        s = open_store(PG_URL, schema=schema)
        locker = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
        try:
            async with (
                serve(s, query_threads=2, query_timeout_s=60, max_concurrent_per_key=64) as api,
                httpx.AsyncClient(base_url=api.url, headers=api.auth("read"), timeout=60) as http,
            ):
                assert (await http.get("/api/v1/predictions")).status_code == 200  # key cached
                with locker.connect() as conn:
                    conn.execute(text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))

                    def waiting() -> int:
                        with locker.connect() as c:
                            return int(
                                c.execute(
                                    text(
                                        "SELECT count(*) FROM pg_locks WHERE NOT granted "
                                        "AND relation = 'predictions'::regclass"
                                    )
                                ).scalar_one()
                            )

                    queries = [
                        asyncio.create_task(http.get("/api/v1/predictions")) for _ in range(40)
                    ]
                    await wait_until(
                        lambda: waiting() >= 2,
                        timeout=20,
                        what="API queries waiting on the lock",
                    )
                    data_path = asyncio.create_task(asyncio.to_thread(time.monotonic))
                    await asyncio.wait({data_path}, timeout=10)
                    finished_while_locked = data_path.done()
                    # While locked, only the refusals of the bounded queue have come back.
                    early = [q.result().status_code for q in queries if q.done()]
                    assert set(early) <= {503}, early
                    conn.rollback()  # releases the lock: the API queries go on
                    answers = await asyncio.gather(*queries)
                await data_path
        finally:
            locker.dispose()
            s.dispose()
    assert finished_while_locked, "a data-path thread call waited behind blocked API queries"
    codes = {r.status_code for r in answers}
    assert 200 in codes and codes <= {200, 503}, codes
    # Beyond the bounded queue the API says it is busy instead of queueing without end.
    busy = [r for r in answers if r.status_code == 503]
    assert all(r.headers["content-type"] == PROBLEM for r in busy)


# -- /tags off the event loop --------------------------------------------------------------


def _tags(n: int) -> list[TagState]:
    now = time.time()
    return [
        TagState(
            f"a{i // 100}.t{i % 100}",
            f"a{i // 100}",
            f"t{i % 100}",
            "plc1",
            float(i),
            "degC",
            Quality.GOOD,
            now,
            now,
            now,
            "",
        )
        for i in range(n)
    ]


@pytest.mark.serial
async def test_a_large_tags_answer_is_built_off_the_event_loop(store: Store) -> None:
    view = View(tags=_tags(100_000))
    # Long-lived like the gateway's own state, which it freezes out of the collector's walks
    # after start-up: a full collection here would stall every thread, the loop's too.
    gc.collect()
    gc.freeze()
    try:
        await _measure_tags_answer(store, view)
    finally:
        gc.unfreeze()


async def _measure_tags_answer(store: Store, view: View) -> None:
    async with serve(store, view) as api:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with httpx.AsyncClient(base_url=api.url, headers=api.auth("read"), timeout=60) as h:
            ticking = asyncio.create_task(ticker())
            started = time.monotonic()
            r = await h.get("/api/v1/tags")
            took = time.monotonic() - started
            stop.set()
            await ticking
    assert r.status_code == 200
    body = r.json()
    assert len(body) == 100_000 and body[0]["tag"] == "a0.t0" and body[0]["quality"] == "Good"
    # Relative, not a threshold: the loop never stalled for a large part of the request.
    assert max(gaps) < took / 4, (max(gaps), took)


# -- health, docs, problem details ---------------------------------------------------------


async def test_health_without_a_key_says_only_up_or_down(store: Store) -> None:
    async with (
        serve(store) as api,
        httpx.AsyncClient(base_url=api.url, timeout=10) as http,
    ):
        r = await http.get("/api/v1/health")
        assert (r.status_code, r.json()) == (200, {"status": "up"})
        r = await http.get("/api/v1/health", headers=api.auth("read"))
        body = r.json()
        assert body["gateway_id"] == "gw-abuse"
        assert body["components"][0]["counters"] == {"polls": 7}
        r = await http.get("/api/v1/health", headers={"X-API-Key": "brk_wrong"})
        assert r.status_code == 401
        assert r.headers["content-type"] == PROBLEM


async def test_docs_work_offline(store: Store) -> None:
    async with (
        serve(store) as api,
        httpx.AsyncClient(base_url=api.url, timeout=10) as http,
    ):
        page = await http.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""", page.text)
        assert urls, page.text
        for url in urls:
            assert url.startswith("/"), f"/docs refers to another host: {url}"
            assert not url.startswith("//"), url
            r = await http.get(url)
            assert r.status_code == 200, url
        assert "https://" not in page.text and "http://" not in page.text
        assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)


async def test_errors_are_rfc9457_problem_details(store: Store) -> None:
    async with (
        serve(store, max_body_bytes=1024) as api,
        httpx.AsyncClient(base_url=api.url, timeout=10) as http,
    ):
        read, admin = api.auth("read"), api.auth("admin")
        cases: list[tuple[int, httpx.Response]] = [
            (401, await http.get("/api/v1/tags")),
            (403, await http.get("/api/v1/apikeys", headers=read)),
            (404, await http.delete("/api/v1/apikeys/0123456789ab", headers=admin)),
            (404, await http.get("/api/v1/no-such-thing", headers=read)),
            (405, await http.delete("/api/v1/tags", headers=read)),
            (422, await http.get("/api/v1/predictions", params={"limit": 0}, headers=read)),
            (422, await http.post("/api/v1/apikeys", json={"name": ""}, headers=admin)),
            (413, await http.post("/api/v1/apikeys", content=b"x" * 2048, headers=admin)),
        ]
        for code, r in cases:
            assert r.status_code == code, (code, r.text)
            assert r.headers["content-type"] == PROBLEM, (code, r.headers)
            body = r.json()
            assert set(body) >= {"type", "title", "status", "detail", "instance"}, body
            assert body["status"] == code
            assert body["instance"] == r.request.url.path
            assert body["title"] and body["detail"] and body["type"]
        assert cases[0][1].headers["WWW-Authenticate"] == "Bearer"
        assert "needs scope 'admin'" in cases[1][1].json()["detail"]
        assert "limit" in cases[5][1].json()["detail"]


async def test_the_guard_answers_503_when_the_key_store_fails(store: Store) -> None:
    async with serve(store) as api:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE api_keys")
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            r = await http.get("/api/v1/models", headers=api.auth("read"))
    assert r.status_code == 503
    assert r.headers["content-type"] == PROBLEM
    assert "store" in r.json()["detail"]
