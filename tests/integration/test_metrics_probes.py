"""/metrics, /livez and /readyz of a whole gateway on real sockets: plant simulator (OPC UA) ->
bridge -> store, MES receiver and REST API. The scrape is parsed with prometheus_client's own
parser and its figures are checked against what happened (calls made, rows stored, calls the
MES received, a source stopped and restarted)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.mes.server import MesReceiver
from bridge.simulators.plant.physics import FaultPlan
from bridge.simulators.plant.server import PlantSimulator
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository

MODEL = Path(__file__).resolve().parents[2] / "mappings" / "models" / "pump_health.onnx"
PUMPS = 3
GRACE_S = 1.0

MAPPING = """
version: 1
gateway:
  id: metrics
  store: sqlite:///{store}
  api: {{host: 127.0.0.1, port: {api}}}
  default_max_age_s: 3
  probes: {{source_grace_s: {grace}}}
{metrics}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 50,
          reconnect: {{initial_backoff_s: 0.2, max_backoff_s: 0.5, probe_interval_s: 0.1}}}}
templates:
  pump:
    tags:
      vibration: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Vibration"}}
      bearing_temperature:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.BearingTemperature"
      discharge_pressure:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.DischargePressure"
      speed: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Speed"}}
assets:
{assets}
models:
  pump-health:
    file: {model}
    version: 1.0.0
    template: pump
    period_s: 0.3
    window_s: 5
    features:
      - {{tag: vibration, stat: mean}}
      - {{tag: vibration, stat: std}}
      - {{tag: vibration, stat: max}}
      - {{tag: bearing_temperature, stat: mean}}
      - {{tag: bearing_temperature, stat: slope}}
      - {{tag: discharge_pressure, stat: mean}}
      - {{tag: speed, stat: mean}}
outputs:
  mes: {{kind: mes-rest, url: "http://127.0.0.1:{mes}/api/v1/predictions"}}
"""


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def matching(samples: Samples, name: str) -> Iterator[tuple[dict[str, str], float]]:
    for (n, labels), v in samples.items():
        if n == name:
            yield dict(labels), v


@dataclass
class Plant:
    port: int
    sim: PlantSimulator | None = None

    async def start(self) -> None:
        self.sim = PlantSimulator(
            port=self.port,
            pumps=PUMPS,
            faulty=(2,),
            update_interval_s=0.1,
            fault=FaultPlan(start_s=0.5, ramp_s=2.0),
        )
        await self.sim.start()

    async def stop(self) -> None:
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None


@dataclass
class Running:
    gateway: Gateway
    plant: Plant
    mes: MesReceiver
    api: str
    metrics: str  # where /metrics is served
    db: Path


@contextlib.asynccontextmanager
async def gateway_with(tmp_path: Path, *, own_listener: bool) -> AsyncIterator[Running]:
    """A gateway whose plant is not started yet (the test starts it)."""
    ports = {k: free_port() for k in ("api", "plant", "mes", "scrape")}
    metrics = f"  metrics: {{listen: '127.0.0.1:{ports['scrape']}'}}" if own_listener else ""
    assets = "\n".join(
        f'  pump-{i:02d}: {{template: pump, vars: {{n: "{i:02d}"}}}}' for i in range(1, PUMPS + 1)
    )
    db = tmp_path / "bridge.db"
    text = MAPPING.format(
        store=db, assets=assets, model=MODEL, grace=GRACE_S, metrics=metrics, **ports
    )
    (tmp_path / "mapping.yaml").write_text(text)
    prepared = prepare(tmp_path / "mapping.yaml")
    plant = Plant(ports["plant"])
    mes = MesReceiver(port=ports["mes"])
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        await mes.start()
        stack.push_async_callback(mes.stop)
        stack.push_async_callback(plant.stop)
        gateway = await build_gateway(prepared)
        task = asyncio.create_task(gateway.run(stop))
        api = f"http://127.0.0.1:{ports['api']}"
        scrape = f"http://127.0.0.1:{ports['scrape']}" if own_listener else api
        try:
            await asyncio.wait_for(gateway.started.wait(), 20)
            yield Running(gateway, plant, mes, api, scrape, db)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


def _new_key(db: Path) -> str:
    store = open_store(f"sqlite:///{db}")
    try:
        return ApiKeyRepository(store).create("metrics", Scope.READ)[1]
    finally:
        store.dispose()


def _stored_by_label(db: Path) -> dict[tuple[str, str, str, str], int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT model, version, COALESCE(value_text, CASE WHEN value_num IS NULL "
            "THEN '' ELSE 'numeric' END), quality, COUNT(*) FROM predictions "
            "GROUP BY 1, 2, 3, 4"
        ).fetchall()
    return {(m, v, label, q): n for m, v, label, q, n in rows}


async def _scrape(http: httpx.AsyncClient, url: str) -> Samples:
    response = await http.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_scrape_after_an_end_to_end_run_matches_what_happened(tmp_path: Path) -> None:
    async with (
        gateway_with(tmp_path, own_listener=False) as run,
        httpx.AsyncClient(base_url=run.api, timeout=10) as http,
    ):
        # Up, but the plant is not there yet: alive, not ready, and the body says why.
        live = await http.get("/livez")
        assert live.status_code == 200 and live.json()["status"] == "alive"
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready"
        assert "never connected" in ready.json()["failing"]["source:plant"]
        first = await _scrape(http, run.metrics)
        assert value(first, "bridge_source_connected", source="plant", kind="opcua") == 0
        assert value(first, "bridge_tags", source="plant", quality="Bad") == PUMPS * 4

        await run.plant.start()

        async def is_ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await wait_until(is_ready, 20, what="/readyz 200 once the plant is connected")
        body = (await http.get("/readyz")).json()
        assert body == {"status": "ready", "models": {"pump-health": "1.0.0"}}
        g = run.gateway
        await wait_until(
            lambda: any(p.value == "bearing_fault" for p in g.fanout.latest.values()),
            30,
            what="pump-02 labelled bearing_fault",
        )
        await wait_until(
            lambda: len(run.mes.unique_keys) >= 20, 30, what="20 predictions at the MES"
        )

        # The API counter goes up by exactly the calls made, by route template and status.
        key = await asyncio.to_thread(_new_key, run.db)
        before = await _scrape(http, run.metrics)
        for _ in range(5):
            assert (await http.get("/api/v1/models", headers={"X-API-Key": key})).is_success
        for _ in range(2):
            assert (await http.get("/api/v1/models")).status_code == 401
        for alert in (101, 102, 103):
            await http.post(f"/api/v1/alerts/{alert}/ack", headers={"X-API-Key": key})
        after = await _scrape(http, run.metrics)
        route = "/api/v1/models"
        for status, calls in (("200", 5), ("401", 2)):
            counted = value(
                after, "bridge_api_requests_total", route=route, method="GET", status=status
            ) - value(before, "bridge_api_requests_total", route=route, method="GET", status=status)
            assert counted == calls, status
        timed = value(
            after, "bridge_api_request_duration_seconds_count", route=route, method="GET"
        ) - value(before, "bridge_api_request_duration_seconds_count", route=route, method="GET")
        assert timed == 7
        # Route templates, never raw paths: three alert ids are one series.
        acks = [labels for labels, _ in matching(after, "bridge_api_requests_total")]
        assert not any("101" in labels["route"] for labels in acks)
        assert any(labels["route"] == "/api/v1/alerts/{alert_id}/ack" for labels in acks)

        # Sources, tags, models and the store as they are.
        assert value(after, "bridge_source_connected", source="plant", kind="opcua") == 1
        assert value(after, "bridge_source_tag_updates_total", source="plant") > 0
        assert value(after, "bridge_tags", source="plant", quality="Good") == PUMPS * 4
        runs = value(after, "bridge_model_runs_total", model="pump-health", version="1.0.0")
        assert runs > 0
        assert (
            value(
                after,
                "bridge_model_run_duration_seconds_count",
                model="pump-health",
                version="1.0.0",
            )
            == runs
        )
        assert value(after, "bridge_store_write_duration_seconds_count") > 0
        assert value(after, "bridge_queue_depth", component="normalize") >= 0
        assert value(after, "bridge_component_state", component="source:plant", state="ok") == 1

        # The plant goes away: state 0, not ready once the grace is over; back: reconnected.
        await run.plant.stop()

        async def disconnected() -> bool:
            s = await _scrape(http, run.metrics)
            return value(s, "bridge_source_connected", source="plant", kind="opcua") == 0

        await wait_until(disconnected, 15, what="bridge_source_connected 0")
        await asyncio.sleep(GRACE_S + 0.2)
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert "disconnected" in ready.json()["failing"]["source:plant"]
        await run.plant.start()
        await wait_until(is_ready, 20, what="/readyz 200 after the plant came back")
        back = await _scrape(http, run.metrics)
        assert value(back, "bridge_source_connected", source="plant", kind="opcua") == 1
        assert value(back, "bridge_source_reconnects_total", source="plant") == 1
        assert value(back, "bridge_source_connection_failures_total", source="plant") >= 2
        ops = g.ops
        assert ops is not None

    # Stopped: every prediction is in the store and every delivery settled. The same
    # exposition, read from the stopped gateway's registry, matches the store and the MES.
    final = parse(generate_latest(ops.registry).decode())
    stored = _stored_by_label(run.db)
    counted = {
        (labels["model"], labels["version"], labels["label"], labels["quality"]): int(v)
        for labels, v in matching(final, "bridge_predictions_total")
    }
    assert counted == stored
    assert {label for _, _, label, _ in stored} >= {"healthy", "bearing_fault"}
    assert value(final, "bridge_store_predictions_written_total") == sum(stored.values())
    assert value(final, "bridge_store_predictions_dropped_total") == 0
    assert ("bridge_queue_dropped_total", frozenset({("component", "store")})) in final
    assert value(final, "bridge_queue_dropped_total", component="store") == 0
    delivered = value(final, "bridge_outbox_delivered_total", destination="mes")
    assert delivered == len(run.mes.unique_keys) > 0
    assert value(final, "bridge_outbox_dead_letters", destination="mes") == 0


async def test_own_scrape_listener_and_a_store_that_takes_no_write(tmp_path: Path) -> None:
    async with (
        gateway_with(tmp_path, own_listener=True) as run,
        httpx.AsyncClient(timeout=10) as http,
    ):
        await run.plant.start()

        async def is_ready() -> bool:
            return (await http.get(f"{run.metrics}/readyz")).status_code == 200

        await wait_until(is_ready, 20, what="/readyz 200 on the scrape listener")
        # /metrics has its own listener: the API port does not serve it; the probes stay.
        assert (await http.get(f"{run.api}/metrics")).status_code == 404
        assert (await http.get(f"{run.api}/readyz")).status_code == 200
        assert (await http.get(f"{run.api}/api/v1/health")).status_code == 200
        samples = await _scrape(http, run.metrics)
        counted = value(
            samples, "bridge_api_requests_total", route="/readyz", method="GET", status="200"
        )
        assert counted >= 1  # API requests are in the listener's scrape too
        assert (
            value(
                samples,
                "bridge_info",
                gateway="metrics",
                revision=next(labels["revision"] for labels, _ in matching(samples, "bridge_info")),
            )
            == 1
        )

        # Another writer holds the store's write lock: not ready, and the body names the store.
        with contextlib.closing(sqlite3.connect(run.db, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            try:
                ready = await http.get(f"{run.metrics}/readyz")
            finally:
                other.execute("ROLLBACK")
        assert ready.status_code == 503
        failing = ready.json()["failing"]
        assert set(failing) == {"store"}
        assert "takes no write" in failing["store"]
        await wait_until(is_ready, 10, what="/readyz 200 once the lock is released")
        assert (await http.get(f"{run.metrics}/livez")).json()["status"] == "alive"


@pytest.mark.parametrize("listen", ["9464", "localhost:", "host:70000"])
def test_metrics_listen_must_be_host_and_port(tmp_path: Path, listen: str) -> None:
    from bridge.config.spec import MetricsSettings

    with pytest.raises(ValueError, match="expected host:port"):
        MetricsSettings(listen=listen)
