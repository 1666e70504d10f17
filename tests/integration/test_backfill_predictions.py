"""Predictions for a backfilled outage gap, flagged historical everywhere they leave the gateway.

A real asyncua server historizes the four pump tags (in memory) and moves them every 0.1 s; the
whole gateway (``build_gateway``: SQLite store, its OPC UA HMI server, the MES destination to
a real HTTP receiver, the REST API) reaches it through a fault proxy that resets every
connection for the length of the outage. The OPC UA source reads the gap from the server's
history after the reconnect (``backfill:``).

With the model's ``backfill: {predictions: true}`` the gateway then makes one prediction per
period across the gap, stamped with those past times and flagged historical: in the store, in
the MES bodies and in the REST history; the HMI node and the latest predictions keep the live
value. Without it the gap gets no prediction.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client, ua
from faultproxy import FaultProxy, Mode
from historian import historian
from pump_mapping import pump_mapping
from support import LOOPBACK, free_port, wait_until

from bridge.auth import Scope
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.mes.server import MesReceiver
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.history import PredictionHistory
from bridge.types import Prediction, Quality

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "mappings" / "models" / "pump_health.onnx"
# Plausible values of a healthy pump, each moving a little with every write.
BASE = {"vibration": 2.0, "bearing_temperature": 55.0, "discharge_pressure": 4.0, "speed": 1480.0}
WRITE_EVERY_S = 0.1
OUTAGE_S = float(os.environ.get("BRIDGE_TEST_BACKFILL_PREDICTIONS_OUTAGE_S", "10"))
ASSET, MODEL_NAME = "pump-a", "pump-health"


def _healthy(tag: str, count: int) -> float:
    return BASE[tag] * (1 + 0.01 * math.sin(count / 20))


@dataclass
class Running:
    gateway: Gateway
    proxy: FaultProxy
    mes: MesReceiver
    api: str
    hmi: str
    db: Path


@contextlib.asynccontextmanager
async def _running(tmp_path: Path, *, predictions: bool) -> AsyncIterator[Running]:
    ports = {k: free_port() for k in ("api", "hmi", "mes")}
    async with (
        historian(_healthy, period_s=WRITE_EVERY_S) as plant,
        FaultProxy(LOOPBACK, plant.port) as proxy,
    ):
        db = tmp_path / "bridge.db"
        text = pump_mapping(
            store=db,
            model=MODEL,
            port=proxy.port,
            gateway=[f"api: {{host: 127.0.0.1, port: {ports['api']}}}", "default_max_age_s: 3"],
            timing={"period_s": 1, "window_s": 5, "min_window_s": 2, "max_samples": 10_000},
        ).replace(
            f'endpoint: "opc.tcp://127.0.0.1:{proxy.port}"}}',
            f'endpoint: "opc.tcp://127.0.0.1:{proxy.port}", timeout_s: 2, backfill: {{}}}}',
        )
        if predictions:
            text = text.replace(
                "    template: pump\n", "    template: pump\n    backfill: {predictions: true}\n"
            )
        text += (
            "outputs:\n"
            f'  hmi: {{kind: opcua-server, endpoint: "opc.tcp://127.0.0.1:{ports["hmi"]}", '
            'allow_anonymous: true, security_policies: ["None"]}\n'
            f'  mes: {{kind: mes-rest, url: "http://127.0.0.1:{ports["mes"]}/api/v1/predictions"}}\n'
        )
        (tmp_path / "mapping.yaml").write_text(text)
        prepared = prepare(tmp_path / "mapping.yaml")
        mes = MesReceiver(port=ports["mes"])
        await mes.start()
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        try:
            gateway = await build_gateway(prepared)
            task = asyncio.create_task(gateway.run(stop))
            await asyncio.wait_for(gateway.started.wait(), 30)
            await wait_until(
                lambda: _live_good(gateway) is not None, 30, what="a Good live prediction"
            )
            yield Running(
                gateway,
                proxy,
                mes,
                f"http://127.0.0.1:{ports['api']}",
                f"opc.tcp://127.0.0.1:{ports['hmi']}",
                db,
            )
        finally:
            stop.set()
            if task is not None:
                await asyncio.wait_for(task, 30)
            await mes.stop()


def _live_good(g: Gateway) -> Prediction | None:
    p = g.fanout.latest.get((ASSET, MODEL_NAME))
    return p if p is not None and p.quality is Quality.GOOD else None


async def _outage(r: Running, seconds: float) -> tuple[float, float]:
    """The link down for ``seconds``; returns (wall time the loss was seen, back Good)."""
    table = r.gateway.table
    r.proxy.set_mode(Mode.RST)
    await wait_until(
        lambda: table.get(f"{ASSET}.vibration").quality is Quality.BAD, 15, what="loss seen"
    )
    lost = time.time()
    await asyncio.sleep(seconds)
    r.proxy.set_mode(Mode.PASS)
    await wait_until(
        lambda: table.get(f"{ASSET}.vibration").quality is Quality.GOOD,
        60,
        what="values after the outage",
    )
    return lost, time.time()


def _stored(db: Path, since: float) -> list[Prediction]:
    """Every stored prediction of the asset since ``since``, oldest first (a second store
    handle on the gateway's SQLite file)."""
    store = open_store(f"sqlite:///{db}")
    try:
        history = PredictionHistory(store)
        out: list[Prediction] = []
        after = None
        while True:
            page = history.page(ASSET, since, None, 1000, after)
            out += page.items
            if page.next_key is None:
                return sorted(out, key=lambda p: (p.timestamp, p.seq))
            after = page.next_key
    finally:
        store.dispose()


def _new_key(db: Path) -> str:
    store = open_store(f"sqlite:///{db}")
    try:
        return ApiKeyRepository(store).create("backfill", Scope.READ)[1]
    finally:
        store.dispose()


async def _hmi_value(url: str) -> ua.DataValue:
    async with Client(url, timeout=5) as client:
        ns = await client.get_namespace_index("urn:bridge:predictions")
        node = client.get_node(ua.NodeId(f"Predictions.{ASSET}.{MODEL_NAME}.Value", ns))
        value: ua.DataValue = await node.read_data_value(raise_on_bad_status=False)
        return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@pytest.mark.serial
@pytest.mark.timeout(180 + 2 * OUTAGE_S)
async def test_gap_predictions_are_stored_sent_and_served_flagged_historical(
    tmp_path: Path,
) -> None:
    async with _running(tmp_path, predictions=True) as r:
        g = r.gateway
        [runner] = g.runners
        started = time.time()
        lost, back = await _outage(r, OUTAGE_S)
        await wait_until(lambda: runner.past_made > 0, 30, what="predictions for the past")
        made = runner.past_made
        await wait_until(
            lambda: sum(1 for c in r.mes.calls if c.body.get("historical")) >= made,
            30,
            what="the historical predictions at the MES",
        )
        # Live ticks go on after the past: the next live prediction comes after them.
        await wait_until(
            lambda: (p := _live_good(g)) is not None and p.timestamp > back,
            15,
            what="a live prediction after the reconnect",
        )
        stored = await asyncio.to_thread(_stored, r.db, started)
        hmi = await _hmi_value(r.hmi)
        key = await asyncio.to_thread(_new_key, r.db)
        async with httpx.AsyncClient(
            base_url=r.api, timeout=10, headers={"X-API-Key": key}
        ) as http:
            listed = await http.get(
                "/api/v1/predictions",
                params={"asset": ASSET, "since": _iso(started), "limit": 1000},
            )
            latest = await http.get("/api/v1/predictions/latest", params={"asset": ASSET})
        sinks = {s.name: s.health().counters for s in g.sinks}

    past = [p for p in stored if p.historical]
    # One per period across the gap, at the period's multiples on the wall clock, all Good:
    # every input has history there. The gap runs from the last value seen before the loss
    # (at most the loss detection before ``lost``) to the first one after the reconnect.
    stamps = [p.timestamp for p in past]
    assert len(past) == made >= OUTAGE_S - 2
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(stamps))
    assert all(t == round(t) for t in stamps)
    assert lost - 15 < stamps[0] and stamps[-1] < back
    assert all(p.quality is Quality.GOOD and p.value is not None for p in past)
    # The live predictions of the outage stay as they were: Bad, inputs lost.
    during = [p for p in stored if not p.historical and stamps[0] <= p.timestamp <= stamps[-1]]
    assert during and all(p.quality is Quality.BAD for p in during)
    # Sequence numbers: the past ones after the live ones of the outage, in time order.
    assert [p.seq for p in past] == sorted(p.seq for p in past)
    assert min(p.seq for p in past) > max(p.seq for p in during)

    # MES: each historical prediction once, with `historical: true` and its past timestamp.
    sent: dict[str, dict[str, Any]] = {
        c.body["id"]: c.body for c in r.mes.calls if c.body.get("historical")
    }
    assert set(sent) == {p.id for p in past}
    for p in past:
        assert sent[p.id]["timestamp"] == _iso(p.timestamp).replace("+00:00", ".000Z")
    assert all(c.body["historical"] is False for c in r.mes.calls if c.body["id"] not in sent)
    assert r.mes.duplicate_count == 0

    # REST: the history shows the flag; the latest is a live prediction.
    assert listed.status_code == 200
    flagged = {p["id"] for p in listed.json() if p["historical"]}
    assert flagged == {p.id for p in past}
    assert latest.status_code == 200
    [newest] = latest.json()
    assert newest["historical"] is False
    assert datetime.fromisoformat(newest["timestamp"]).timestamp() > back

    # The HMI shows the live value: the past was not written to its node.
    assert sinks["hmi"]["historical"] == len(past)
    assert hmi.SourceTimestamp is not None and hmi.SourceTimestamp.timestamp() > back


@pytest.mark.serial
@pytest.mark.timeout(120 + 2 * OUTAGE_S)
async def test_without_the_option_the_gap_gets_no_prediction(tmp_path: Path) -> None:
    async with _running(tmp_path, predictions=False) as r:
        g = r.gateway
        started = time.time()
        _, back = await _outage(r, 4)
        await wait_until(lambda: g.table.backfilled > 0, 30, what="the gap backfilled")
        await wait_until(
            lambda: (p := _live_good(g)) is not None and p.timestamp > back,
            15,
            what="a live prediction after the reconnect",
        )
        stored = await asyncio.to_thread(_stored, r.db, started)
        assert g.runners[0].past_made == 0
    assert stored and not any(p.historical for p in stored)
    assert not any(c.body.get("historical") for c in r.mes.calls)
