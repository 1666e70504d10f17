"""Drift, explanations, operator feedback and lineage on a whole gateway with real sockets.

Plant simulator (OPC UA) -> bridge (a small regressor on three noisy pump signals, with drift
and explanations) -> its OPC UA server (DriftScore, Explanation, feedback methods), the MES
receiver (predictions and drift alerts), a second receiver as the retraining webhook, and the
REST API. Pump 3 develops an early bearing fault: its vibration drifts far from the reference
while its discharge pressure and speed stay normal. One input drifting alone keeps the scenario
deterministic: with two drifting together, which one crosses the threshold first depends on the
sampling phase (measured: either, a row or two apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from asyncua import Client, ua
from insight_models import (
    INSIGHT_FAULT,
    INSIGHT_FEATURES,
    INSIGHT_PUMPS,
    healthy_reference,
    linear_regressor,
)
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.mes.server import MesReceiver
from bridge.simulators.plant.server import PlantSimulator
from bridge.store import open_store
from bridge.store.alerts import AlertFilter, AlertRepository
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.history import PredictionHistory
from bridge.types import Quality

PUMPS = INSIGHT_PUMPS
# The model runs every 0.2 s on `last` values the plant updates every 0.1 s, so drift windows
# hold distinct samples; they are full (60 rows, 12 s) before the fault starts.
FAULTY = 3
FAULT_AT_S = INSIGHT_FAULT.start_s
WINDOW = 60
THRESHOLD = 1.0
MODEL = "pump-drift"
FEATURES = INSIGHT_FEATURES
SIGNALS = ("vibration", "discharge_pressure", "speed")

MAPPING = """
version: 1
gateway:
  id: insight
  store: sqlite:///{store}
  api: {{host: 127.0.0.1, port: {api}}}
  default_max_age_s: 3
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 50}}
templates:
  pump:
    tags:
      vibration:
        {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Vibration", unit: mm/s}}
      discharge_pressure:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.DischargePressure"
        unit: bar
      speed: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Speed", unit: rpm}}
assets:
{assets}
models:
  {model}:
    file: model.onnx
    version: 2.0.0
    template: pump
    period_s: 0.2
    window_s: 2
    min_window_s: 0.5
    outputs: {{value: value}}
    features:
      - {{tag: vibration, stat: last}}
      - {{tag: discharge_pressure, stat: last}}
      - {{tag: speed, stat: last}}
    reference: reference.json
    drift: {{window: {window}, threshold: {threshold}, webhook: "{webhook}"}}
    explain: {{mode: every, top: 3}}
outputs:
  hmi:
    kind: opcua-server
    endpoint: "opc.tcp://127.0.0.1:{hmi}"
    security_policies: ["None"]
    users:
      - {{username: viewer, password: v1ew-pw, role: reader}}
      - {{username: ops, password: 0ps-pw, role: operator}}
  mes: {{kind: mes-rest, url: "http://127.0.0.1:{mes}/api/v1/predictions"}}
"""


def _healthy_reference(path: Path) -> dict[str, dict[str, float]]:
    ref = healthy_reference()
    path.write_text(json.dumps(ref))
    feats: dict[str, dict[str, float]] = ref["features"]
    return feats


@dataclass
class Running:
    gateway: Gateway
    mes: MesReceiver
    webhook: MesReceiver
    api: str
    hmi: str
    db: Path
    mapping: Path
    model: Path
    fault_onset: float  # wall-clock time the fault starts (earliest estimate)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    ports = {k: free_port() for k in ("api", "plant", "hmi", "mes", "hook")}
    ref = _healthy_reference(tmp_path / "reference.json")
    model = linear_regressor(
        tmp_path / "model.onnx",
        [1.0, 0.5, 0.25],
        [ref[f]["mean"] for f in FEATURES],
        [ref[f]["std"] for f in FEATURES],
    )
    assets = "\n".join(f'  pump-{i:02d}: {{template: pump, vars: {{n: "{i:02d}"}}}}' for i in PUMPS)
    text = MAPPING.format(
        store=tmp_path / "bridge.db",
        assets=assets,
        model=MODEL,
        window=WINDOW,
        threshold=THRESHOLD,
        webhook=f"http://127.0.0.1:{ports['hook']}/api/v1/events",
        **ports,
    )
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(text)
    prepared = prepare(mapping)
    plant = PlantSimulator(
        port=ports["plant"],
        pumps=max(PUMPS),
        faulty=(FAULTY,),
        update_interval_s=0.1,
        fault=INSIGHT_FAULT,
    )
    mes = MesReceiver(port=ports["mes"])
    webhook = MesReceiver(port=ports["hook"])
    webhook.fail(503, count=2)  # the first two webhook calls fail: retried, delivered once
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        for service in (mes, webhook):
            await service.start()
            stack.push_async_callback(service.stop)
        onset = time.time() + FAULT_AT_S
        await plant.start()
        stack.push_async_callback(plant.stop)
        gateway = await build_gateway(prepared)
        task = asyncio.create_task(gateway.run(stop))
        try:
            await asyncio.wait_for(gateway.started.wait(), 20)
            yield Running(
                gateway,
                mes,
                webhook,
                f"http://127.0.0.1:{ports['api']}",
                f"opc.tcp://127.0.0.1:{ports['hmi']}",
                tmp_path / "bridge.db",
                mapping,
                model,
                onset,
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


def _keys(db: Path) -> tuple[str, str]:
    store = open_store(f"sqlite:///{db}")
    try:
        repo = ApiKeyRepository(store)
        return repo.create("mes", Scope.READ)[1], repo.create("shift-lead", Scope.OPERATE)[1]
    finally:
        store.dispose()


def _drift_alerts(db: Path) -> list[object]:
    store = open_store(f"sqlite:///{db}")
    try:
        return list(AlertRepository(store).page(AlertFilter(label="drift"), 100))
    finally:
        store.dispose()


def _stored_between(db: Path, asset: str, since: float, until: float) -> int:
    store = open_store(f"sqlite:///{db}")
    try:
        page = PredictionHistory(store).page(asset, since, until, 1000)
        return sum(1 for p in page.items if p.quality is Quality.GOOD and p.value is not None)
    finally:
        store.dispose()


async def _call(url: str, user: str, password: str, method: str, comment: str) -> list[object]:
    client = Client(url, timeout=5)
    client.set_user(user)
    client.set_password(password)
    async with client:
        ns = await client.get_namespace_index("urn:bridge:predictions")
        base = f"Predictions.pump-{FAULTY:02d}.{MODEL}"
        obj = client.get_node(ua.NodeId(base, ns))
        # The operator answers the prediction the HMI shows: its id goes with the call.
        shown = await client.get_node(ua.NodeId(f"{base}.PredictionId", ns)).read_value()
        result = await obj.call_method(ua.NodeId(f"{base}.{method}", ns), shown, comment)
        return result if isinstance(result, list) else [result]


async def _read(url: str, field: str) -> object:
    client = Client(url, timeout=5)
    client.set_user("viewer")
    client.set_password("v1ew-pw")
    async with client:
        ns = await client.get_namespace_index("urn:bridge:predictions")
        node = client.get_node(ua.NodeId(f"Predictions.pump-{FAULTY:02d}.{MODEL}.{field}", ns))
        return await node.read_value()


async def test_drift_explanations_feedback_and_lineage(running: Running) -> None:
    g = running.gateway
    faulty = f"pump-{FAULTY:02d}"

    # -- drift: one alert for the drifting pump, within two windows of the onset ----------
    await wait_until(
        lambda: bool(_drift_alerts(running.db)), 60, interval=0.5, what="a drift alert"
    )
    alerts = _drift_alerts(running.db)
    assert [a.asset for a in alerts] == [faulty]  # type: ignore[attr-defined]
    alert = alerts[0]
    rows_until_alert = _stored_between(
        running.db,
        faulty,
        running.fault_onset,
        alert.raised_at,  # type: ignore[attr-defined]
    )
    assert rows_until_alert <= 2 * WINDOW, rows_until_alert
    detail = json.loads(alert.detail)  # type: ignore[attr-defined]
    # Vibration alone drifts (PSI ~1.05 at the crossing); pressure and speed stay below 0.2.
    drifting = detail["drifting_features"]
    assert drifting == ["vibration.last"], drifting
    for steady in ("discharge_pressure.last", "speed.last"):
        assert detail["window"]["features"][steady]["psi"] < THRESHOLD, steady

    # The retraining webhook gets it once (after two failed attempts), the MES too.
    await wait_until(lambda: len(running.webhook.calls) >= 1, 20, what="webhook call")
    await wait_until(
        lambda: any(
            isinstance(c.body, dict) and c.body.get("event") == "drift" for c in running.mes.calls
        ),
        20,
        what="drift event at the MES",
    )
    await asyncio.sleep(2.0)  # more runs while drifting: still one call
    hook_calls = running.webhook.calls
    assert len(hook_calls) == 1 and running.webhook.duplicate_count == 0
    assert g.insight is not None
    [hook] = g.insight.webhooks
    assert hook.health().counters["retries"] == 2  # the two 503 answers, then accepted
    body = hook_calls[0].body
    assert hook_calls[0].idempotency_key == alert.prediction_id  # type: ignore[attr-defined]
    assert (body["model"], body["version"], body["asset"]) == (MODEL, "2.0.0", faulty)
    assert body["sha256"] == hashlib.sha256(running.model.read_bytes()).hexdigest()
    assert body["drifting_features"] == ["vibration.last"]
    stats = body["window"]["features"]["vibration.last"]
    # Raised while the window is still filling with drifted rows: its mean is already far off.
    assert stats["mean"] > stats["reference_mean"] + 5 * stats["reference_std"]
    assert body["window"]["rows"] == WINDOW
    mes_drift = [
        c for c in running.mes.calls if isinstance(c.body, dict) and c.body.get("event") == "drift"
    ]
    assert [c.idempotency_key for c in mes_drift] == [hook_calls[0].idempotency_key]
    for healthy in ("pump-01", "pump-04"):
        assert g.insight is not None
        monitor = g.insight.insights[MODEL].monitor
        assert monitor is not None and monitor.scores[healthy] < THRESHOLD

    # -- explanations: the drifting input is ranked first, in words ------------------------
    latest = g.fanout.latest[(faulty, MODEL)]
    assert latest.explanation is not None
    assert latest.explanation.top[0].feature == "vibration.last"
    assert latest.explanation.reason.startswith("vibration +")
    assert latest.explanation.reason.endswith("mm/s above normal")
    assert latest.drift_score is not None and latest.drift_score > THRESHOLD
    drift_node = await _read(running.hmi, "DriftScore")
    assert isinstance(drift_node, float) and drift_node > THRESHOLD
    assert str(await _read(running.hmi, "Explanation")).startswith("vibration +")

    # -- operator feedback over OPC UA: a reader is refused, an operator is stored ---------
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await _call(running.hmi, "viewer", "v1ew-pw", "Acknowledge", "seen")
    assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
    answered = await _call(running.hmi, "ops", "0ps-pw", "Reject", "sensor is fine, pump is not")
    rejected_id = str(answered[0])

    # -- REST: lineage, feedback (operate), metrics ------------------------------------------
    read_key, operate_key = _keys(running.db)
    read = {"Authorization": f"Bearer {read_key}"}
    operate = {"Authorization": f"Bearer {operate_key}"}
    async with httpx.AsyncClient(base_url=running.api, timeout=10) as http:

        async def stored(pid: str) -> bool:
            r = await http.get(f"/api/v1/predictions/{pid}", headers=read)
            return r.status_code == 200

        await wait_until(lambda: stored(rejected_id), 10, what="rejected prediction stored")
        r = await http.get(f"/api/v1/predictions/{rejected_id}", headers=read)
        record = r.json()
        assert record["lineage"] == {
            "mapping_revision": hashlib.sha256(running.mapping.read_bytes()).hexdigest(),
            "model_sha256": hashlib.sha256(running.model.read_bytes()).hexdigest(),
            "model_version": "2.0.0",
        }
        assert [i["tag"] for i in record["inputs"]] == [f"{faulty}.{s}" for s in SIGNALS]
        assert all(i["quality"] == "Good" and i["source_time"] for i in record["inputs"])
        assert all(isinstance(i["value"], float) for i in record["inputs"])
        assert record["explanation"]["top"][0]["feature"] == "vibration.last"
        assert record["drift_score"] > THRESHOLD
        [label] = record["labels"]
        assert (label["action"], label["by"], label["channel"]) == ("reject", "ops", "opcua")
        assert label["comment"] == "sensor is fine, pump is not"

        # REST feedback needs scope operate.
        ack = {"action": "acknowledge", "by": "anna"}
        r = await http.post(f"/api/v1/predictions/{rejected_id}/feedback", json=ack, headers=read)
        assert r.status_code == 403
        r = await http.post(
            f"/api/v1/predictions/{rejected_id}/feedback", json=ack, headers=operate
        )
        assert r.status_code == 201, r.text
        assert (r.json()["by"], r.json()["channel"]) == ("anna", "rest")
        r = await http.get(f"/api/v1/predictions/{rejected_id}", headers=read)
        assert [lb["action"] for lb in r.json()["labels"]] == ["reject", "acknowledge"]
        missing = "00000000-0000-5000-8000-000000000000"
        r = await http.get(f"/api/v1/predictions/{missing}", headers=read)
        assert r.status_code == 404

        r = await http.get("/api/v1/feedback/metrics", headers=read)
        metrics = r.json()
        assert metrics["with_feedback"] == 1 and metrics["rejected"] == 1
        assert metrics["acknowledged"] == 1
        assert metrics["mean_time_to_acknowledge_s"] >= 0
        assert 0 < metrics["autonomous_decision_coverage"] < 1
        assert metrics["autonomous_decision_coverage"] == pytest.approx(
            1 - 1 / metrics["predictions"]
        )

        r = await http.get("/api/v1/alerts", params={"label": "drift"}, headers=read)
        [item] = r.json()["items"]
        assert item["detail"]["drifting_features"] == ["vibration.last"]
