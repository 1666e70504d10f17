"""Canaries across a fleet and their guards, against the plant simulator.

Two real ``bridge run`` processes share one PostgreSQL database: a candidate put on canary by a
share of assets is served to exactly the same assets by both (each reads the registry on its
own; the assignment is a stable hash, nothing is exchanged). And a running gateway rolls a
canary back by itself when its guard metric crosses the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, select
from stores import PG_URL, pg_schema
from support import free_port, wait_until

from bridge.auth import Scope
from bridge.inference.model import file_sha256
from bridge.lifecycle.canary import canary_assets
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.plant.model_variants import write_variants
from bridge.simulators.plant.server import PlantSimulator
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import Store
from bridge.store.registry import ComparisonRow, ModelVersionRow, RegistryRepository
from bridge.store.tables import PredictionRow
from bridge.types import Quality

pytestmark = pytest.mark.timeout(150)

BRIDGE = [sys.executable, "-m", "bridge"]
MODEL = "pump-health"
PUMPS = 6
# On the asset ids pump-01..pump-06 a 70 % share picks some pumps but not all (asserted below,
# not assumed): the test needs a non-trivial split to show that the two processes agree.
SHARE = 70.0

MAPPING = """
version: 1
gateway:
  id: {gateway_id}
  store: "{store}"
  api: {{host: 127.0.0.1, port: {api}}}
  models: {{poll_s: {poll_s}}}
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
    version: "1"
    template: pump
    period_s: 0.3
    window_s: 3
    features:
      - {{tag: vibration, stat: mean}}
      - {{tag: vibration, stat: std}}
      - {{tag: vibration, stat: max}}
      - {{tag: bearing_temperature, stat: mean}}
      - {{tag: bearing_temperature, stat: slope}}
      - {{tag: discharge_pressure, stat: mean}}
      - {{tag: speed, stat: mean}}
"""


def _mapping(path: Path, pumps: int, **values: Any) -> Path:
    assets = "\n".join(
        f'  pump-{i:02d}: {{template: pump, vars: {{n: "{i:02d}"}}}}' for i in range(1, pumps + 1)
    )
    path.write_text(MAPPING.format(assets=assets, **values))
    return path


def _assets(pumps: int) -> list[str]:
    return [f"pump-{i:02d}" for i in range(1, pumps + 1)]


# -- two gateway processes sharing PostgreSQL ---------------------------------------------------


@contextlib.contextmanager
def _pg_schema() -> Iterator[str]:
    """A fresh schema, migrated once here, so the two gateways do not race to create tables;
    dropped afterwards with everything in it. The URL selects it through ``search_path``."""
    with pg_schema("bridge_fleet") as schema:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"


class Proc:
    """A ``bridge`` child process whose output goes to a file (a pipe nobody reads would block
    its logging), stopped with SIGTERM, then SIGKILL if it does not end in time."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log

    @classmethod
    async def start(cls, log: Path, *args: str) -> Proc:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *BRIDGE, *args, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env
            )
        return cls(proc, log)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


async def _cli(*args: str) -> str:
    """One ``bridge models ...`` command as its own process; its output, or the test fails."""
    proc = await asyncio.create_subprocess_exec(
        *BRIDGE, "models", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = out.decode(errors="replace")
    assert proc.returncode == 0, output
    return output


async def _latest(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """The latest prediction per asset, as this gateway's REST API shows it."""
    r = await http.get("/api/v1/predictions/latest")
    r.raise_for_status()
    return {p["asset"]: p for p in r.json() if p["model"] == MODEL}


async def test_canary_assignment_is_identical_in_two_processes_sharing_postgresql(
    tmp_path: Path,
) -> None:
    models = write_variants(tmp_path / "models")
    plant = PlantSimulator(port=free_port(), pumps=PUMPS, update_interval_s=0.1)
    procs: list[Proc] = []
    with _pg_schema() as url:
        store = open_store(url)
        try:
            key = ApiKeyRepository(store).create("fleet-test", Scope.ADMIN)[1]
        finally:
            store.dispose()
        await plant.start()
        try:
            gateways = []
            for gid in ("fleet-a", "fleet-b"):
                api = free_port()
                mapping = _mapping(
                    tmp_path / f"{gid}.yaml",
                    PUMPS,
                    gateway_id=gid,
                    store=url,
                    api=api,
                    plant=plant.port,
                    model=models["pump_health_v1"],
                    poll_s=0.5,
                )
                procs.append(await Proc.start(tmp_path / f"{gid}.log", "run", str(mapping)))
                gateways.append(f"http://127.0.0.1:{api}")
            clients = [
                httpx.AsyncClient(base_url=api, timeout=3, headers={"X-API-Key": key})
                for api in gateways
            ]
            try:
                await _run_fleet(procs, clients, url, models)
            finally:
                for http in clients:
                    await http.aclose()
        finally:
            codes = [await p.stop() for p in procs]
            await plant.stop()
    assert codes == [0, 0], "\n\n".join(p.tail() for p in procs)


async def _run_fleet(
    procs: list[Proc],
    clients: list[httpx.AsyncClient],
    url: str,
    models: dict[str, Path],
) -> None:
    assets = _assets(PUMPS)
    # One engine for the test's own reads of the shared database.
    engine = create_engine(url)
    try:
        await _fleet_checks(procs, clients, url, models, engine, assets)
    finally:
        engine.dispose()


async def _fleet_checks(
    procs: list[Proc],
    clients: list[httpx.AsyncClient],
    url: str,
    models: dict[str, Path],
    engine: Engine,
    assets: list[str],
) -> None:
    def all_serving(versions: set[str]) -> Any:
        async def check() -> bool:
            for proc, http in zip(procs, clients, strict=True):
                if proc.proc.returncode is not None:
                    raise AssertionError(f"gateway exited:\n{proc.tail()}")
                try:
                    latest = await _latest(http)
                except httpx.HTTPError:
                    return False
                if set(latest) != set(assets) or any(
                    p["quality"] != "Good" for p in latest.values()
                ):
                    return False
                if not {p["version"] for p in latest.values()} & versions:
                    return False
            return True

        return check

    def seeded() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(select(ModelVersionRow.id)).first())

    await wait_until(lambda: asyncio.to_thread(seeded), 60, 0.2, "the mapping's model seeded")
    # Registered by a third process, the CLI, while the gateways fill their windows.
    v2 = str(models["pump_health_v2"])
    register = asyncio.create_task(
        _cli(
            "register",
            v2,
            "--name",
            MODEL,
            "--version",
            "2",
            "--store",
            url,
            "--models-dir",
            str(models["pump_health_v2"].parent),
        )
    )
    try:
        await wait_until(all_serving({"1"}), 60, 0.2, "both gateways predicting with version 1")
    finally:
        out = await register
    expected = f"registered {MODEL} 2 sha256={file_sha256(models['pump_health_v2'])}"
    assert expected in out.splitlines(), out

    # Both seeded the mapping's model at once; the registry holds it once, active.
    r = await clients[1].get(f"/api/v1/models/{MODEL}/versions")
    assert r.status_code == 200, r.text
    assert [(v["version"], v["state"]) for v in r.json()] == [("1", "active"), ("2", "registered")]

    # The canary is started through gateway A's API; gateway B learns it from the database.
    r = await clients[0].post(
        f"/api/v1/models/{MODEL}/canary", json={"version": "2", "share": SHARE}
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "canary"

    await wait_until(all_serving({"2"}), 20, 0.1, "both gateways serving the canary somewhere")
    # A snapshot may straddle the tick that switched; once every asset has a newer prediction
    # than in that snapshot, all of them come from the canary deployment.
    switched = [await _latest(http) for http in clients]

    served: list[dict[str, str]] = []

    async def all_after_switch() -> bool:
        snapshots = []
        for http, seen in zip(clients, switched, strict=True):
            latest = await _latest(http)
            if any(latest[a]["seq"] <= seen[a]["seq"] for a in assets):
                return False
            if any(p["quality"] != "Good" for p in latest.values()):
                return False  # e.g. a reconnect to the plant: wait for the next Good tick
            snapshots.append({a: str(p["version"]) for a, p in latest.items()})
        served[:] = snapshots
        return True

    await wait_until(all_after_switch, 10, 0.1, "a full Good tick after the switch on both")
    on_canary = [{a for a, v in s.items() if v == "2"} for s in served]
    assert on_canary[0] == on_canary[1], served
    assert set().union(*(set(s.values()) for s in served)) == {"1", "2"}, served
    assert set() < on_canary[0] < set(assets), "the split must be non-trivial"
    # ... and it is the documented assignment: a stable hash of (model, asset).
    assert on_canary[0] == canary_assets(MODEL, assets, SHARE)

    # Both recorded their canary comparisons in the one database, each under its own gateway
    # id, and neither ran the candidate for an asset outside the canary.
    # (Written after each tick's publish: the last tick's rows may still be on their way.)
    def canary_rows() -> dict[str, set[str]]:
        with engine.connect() as conn:
            stored = conn.execute(
                select(ComparisonRow.gateway, ComparisonRow.asset)
                .where(ComparisonRow.candidate_version == "2", ComparisonRow.mode == "canary")
                .distinct()
            ).all()
        by_gateway: dict[str, set[str]] = {}
        for gateway, asset in stored:
            by_gateway.setdefault(gateway, set()).add(asset)
        return by_gateway

    per_gateway = {"fleet-a": on_canary[0], "fleet-b": on_canary[0]}

    async def compared() -> bool:
        return await asyncio.to_thread(canary_rows) == per_gateway

    with contextlib.suppress(AssertionError):
        await wait_until(compared, 10, 0.2, "canary comparisons of both gateways stored")
    assert await asyncio.to_thread(canary_rows) == per_gateway


# -- automatic rollback by the running gateway ---------------------------------------------------


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, str, str, Path, Path]]:
    models = write_variants(tmp_path / "models")
    db = tmp_path / "bridge.db"
    ports = {"api": free_port(), "plant": free_port()}
    mapping = _mapping(
        tmp_path / "mapping.yaml",
        3,
        gateway_id="guarded",
        store=f"sqlite:///{db}",
        model=models["pump_health_v1"],
        poll_s=0.3,
        **ports,
    )
    prepared = prepare(mapping)
    store = open_store(f"sqlite:///{db}")
    try:
        key = ApiKeyRepository(store).create("guard-test", Scope.ADMIN)[1]
    finally:
        store.dispose()
    plant = PlantSimulator(port=ports["plant"], pumps=3, update_interval_s=0.1)
    stop = asyncio.Event()
    await plant.start()
    try:
        g = await build_gateway(prepared)
        task = asyncio.create_task(g.run(stop))
        try:
            await asyncio.wait_for(g.started.wait(), 20)
            yield g, f"http://127.0.0.1:{ports['api']}", key, models["always_fault"], db
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
    finally:
        await plant.stop()


def _versions(g: Gateway) -> set[str]:
    return {p.version for p in g.fanout.latest.values() if p.quality is Quality.GOOD}


async def test_guard_crossing_rolls_canary_back_in_running_gateway(
    gateway: tuple[Gateway, str, str, Path, Path],
) -> None:
    g, api, key, always_fault, db = gateway
    store = open_store(f"sqlite:///{db}")
    try:
        await _guarded(g, api, key, always_fault, store)
    finally:
        store.dispose()


async def _guarded(g: Gateway, api: str, key: str, always_fault: Path, store: Store) -> None:
    await wait_until(lambda: _versions(g) == {"1"} and len(g.fanout.latest) == 3, 30, 0.1, "v1")
    runner = g.runners[0]
    async with httpx.AsyncClient(base_url=api, headers={"X-API-Key": key}, timeout=10) as http:
        r = await http.post(
            f"/api/v1/models/{MODEL}/versions", json={"version": "2", "path": str(always_fault)}
        )
        assert r.status_code == 201, r.text
        # A candidate that calls every pump faulty disagrees with v1 on the healthy ones: the
        # guard allows 30 % disagreement once 6 rows (two ticks of three pumps) are compared.
        r = await http.post(
            f"/api/v1/models/{MODEL}/canary",
            json={"version": "2", "share": 100, "max_disagreement": 0.3, "min_samples": 6},
        )
        assert r.status_code == 200, r.text

        repo = RegistryRepository(store)

        def rolled_back() -> bool:
            return any(e.action == "rollback-candidate" for e in repo.events(MODEL))

        await wait_until(rolled_back, 20, 0.1, "the guard's rollback in the registry")
        event = next(e for e in repo.events(MODEL) if e.action == "rollback-candidate")
        assert (event.version, event.actor) == ("2", "guard")
        assert event.detail["reason"].startswith("automatic: disagreement"), event.detail
        states = {r.version: r.state for r in repo.list(MODEL)}
        assert states == {"1": "active", "2": "retired"}

        await wait_until(lambda: runner.deployment.candidate is None, 10, 0.1, "candidate gone")
        served_after = {a: p.seq for a, p in g.fanout.latest.items()}
        await wait_until(
            lambda: all(p.seq > served_after[a] for a, p in g.fanout.latest.items()),
            10,
            0.1,
            "a tick after the rollback",
        )
        assert _versions(g) == {"1"}
        stats = runner.stats["2"]
        assert stats.agreement.total >= 6 and stats.agreement.disagreement > 0.3
        r = await http.get(f"/api/v1/models/{MODEL}/versions")
        assert {v["version"]: v["state"] for v in r.json()} == {"1": "active", "2": "retired"}

    # The candidate did serve (it was a canary, not a shadow) until the guard pulled it, and
    # each asset's sequence went on without a gap across both switches. The store writes behind
    # the fan-out, so its newest rows may lag a moment.
    def stored() -> dict[str, list[tuple[int, str]]]:
        with store.sessions() as s:
            rows = s.execute(
                select(PredictionRow.asset, PredictionRow.seq, PredictionRow.version).order_by(
                    PredictionRow.asset, PredictionRow.seq
                )
            ).all()
        out: dict[str, list[tuple[int, str]]] = {}
        for asset, seq, version in rows:
            out.setdefault(asset, []).append((seq, version))
        return out

    def changes(rows: list[tuple[int, str]]) -> list[str]:
        versions = [v for _, v in rows]
        return [v for k, v in enumerate(versions) if k == 0 or versions[k - 1] != v]

    def settled() -> bool:
        by_asset = stored()
        return all(changes(by_asset.get(a, [])) == ["1", "2", "1"] for a in _assets(3))

    with contextlib.suppress(AssertionError):
        await wait_until(settled, 10, 0.2, "the rollback's predictions stored")
    by_asset = stored()
    for asset in _assets(3):
        seqs = [seq for seq, _ in by_asset[asset]]
        assert seqs == list(range(1, len(seqs) + 1)), f"{asset} has a gap"
        assert changes(by_asset[asset]) == ["1", "2", "1"], (asset, by_asset[asset])


async def test_bad_canaries_from_the_shared_registry_never_stop_the_gateway(
    gateway: tuple[Gateway, str, str, Path, Path],
) -> None:
    """What crash-looped a fleet: a canary put in the shared registry by another machine
    (``--store``, no mapping to check it against). One whose output has the wrong shape is
    refused at load and marked ``refused``; one that answers NaN for calm pumps is retired at its
    first failure. The gateway serves Good v1 predictions throughout."""
    g, _api, _key, always_fault, db = gateway
    url, models = f"sqlite:///{db}", always_fault.parent
    runner = g.runners[0]
    await wait_until(lambda: _versions(g) == {"1"} and len(g.fanout.latest) == 3, 30, 0.1, "v1")
    store = open_store(url)
    repo = RegistryRepository(store)
    try:
        for version, variant in (("2", "wrong_output_shape"), ("3", "nan_when_calm")):
            await _cli(
                "register", str(models / f"{variant}.onnx"), "--name", MODEL, "--version",
                version, "--store", url, "--models-dir", str(models),
            )  # fmt: skip
        await _cli("canary", MODEL, "2", "--share", "100%", "--store", url)

        def states() -> dict[str, str]:
            return {r.version: r.state for r in repo.list(MODEL)}

        await wait_until(lambda: states()["2"] == "refused", 15, 0.1, "v2 refused")
        refuse = next(e for e in repo.events(MODEL) if e.action == "refuse")
        assert "output 'label' has shape [2], expected [1]" in refuse.detail["reason"]
        assert states() == {"1": "active", "2": "refused", "3": "registered"}
        health = runner.health()
        assert health.state == "degraded" and "registry version 2 (canary)" in health.detail

        await _cli("canary", MODEL, "3", "--share", "100%", "--store", url)
        await wait_until(lambda: states()["3"] == "retired", 15, 0.1, "v3 retired")
        event = next(e for e in repo.events(MODEL) if e.action == "rollback-candidate")
        assert event.actor == "guard" and "not a finite number" in event.detail["reason"]
        await wait_until(lambda: runner.deployment.candidate is None, 10, 0.1, "candidate gone")
        before = {a: p.seq for a, p in g.fanout.latest.items()}
        await wait_until(
            lambda: all(p.seq > before[a] + 1 for a, p in g.fanout.latest.items()),
            10,
            0.1,
            "ticks after the retirement",
        )
        assert _versions(g) == {"1"}
        assert {p.quality for p in g.fanout.latest.values()} == {Quality.GOOD}
        assert states() == {"1": "active", "2": "refused", "3": "retired"}
    finally:
        store.dispose()
