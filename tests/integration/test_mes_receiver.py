"""The MES receiver simulator over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support import LOOPBACK, free_port

from bridge.simulators.mes import MesReceiver


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[MesReceiver]:
    mes = MesReceiver(port=free_port(), log_path=tmp_path / "logs" / "mes.jsonl")
    await mes.start()
    try:
        yield mes
    finally:
        await mes.stop()


@pytest.fixture
async def client(receiver: MesReceiver) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=receiver.url, timeout=5, trust_env=False) as c:
        yield c


async def post_event(client: httpx.AsyncClient, key: str | None, n: int) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await client.post("/api/v1/events", json={"n": n}, headers=headers)


async def test_records_calls_and_answers_duplicates_without_recording(
    receiver: MesReceiver, client: httpx.AsyncClient
) -> None:
    first = await post_event(client, "k-1", 1)
    repeat = await post_event(client, "k-1", 2)
    other = await client.post(
        "/api/v1/predictions", json={"n": 3}, headers={"Idempotency-Key": "k-2"}
    )

    assert first.status_code == 201
    assert repeat.status_code == 200
    assert other.status_code == 201
    assert [c.body for c in receiver.calls] == [{"n": 1}, {"n": 3}]
    assert [c.path for c in receiver.calls] == ["/api/v1/events", "/api/v1/predictions"]
    assert receiver.unique_keys == {"k-1", "k-2"}
    assert receiver.duplicate_count == 1
    assert (await client.get("/stats")).json() == {
        "count": 2,
        "unique": 2,
        "duplicates": 1,
        "requests": 3,
        "failed_on_purpose": 0,
        "max_in_flight": 1,  # one request after the other
    }
    calls = (await client.get("/calls")).json()
    assert [c["idempotency_key"] for c in calls] == ["k-1", "k-2"]
    assert all(abs(c["received_at"] - time.time()) < 60 for c in calls)


async def test_log_file_gets_one_json_line_per_recorded_call(
    receiver: MesReceiver, client: httpx.AsyncClient
) -> None:
    for i in range(3):
        await post_event(client, f"k-{i}", i)
    await post_event(client, "k-0", 99)  # duplicate: not logged again
    assert receiver.log_path is not None
    lines = receiver.log_path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["body"] for line in lines] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_fail_for_count_then_recovers(
    receiver: MesReceiver, client: httpx.AsyncClient
) -> None:
    r = await client.post("/control/fail", json={"status": 503, "count": 2, "retry_after": 7})
    assert r.status_code == 200
    answers = [await post_event(client, f"k-{i}", i) for i in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 201]
    assert answers[0].headers["Retry-After"] == "7"
    assert receiver.unique_keys == {"k-2"}


async def test_fail_until_recover(receiver: MesReceiver, client: httpx.AsyncClient) -> None:
    receiver.fail(500)
    assert [(await post_event(client, f"k-{i}", i)).status_code for i in range(4)] == [500] * 4
    assert (await client.post("/control/recover")).status_code == 200
    assert (await post_event(client, "k-9", 9)).status_code == 201
    assert receiver.unique_keys == {"k-9"}


async def test_bad_control_and_bad_json_are_400(
    receiver: MesReceiver, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/control/fail", json={"status": "x"})).status_code == 400
    assert (await client.post("/control/fail", json={"status": 200})).status_code == 400
    bad = await client.post(
        "/api/v1/events", content=b"{not json", headers={"Idempotency-Key": "b"}
    )
    assert bad.status_code == 400
    assert receiver.calls == []


async def test_delay_holds_answers_and_stop_is_prompt(tmp_path: Path) -> None:
    mes = MesReceiver(port=0)
    await mes.start()
    try:
        mes.set_delay(30)
        async with httpx.AsyncClient(base_url=mes.url, timeout=10, trust_env=False) as c:
            pending = asyncio.create_task(post_event(c, "slow", 1))
            await asyncio.sleep(0.3)
            assert not pending.done()
            started = time.monotonic()
            await mes.stop()
            assert time.monotonic() - started < 3
            response = await asyncio.wait_for(pending, 5)
            assert response.status_code == 503
    finally:
        await mes.stop()
    assert mes.calls == []


async def test_port_in_use_raises_os_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen(1)
        mes = MesReceiver(port=int(taken.getsockname()[1]))
        with pytest.raises(OSError):
            await mes.start()
        await mes.stop()
