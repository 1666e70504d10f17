"""Hot reload of the outputs on real sockets: the plant simulator (OPC UA) -> bridge -> its own
OPC UA server (read by an asyncua client, as an HMI would) and MES receivers over HTTP, the
mapping file rewritten while the gateway runs and applied with ``POST /api/v1/reload``.

Pumps 1-4 run at first; the reload removes pump 4 and adds pump 5. The HMI server is the same
object across the reload: pump 5's nodes appear with the browse path they would have had at
start and get values, pump 4's are deleted (its subscriber is told BadNodeIdUnknown), and a
client subscribed to pump 1 keeps its session and gets values with no gap. An MES destination
added by a reload receives predictions; one removed leaves its undelivered events in the store
and the reload says how many; an unchanged one keeps its relay. A model added by a reload with
``drift:`` and ``explain:`` scores drift and explains like one present at start. ``gateway:``
changes are named by key, and the cheap ones are applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from asyncua import Client, ua
from insight_models import INSIGHT_FEATURES, healthy_reference, linear_regressor
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.mes.server import MesReceiver
from bridge.simulators.plant.server import PlantSimulator
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.outbox import OutboxRepository
from bridge.types import Quality

MODEL = Path(__file__).resolve().parents[2] / "mappings" / "models" / "pump_health.onnx"
PERIOD_S = 0.5
NS = "urn:bridge:predictions"

HEAD = """
version: 1
gateway:
  id: reload-out
  store: sqlite:///{store}
  api: {{host: 127.0.0.1, port: {api}}}
  default_max_age_s: 3
  probes: {{source_grace_s: {grace}}}
  retention: {{predictions_days: {days}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 50}}
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
    period_s: {period}
    window_s: 10
    features:
      - {{tag: vibration, stat: mean}}
      - {{tag: vibration, stat: std}}
      - {{tag: vibration, stat: max}}
      - {{tag: bearing_temperature, stat: mean}}
      - {{tag: bearing_temperature, stat: slope}}
      - {{tag: discharge_pressure, stat: mean}}
      - {{tag: speed, stat: mean}}
"""
# A small regressor over `last` values with a reference of the healthy fleet.
DRIFT = """  pump-drift:
    file: drift.onnx
    version: 1.0.0
    assets: [pump-01, pump-02]
    period_s: 0.2
    window_s: 2
    min_window_s: 0.5
    outputs: {value: value}
    features:
      - {tag: vibration, stat: last}
      - {tag: discharge_pressure, stat: last}
      - {tag: speed, stat: last}
    reference: reference.json
    drift: {window: 10, threshold: 0.5}
    explain: {mode: every, top: 2}
"""
HMI = """  hmi:
    kind: opcua-server
    endpoint: "opc.tcp://127.0.0.1:{hmi}"
    allow_anonymous: true
    security_policies: ["None"]
"""
MES = """  {name}: {{kind: mes-rest, url: "http://127.0.0.1:{port}/api/v1/predictions"}}
"""

V1 = (1, 2, 3, 4)
V2 = (1, 2, 3, 5)


def pump(n: int) -> str:
    return f"pump-{n:02d}"


@dataclass
class Plan:
    """What a mapping holds: pumps, MES destinations (name -> port), the drift model."""

    pumps: tuple[int, ...] = V1
    mes: dict[str, int] = field(default_factory=dict)
    drift: bool = False
    grace: float = 30.0
    days: float = 30.0
    api_port: int | None = None


@dataclass
class Rig:
    gateway: Gateway
    path: Path
    ports: dict[str, int]
    store: Path
    key: str
    plan: Plan

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def hmi(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.ports['hmi']}"

    def text(self, plan: Plan) -> str:
        ports = dict(self.ports)
        if plan.api_port is not None:
            ports["api"] = plan.api_port
        assets = "\n".join(
            f'  {pump(n)}: {{template: pump, vars: {{n: "{n:02d}"}}}}' for n in plan.pumps
        )
        text = HEAD.format(
            store=self.store,
            assets=assets,
            model=MODEL,
            period=PERIOD_S,
            grace=plan.grace,
            days=plan.days,
            **ports,
        )
        if plan.drift:
            text += DRIFT
        text += "outputs:\n" + HMI.format(**ports)
        for name, port in plan.mes.items():
            text += MES.format(name=name, port=port)
        return text

    def write(self, plan: Plan) -> None:
        self.path.write_text(self.text(plan))
        self.plan = plan

    async def reload(self, plan: Plan, edit: Callable[[str], str] = str) -> dict[str, Any]:
        """Write ``plan``'s mapping (changed by ``edit``) and reload it."""
        self.plan = plan
        self.path.write_text(edit(self.text(plan)))
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                f"{self.api}/api/v1/reload", headers={"Authorization": f"Bearer {self.key}"}
            )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def good(self, model: str = "pump-health") -> set[str]:
        return {
            p.asset
            for p in self.gateway.fanout.latest.values()
            if p.model == model and p.quality is Quality.GOOD
        }


def _new_key(db: Path) -> str:
    store = open_store(f"sqlite:///{db}")
    try:
        return ApiKeyRepository(store).create("reload", Scope.ADMIN)[1]
    finally:
        store.dispose()


def _drift_files(folder: Path) -> None:
    ref = healthy_reference()
    (folder / "reference.json").write_text(json.dumps(ref))
    feats = ref["features"]
    linear_regressor(
        folder / "drift.onnx",
        [1.0, 0.5, 0.25],
        [feats[f]["mean"] for f in INSIGHT_FEATURES],
        [feats[f]["std"] for f in INSIGHT_FEATURES],
    )


@pytest.fixture
async def mes_a() -> AsyncIterator[MesReceiver]:
    mes = MesReceiver(port=free_port())
    await mes.start()
    try:
        yield mes
    finally:
        await mes.stop()


@pytest.fixture
async def mes_b() -> AsyncIterator[MesReceiver]:
    mes = MesReceiver(port=free_port())
    await mes.start()
    try:
        yield mes
    finally:
        await mes.stop()


@contextlib.asynccontextmanager
async def running(tmp_path: Path, plan: Plan) -> AsyncIterator[Rig]:
    ports = {k: free_port() for k in ("api", "plant", "hmi")}
    store = tmp_path / "bridge.db"
    path = tmp_path / "mapping.yaml"
    _drift_files(tmp_path)
    key = _new_key(store)
    plant = PlantSimulator(port=ports["plant"], pumps=5, faulty=(), update_interval_s=0.1)
    await plant.start()
    stop = asyncio.Event()
    try:
        rig = Rig(None, path, ports, store, key, plan)  # type: ignore[arg-type]
        rig.write(plan)
        rig.gateway = await build_gateway(prepare(path))
        task = asyncio.create_task(rig.gateway.run(stop))
        try:
            await asyncio.wait_for(rig.gateway.started.wait(), 20)
            await wait_until(
                lambda: rig.good() >= {pump(n) for n in plan.pumps}, 20, what="predictions"
            )
            yield rig
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        await plant.stop()


class Notes:
    """Data changes an asyncua subscription delivered: (arrival time, node id, status name)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.seen.append(
            (time.monotonic(), str(node.nodeid.Identifier), _name(data.monitored_item.Value))
        )

    def of(self, identifier: str) -> list[tuple[float, str]]:
        return [(t, s) for t, i, s in self.seen if i == identifier]


def _hmi(g: Gateway) -> Any:
    [hmi] = [s for s in g.fanout.sinks if s.name == "hmi"]
    return hmi


def _value_id(asset: str, model: str = "pump-health") -> str:
    return f"Predictions.{asset}.{model}.Value"


def _id_of(asset: str) -> str:
    return f"Predictions.{asset}.pump-health.PredictionId"


async def _status_of(client: Client, ns: int, identifier: str) -> str:
    try:
        dv = await client.get_node(ua.NodeId(identifier, ns)).read_data_value(
            raise_on_bad_status=False
        )
    except ua.UaStatusCodeError as exc:
        return type(exc).__name__
    return _name(dv)


def _name(dv: ua.DataValue) -> str:
    # A Good value may come without a StatusCode (it is optional in a DataValue's encoding).
    return "Good" if dv.StatusCode is None else str(dv.StatusCode.name)


# Judges the gaps between a subscription's values across the reload (< 8 model periods). A
# subscription the reload broke gets no Good value again; a 2 s gap (4 periods) came from a
# machine loaded by other work, twice, with the values caught up right after.
@pytest.mark.serial
async def test_reload_adds_and_removes_hmi_nodes_and_keeps_subscriptions(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, Plan()) as rig, Client(rig.hmi, timeout=10) as client:
        g = rig.gateway
        hmi = _hmi(g)
        ns = await client.get_namespace_index(NS)
        notes = Notes()
        subscription = await client.create_subscription(50, notes)
        # PredictionId changes with every prediction (a label may stay the same for hours).
        kept = client.get_node(ua.NodeId(_id_of("pump-01"), ns))
        removed = client.get_node(ua.NodeId(_id_of("pump-04"), ns))
        await subscription.subscribe_data_change([kept, removed])
        await wait_until(
            lambda: sum(s == "Good" for _, s in notes.of(_id_of("pump-01"))) >= 3,
            15,
            what="pump-01 values at the HMI",
        )
        # Before: pump-05 has no node.
        assert await _status_of(client, ns, _value_id("pump-05")) == "BadNodeIdUnknown"

        reloaded_at = time.monotonic()
        body = await rig.reload(Plan(pumps=V2))
        assert body["changes"]["assets.added"] == ["pump-05"]
        assert body["changes"]["assets.removed"] == ["pump-04"]
        assert body["restart_needed"] == []
        assert "outputs.changed" not in body["changes"]

        # The same server object: the client's session and subscription were not touched.
        assert _hmi(g) is hmi
        # pump-05: nodes at the browse path a start would have made, with Good values.
        node = await client.nodes.objects.get_child(
            [f"{ns}:Predictions", f"{ns}:pump-05", f"{ns}:pump-health", f"{ns}:Value"]
        )
        assert node.nodeid == ua.NodeId(_value_id("pump-05"), ns)

        async def pump5_good() -> bool:
            return await _status_of(client, ns, _value_id("pump-05")) == "Good"

        await wait_until(pump5_good, 20, interval=0.2, what="pump-05 Good at the HMI")
        value = await node.read_value()
        assert isinstance(value, str) and value, value  # a class label
        # Its methods and its Models folder entry too.
        await client.nodes.objects.get_child(
            [f"{ns}:Predictions", f"{ns}:pump-05", f"{ns}:pump-health", f"{ns}:Acknowledge"]
        )
        await client.get_node(
            ua.NodeId("Models.pump-health.Agreement.pump-05", ns)
        ).read_browse_name()

        # pump-04: gone, and its subscriber saw it Bad last.
        assert await _status_of(client, ns, _value_id("pump-04")) == "BadNodeIdUnknown"
        assert await _status_of(client, ns, "Predictions.pump-04") == "BadNodeIdUnknown"
        assert await _status_of(client, ns, "Models.pump-health.Agreement.pump-04") == (
            "BadNodeIdUnknown"
        )
        await wait_until(
            lambda: [s for _, s in notes.of(_id_of("pump-04"))][-1] == "BadConfigurationError",
            10,
            what="pump-04's subscriber told",
        )

        # pump-01: its subscription went on across the reload, Good all along, at the period.
        await asyncio.sleep(4 * PERIOD_S)
        seen = [(t, s) for t, s in notes.of(_id_of("pump-01")) if t >= reloaded_at - 2 * PERIOD_S]
        assert [s for _, s in seen if s != "Good"] == [], seen
        around = [t for t, _ in seen]
        assert len(around) >= 6, around
        assert around[-1] > reloaded_at + 2 * PERIOD_S, around  # still coming after it
        gaps = [b - a for a, b in itertools.pairwise(around)]
        assert max(gaps) < 8 * PERIOD_S, gaps
        assert hmi.health().counters["write_errors"] == 0

        # An output that cannot start (its port is the API's) is named; the rest goes on.
        busy = HMI.replace("hmi:", "hmi2:").format(hmi=rig.ports["api"])
        body = await rig.reload(Plan(pumps=V2), lambda t: t + busy)
        assert body["changes"]["outputs.failed"] == ["hmi2"]
        assert body["restart_needed"] == ["outputs.hmi2"]
        assert _hmi(g) is hmi and [s.name for s in g.sinks] == ["hmi"]
        assert await _status_of(client, ns, _value_id("pump-05")) == "Good"


async def test_reload_starts_and_stops_mes_destinations(
    tmp_path: Path, mes_a: MesReceiver, mes_b: MesReceiver
) -> None:
    async with running(tmp_path, Plan(mes={"mes-a": mes_a.port})) as rig:
        g = rig.gateway
        outputs = g.outputs
        assert outputs is not None

        def relay(name: str) -> Any:
            found = [r for r in outputs.relays() if r.destination.name == name]
            return found[0] if found else None

        await wait_until(lambda: len(mes_a.calls) >= 3, 15, what="mes-a receives")
        relay_a = relay("mes-a")
        hmi = _hmi(g)

        # Added by a reload: mes-b receives predictions; mes-a and the HMI are not touched.
        body = await rig.reload(Plan(mes={"mes-a": mes_a.port, "mes-b": mes_b.port}))
        assert body["changes"]["outputs.added"] == ["mes-b"]
        await wait_until(lambda: len(mes_b.calls) >= 3, 15, what="mes-b receives")
        assert body["outbox_kept"] == {} and body["restart_needed"] == []
        # /metrics follows: the added destination's counters are scraped.
        async with httpx.AsyncClient(timeout=10) as client:
            scrape = (await client.get(f"{rig.api}/metrics")).text
        delivered = [
            line
            for line in scrape.splitlines()
            if line.startswith('bridge_outbox_delivered_total{destination="mes-b"}')
        ]
        assert delivered and float(delivered[0].split()[-1]) >= 1, delivered
        assert {c.body["asset"] for c in mes_b.calls} <= {pump(n) for n in V1}
        assert relay("mes-a") is relay_a
        assert _hmi(g) is hmi

        # mes-b fails for a while: its events wait in the outbox; then it is removed.
        mes_b.fail(503)
        outbox = OutboxRepository(open_store(f"sqlite:///{rig.store}"))

        def waiting() -> int:
            return outbox.pending_count("mes-b")

        await wait_until(lambda: waiting() >= 5, 15, what="mes-b backlog")
        body = await rig.reload(Plan(mes={"mes-a": mes_a.port}))
        assert body["changes"]["outputs.removed"] == ["mes-b"]
        kept = body["outbox_kept"]["mes-b"]
        assert kept >= 5
        # Its rows stay (nothing deletes them, nothing sends them), its relay is gone.
        assert relay("mes-b") is None
        assert waiting() == kept
        mes_b.recover()
        calls_b = len(mes_b.calls)
        calls_a = len(mes_a.calls)
        await asyncio.sleep(6 * PERIOD_S)
        assert len(mes_b.calls) == calls_b
        assert waiting() == kept
        assert len(mes_a.calls) > calls_a  # the unchanged destination goes on
        assert relay("mes-a") is relay_a

        # A changed destination is restarted alone: a new relay, and it goes on sending.
        url = f'url: "http://127.0.0.1:{mes_a.port}/api/v1/predictions"'
        body = await rig.reload(
            Plan(mes={"mes-a": mes_a.port}), lambda t: t.replace(url, f"{url}, timeout_s: 7")
        )
        assert body["changes"]["outputs.changed"] == ["mes-a"]
        assert relay("mes-a") is not relay_a
        assert _hmi(g) is hmi
        calls_a = len(mes_a.calls)
        await wait_until(lambda: len(mes_a.calls) >= calls_a + 3, 15, what="mes-a again")

        # gateway: keys by name; probes and retention are applied, the API port needs a restart.
        body = await rig.reload(
            Plan(mes={"mes-a": mes_a.port}, grace=5.0, days=7.0, api_port=free_port())
        )
        assert body["restart_needed"] == ["gateway.api.port"]
        assert sorted(body["changes"]["gateway.changed"]) == [
            "gateway.probes.source_grace_s",
            "gateway.retention.predictions_days",
        ]
        assert g.ops is not None and g.ops.source_grace_s == 5.0


async def test_a_model_added_by_a_reload_scores_drift_and_explains(tmp_path: Path) -> None:
    async with running(tmp_path, Plan()) as rig:
        g = rig.gateway
        assert g.insight is not None and "pump-drift" not in g.insight.insights
        body = await rig.reload(Plan(drift=True))
        assert body["changes"]["models.added"] == ["pump-drift"]

        def scored() -> bool:
            made = [p for p in g.fanout.latest.values() if p.model == "pump-drift"]
            return len(made) == 2 and all(
                p.drift_score is not None and p.explanation is not None for p in made
            )

        await wait_until(scored, 20, what="pump-drift drift scores and explanations")
        assert "pump-drift" in g.insight.insights
        assert g.insight.insights["pump-drift"].monitor is not None
        # Rebuilt (a new period): new parts, built the same way, scoring from its new ticks.
        first = g.insight.insights["pump-drift"]
        rebuilt_at = time.time()
        body = await rig.reload(
            Plan(drift=True), lambda t: t.replace("period_s: 0.2", "period_s: 0.25")
        )
        assert body["changes"]["models.changed"] == ["pump-drift"]
        assert g.insight.insights["pump-drift"] is not first
        [runner] = [r for r in g.runners if r.model.name == "pump-drift"]
        assert runner.model.period_s == 0.25
        assert runner.enrichers == [g.insight.insights["pump-drift"].enrich]
        await wait_until(
            lambda: all(
                p.timestamp > rebuilt_at and p.drift_score is not None
                for p in g.fanout.latest.values()
                if p.model == "pump-drift"
            ),
            20,
            what="the rebuilt model scores drift",
        )
        # Removed: its parts go too.
        await rig.reload(Plan())
        assert "pump-drift" not in g.insight.insights
