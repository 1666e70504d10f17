"""Hot reload of the mapping on real sockets: the plant simulator (OPC UA) and the PLC simulator
(Modbus) -> bridge -> its REST API, the mapping file rewritten while the gateway runs.

Two OPC UA sources read the same plant server: ``plant`` (pumps 1-2) never changes, ``plant2``
(pumps 3-4) loses pump 4 and gains pump 5; a Modbus source is added. The unchanged source keeps
its session and subscription, pump 1's window is the same object and its predictions go on
spaced by the period; pump 5 is predicted, pump 4 no longer; the stored predictions name the
new mapping revision. An invalid file is refused with file:line and the old mapping goes on.
SIGHUP on a real ``bridge run`` process and the file watch apply a change too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.connectors.opcua.source import OpcUaSource
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.runtime.runner import ModelRunner, TickOutcome
from bridge.runtime.sources import SourceSupervisor
from bridge.simulators.plant.server import PlantSimulator
from bridge.simulators.plc.server import PlcSimulator
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.types import Quality

MODEL = Path(__file__).resolve().parents[2] / "mappings" / "models" / "pump_health.onnx"
PERIOD_S = 0.5
ROOT = Path(__file__).resolve().parents[2]

HEAD = """
version: 1
gateway:
  id: reload
  store: sqlite:///{store}
  api: {{host: 127.0.0.1, port: {api}}}
  default_max_age_s: 3
  reload: {{watch: {watch}, watch_interval_s: 0.2}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 50}}
  plant2: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 50}}
"""
PLC = """  plc: {{kind: modbus, host: 127.0.0.1, port: {plc}, poll_interval_ms: 200}}
"""
BODY = """templates:
  pump:
    tags:
      vibration: {{source: "{{src}}", address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Vibration"}}
      bearing_temperature:
        source: "{{src}}"
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.BearingTemperature"
      discharge_pressure:
        source: "{{src}}"
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.DischargePressure"
      speed: {{source: "{{src}}", address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Speed"}}
assets:
{assets}
models:
  pump-health:
    file: {model}
    version: 1.0.0
    assets: [{model_assets}]
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
LINE = """  line:
    tags:
      flow_rate: {source: plc, address: {table: holding, address: 4, type: uint16}, scale: 0.1}
"""


def pump(n: int) -> str:
    return f"pump-{n:02d}"


def mapping_text(
    ports: dict[str, int],
    store: Path,
    pumps: dict[int, str],
    *,
    plc: bool = False,
    watch: bool = False,
) -> str:
    """``pumps``: pump number -> the source reading it."""
    assets = "\n".join(
        f'  {pump(n)}: {{template: pump, vars: {{n: "{n:02d}", src: {src}}}}}'
        for n, src in pumps.items()
    )
    if plc:
        assets += "\n" + LINE.rstrip("\n")
    text = HEAD.format(store=store, watch=str(watch).lower(), **ports)
    if plc:
        text += PLC.format(**ports)
    text += BODY.format(
        assets=assets,
        model=MODEL,
        model_assets=", ".join(pump(n) for n in pumps),
        period=PERIOD_S,
    )
    return text


V1 = {1: "plant", 2: "plant", 3: "plant2", 4: "plant2"}
V2 = {1: "plant", 2: "plant", 3: "plant2", 5: "plant2"}


@dataclass
class Ticks:
    """Prediction timestamps, sequence numbers and qualities per asset, as the runner made them."""

    at: dict[str, list[float]] = field(default_factory=dict)
    seq: dict[str, list[int]] = field(default_factory=dict)
    quality: dict[str, list[tuple[float, Quality]]] = field(default_factory=dict)

    def __call__(self, outcome: TickOutcome) -> None:
        for p in outcome.predictions:
            self.at.setdefault(p.asset, []).append(p.timestamp)
            self.seq.setdefault(p.asset, []).append(p.seq)
            self.quality.setdefault(p.asset, []).append((p.timestamp, p.quality))


@dataclass
class Rig:
    gateway: Gateway
    path: Path
    ports: dict[str, int]
    store: Path
    api: str
    key: str
    ticks: Ticks

    def write(self, pumps: dict[int, str], **kw: bool) -> str:
        text = mapping_text(self.ports, self.store, pumps, **kw)
        self.path.write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()

    def supervisor(self, name: str) -> SourceSupervisor:
        [found] = [s for s in self.gateway.supervisors if s.name == name]
        return found

    @property
    def runner(self) -> ModelRunner:
        [runner] = self.gateway.runners
        return runner

    def good(self) -> set[str]:
        return {p.asset for p in self.gateway.fanout.latest.values() if p.quality is Quality.GOOD}

    async def reload(self) -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as client:
            return await client.post(
                f"{self.api}/api/v1/reload", headers={"Authorization": f"Bearer {self.key}"}
            )


def _new_key(db: Path) -> str:
    store = open_store(f"sqlite:///{db}")
    try:
        return ApiKeyRepository(store).create("reload", Scope.ADMIN)[1]
    finally:
        store.dispose()


@contextlib.asynccontextmanager
async def simulators(ports: dict[str, int]) -> AsyncIterator[None]:
    plant = PlantSimulator(port=ports["plant"], pumps=5, faulty=(), update_interval_s=0.1)
    plc = PlcSimulator(port=ports["plc"], update_interval_s=3600)
    await plant.start()
    try:
        await plc.start()
        try:
            yield
        finally:
            await plc.stop()
    finally:
        await plant.stop()


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    watch = bool(getattr(request, "param", False))
    ports = {k: free_port() for k in ("api", "plant", "plc")}
    store = tmp_path / "bridge.db"
    path = tmp_path / "mapping.yaml"
    path.write_text(mapping_text(ports, store, V1, watch=watch))
    key = _new_key(store)
    prepared = prepare(path)
    stop = asyncio.Event()
    async with simulators(ports):
        gateway = await build_gateway(prepared)
        ticks = Ticks()
        gateway.runners[0].observers.append(ticks)
        task = asyncio.create_task(gateway.run(stop))
        try:
            await asyncio.wait_for(gateway.started.wait(), 20)
            rig = Rig(gateway, path, ports, store, f"http://127.0.0.1:{ports['api']}", key, ticks)
            await wait_until(lambda: rig.good() >= {pump(n) for n in V1}, 20, what="predictions")
            yield rig
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)


def _session(s: SourceSupervisor) -> tuple[object, int]:
    """The asyncua client object and subscription id of an OPC UA source's (only) session."""
    assert isinstance(s.source, OpcUaSource)
    [session] = s.source._sessions
    assert session.client is not None and session.subscription is not None
    return session.client, session.subscription.subscription_id


def _gaps(times: Sequence[float], after: float) -> list[float]:
    """Spacing of consecutive ticks around ``after`` (from the last tick before it on)."""
    start = max(0, max((i for i, t in enumerate(times) if t < after), default=0))
    return [b - a for a, b in zip(times[start:], times[start + 1 :], strict=False)]


async def _revision_of(rig: Rig, asset: str, after: float) -> str | None:
    """The lineage revision of ``asset``'s newest stored prediction, if made after ``after``."""
    async with httpx.AsyncClient(timeout=10) as client:
        headers = {"Authorization": f"Bearer {rig.key}"}
        page = await client.get(
            f"{rig.api}/api/v1/predictions", params={"asset": asset, "limit": 1}, headers=headers
        )
        found = page.json()
        if not found:
            return None
        [latest] = found
        made = datetime.fromisoformat(latest["timestamp"].replace("Z", "+00:00")).timestamp()
        if made <= after:
            return None
        detail = await client.get(f"{rig.api}/api/v1/predictions/{latest['id']}", headers=headers)
        revision = detail.json()["lineage"]["mapping_revision"]
        return revision if isinstance(revision, str) else None


async def test_reload_applies_a_changed_mapping_and_leaves_the_rest_running(rig: Rig) -> None:
    g = rig.gateway
    plant, plant2 = rig.supervisor("plant"), rig.supervisor("plant2")
    plant_session = _session(plant)
    plant_connects = plant.connects
    runner = rig.runner
    entry = g.table.get("pump-01.vibration")
    ring = entry.ring
    assert ring is not None and len(ring) > 0
    old_revision = g.reloader.revision if g.reloader else ""

    # Steady before the reload: pump-01's last ticks are Good (its window has filled).
    await wait_until(
        lambda: [q for _, q in rig.ticks.quality["pump-01"][-3:]] == [Quality.GOOD] * 3,
        15,
        what="pump-01 steady",
    )
    revision = rig.write(V2, plc=True)
    reloaded_at = g.table.wall_clock()
    model_task = g.tasks._tasks["model:pump-health"]
    response = await rig.reload()
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["previous_revision"], body["revision"]) == (old_revision, revision)
    assert body["changes"]["assets.added"] == ["pump-05", "line"]
    assert body["changes"]["assets.removed"] == ["pump-04"]
    assert body["changes"]["sources.added"] == ["plc"]
    assert body["changes"]["sources.changed"] == ["plant2"]
    assert body["changes"]["models.changed"] == ["pump-health"]
    assert "plant" not in body["changes"].get("sources.changed", [])

    # The unchanged source: the same supervisor, session and subscription, no new connect.
    assert rig.supervisor("plant") is plant
    assert _session(plant) == plant_session
    assert plant.connects == plant_connects
    # The changed one was restarted alone; the added one runs.
    assert rig.supervisor("plant2") is not plant2
    await wait_until(lambda: rig.supervisor("plc").state == "connected", 10, what="plc up")
    await wait_until(lambda: rig.supervisor("plant2").state == "connected", 10, what="plant2")

    # The added asset is predicted, the removed one no longer (nor is it a tag any more).
    await wait_until(lambda: "pump-05" in rig.good(), 20, what="pump-05 predicted")
    assert "pump-04.vibration" not in g.table.entries
    seen4 = len(rig.ticks.at["pump-04"])
    await asyncio.sleep(3 * PERIOD_S)
    assert len(rig.ticks.at["pump-04"]) == seen4
    await wait_until(
        lambda: g.table.get("line.flow_rate").quality is Quality.GOOD, 10, what="line tag"
    )

    # The model runner and its task are the same (its assets changed in place); pump-01's
    # window is kept, so its predictions stay Good, numbered without a hole, one per tick
    # (the bound on their spacing leaves room for a loaded machine's scheduling, not for a
    # restart: a window started over would make them Bad for `window_s`).
    assert rig.runner is runner
    assert g.tasks._tasks["model:pump-health"] is model_task
    assert g.table.get("pump-01.vibration").ring is ring
    await asyncio.sleep(2 * PERIOD_S)
    gaps = _gaps(rig.ticks.at["pump-01"], reloaded_at)
    assert len(gaps) >= 3
    assert max(gaps) < 3 * PERIOD_S, gaps
    seqs = rig.ticks.seq["pump-01"]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    after = [q for t, q in rig.ticks.quality["pump-01"] if t >= reloaded_at]
    assert after and all(q is Quality.GOOD for q in after), after

    # Lineage: predictions stored after the reload carry the new revision.
    async def stored_revision() -> bool:
        return await _revision_of(rig, "pump-05", reloaded_at) == revision

    await wait_until(stored_revision, 15, interval=0.3, what="pump-05 stored with revision")
    assert await _revision_of(rig, "pump-01", reloaded_at) == revision


async def test_an_invalid_mapping_is_refused_and_the_running_one_goes_on(rig: Rig) -> None:
    g = rig.gateway
    assert g.reloader is not None
    revision = g.reloader.revision
    good = rig.path.read_text()
    # An unknown statistic: refused with its file and line.
    bad = good.replace("stat: max}", "stat: maximum}")
    rig.path.write_text(bad)
    runs = rig.runner.runs
    response = await rig.reload()
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = response.json()["errors"]
    line = bad.splitlines().index("      - {tag: vibration, stat: maximum}") + 1
    assert len(errors) == 1 and errors[0].startswith(f"{rig.path}:{line}: "), errors
    assert "maximum" in errors[0]
    # `bridge validate` prints the very same lines.
    validate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "validate", str(rig.path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env(),
    )  # fmt: skip
    _, err = await asyncio.wait_for(validate.communicate(), 60)
    assert [line for line in err.decode().splitlines() if line.startswith(str(rig.path))] == errors

    # The running mapping goes on: same revision, the model keeps running, all pumps predicted.
    assert g.reloader.revision == revision
    await wait_until(lambda: rig.runner.runs >= runs + 3, 10, what="ticks after the refusal")
    assert rig.good() >= {pump(n) for n in V1}

    # `bridge reload` reports the same problems and exits 1.
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "reload", "--url", rig.api,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**_env(), "BRIDGE_API_KEY": rig.key},
    )  # fmt: skip
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 3, (out, err)  # EXIT_MAPPING
    assert errors[0] in err.decode()

    # Fixed, it applies; `bridge reload` says what changed.
    rig.path.write_text(good.replace(f"period_s: {PERIOD_S}", "period_s: 0.4"))
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "reload", "--url", rig.api,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**_env(), "BRIDGE_API_KEY": rig.key},
    )  # fmt: skip
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, (out, err)
    assert "models.changed: pump-health" in out.decode()
    assert g.reloader.revision != revision
    assert rig.runner.model.period_s == 0.4  # rebuilt: a new period


@pytest.mark.parametrize("rig", [True], indirect=True)
async def test_the_file_watch_applies_a_changed_file(rig: Rig) -> None:
    assert rig.gateway.reloader is not None
    revision = rig.write(V2, watch=True)
    await wait_until(
        lambda: rig.gateway.reloader is not None and rig.gateway.reloader.revision == revision,
        10,
        what="the watch reloaded",
    )
    await wait_until(lambda: "pump-05" in rig.good(), 20, what="pump-05 predicted")
    # A broken file is refused once (logged) and the running mapping stays.
    rig.path.write_text(rig.path.read_text().replace("stat: max", "stat: maximum"))
    await asyncio.sleep(1.0)
    assert rig.gateway.reloader.revision == revision
    assert rig.gateway.reloader.refusals == 1


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


async def test_sighup_reloads_a_running_bridge_process(tmp_path: Path) -> None:
    ports = {k: free_port() for k in ("api", "plant", "plc")}
    store = tmp_path / "bridge.db"
    path = tmp_path / "mapping.yaml"
    path.write_text(mapping_text(ports, store, V1))
    key = _new_key(store)
    headers = {"Authorization": f"Bearer {key}"}
    api = f"http://127.0.0.1:{ports['api']}"

    async def predicted(client: httpx.AsyncClient) -> set[str]:
        try:
            found = (await client.get(f"{api}/api/v1/predictions/latest", headers=headers)).json()
        except httpx.HTTPError:
            return set()
        return {p["asset"] for p in found if p["quality"] == "Good"}

    async with simulators(ports), httpx.AsyncClient(timeout=5) as client:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "--log-json", "run", str(path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=_env(),
        )  # fmt: skip
        try:

            async def has(assets: set[str]) -> bool:
                return (await predicted(client)) >= assets

            await wait_until(lambda: has({pump(n) for n in V1}), 40, 0.3, what="bridge run up")
            path.write_text(mapping_text(ports, store, V2))
            proc.send_signal(signal.SIGHUP)
            await wait_until(lambda: has({"pump-05"}), 30, 0.3, what="pump-05 after SIGHUP")
            assert proc.returncode is None  # SIGHUP reloads, it does not end the process
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b'"mapping_reloaded"' in err
