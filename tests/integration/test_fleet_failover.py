"""A fleet of three real ``bridge run`` processes on one PostgreSQL, the plant simulator and a
real MES receiver: assets sharded by rendezvous hashing, a kill -9 taken over within 10 s, a
gateway that comes back handed its share without a gap, every asset on every gateway's HMI
server, and a gateway cut off from PostgreSQL that stops publishing before another takes over.

What the MES receives is the proof: one prediction per asset and model period (no duplicate,
fenced by the lease generation), no period missing except the take-over of a killed gateway's
assets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from asyncua import Client, ua
from faultproxy import FaultProxy, Mode
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from stores import PG_URL, pg_schema
from support import free_port, wait_until

from bridge.connectors.opcua.encode import node_string
from bridge.fleet.hashing import owner
from bridge.simulators.fleet import GatewayProcess, fleet_mapping, pump_ids
from bridge.simulators.mes.server import MesReceiver, ReceivedCall
from bridge.simulators.plant.model_variants import write_variants
from bridge.simulators.plant.server import PlantSimulator
from bridge.store import open_store
from bridge.store.db import Store
from bridge.store.leases import LeaseRepository
from bridge.store.tables import PredictionRow

pytestmark = [pytest.mark.serial, pytest.mark.timeout(300)]

PUMPS = 9
PERIOD_S = 1.0
GATEWAYS = ("gw-a", "gw-b", "gw-c")
TAKEOVER_LIMIT_S = 10.0
MODEL = "pump-health"
ROOT = Path(__file__).resolve().parents[2]
# node-opcua, an OPC UA stack independent of asyncua (bench/setup_nodeopcua.sh, run by
# scripts/setup): the HMI's view is also checked from it.
NODE_OPCUA = ROOT / "bench" / "nodeopcua" / "node_modules" / "node-opcua-client"
TAGS_PER_PUMP = 4


@contextlib.contextmanager
def _database() -> Iterator[tuple[str, int, str]]:
    """(URL, port, schema) of a fresh PostgreSQL schema, dropped afterwards."""
    with pg_schema("bridge_fleet") as schema:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}", 5432, schema


def _via(url: str, port: int) -> str:
    return url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def _plant_and_mes() -> AsyncIterator[tuple[PlantSimulator, MesReceiver]]:
    plant = PlantSimulator(port=free_port(), pumps=PUMPS, update_interval_s=0.1)
    async with MesReceiver(port=free_port()) as mes:
        await plant.start()
        try:
            yield plant, mes
        finally:
            await plant.stop()


def _slot(call: ReceivedCall) -> int:
    """The model period a prediction belongs to (every gateway ticks on its multiples)."""
    seconds = datetime.fromisoformat(call.body["timestamp"]).timestamp()
    return math.floor(seconds / PERIOD_S + 1e-6)


def _when(call: ReceivedCall) -> float:
    return _slot(call) * PERIOD_S


def _by_asset(calls: Sequence[ReceivedCall]) -> dict[str, list[ReceivedCall]]:
    out: dict[str, list[ReceivedCall]] = defaultdict(list)
    for c in calls:
        if c.body.get("model") == MODEL:
            out[c.body["asset"]].append(c)
    return out


def _good_since(calls: Sequence[ReceivedCall], since: float) -> set[str]:
    return {
        c.body["asset"]
        for c in calls
        if c.body["quality"] == "Good"
        and datetime.fromisoformat(c.body["timestamp"]).timestamp() > since
    }


def _duplicates(calls: Sequence[ReceivedCall]) -> dict[str, list[int]]:
    """Asset -> periods that got more than one prediction."""
    out: dict[str, list[int]] = {}
    for asset, got in _by_asset(calls).items():
        slots = [_slot(c) for c in got]
        twice = sorted({s for s in slots if slots.count(s) > 1})
        if twice:
            out[asset] = twice
    return out


def _missing(calls: Sequence[ReceivedCall], since: float, until: float) -> dict[str, list[int]]:
    """Asset -> periods between ``since`` and ``until`` that got no prediction."""
    first, last = math.ceil(since / PERIOD_S), math.floor(until / PERIOD_S)
    out: dict[str, list[int]] = {}
    for asset in pump_ids(PUMPS):
        got = {_slot(c) for c in _by_asset(calls).get(asset, [])}
        gone = [s for s in range(first, last + 1) if s not in got]
        if gone:
            out[asset] = gone
    return out


def _holders(store: Store) -> dict[str, str]:
    now = time.time()
    return {
        lease.asset: lease.holder
        for lease in LeaseRepository(store).leases()
        if lease.expires_at > now
    }


def _settled(store: Store, members: Sequence[str]) -> bool:
    return _holders(store) == {a: owner(a, members) for a in pump_ids(PUMPS)}


async def _hmi_values(endpoint: str) -> dict[str, ua.DataValue]:
    """Every asset's prediction value as this gateway's HMI server shows it."""
    async with Client(endpoint, timeout=5) as client:
        ns = await client.get_namespace_index("urn:bridge:predictions")
        out = {}
        for asset in pump_ids(PUMPS):
            node = client.get_node(ua.NodeId(f"Predictions.{asset}.{MODEL}.Value", ns))
            out[asset] = await node.read_data_value(raise_on_bad_status=False)
        return out


async def _hmi_fresh(endpoint: str, since: float) -> bool:
    values = await _hmi_values(endpoint)
    return all(
        v.SourceTimestamp is not None and v.SourceTimestamp.timestamp() > since
        for v in values.values()
    )


async def _nodeopcua_sources(endpoint: str) -> dict[str, float]:
    """Asset -> source time of its prediction, as a node-opcua client subscribed to every
    asset's Value on ``endpoint`` first hears it."""
    async with Client(endpoint, timeout=5) as client:
        ns = await client.get_namespace_index("urn:bridge:predictions")
    ids = {f"ns={ns};s={node_string(x, MODEL, 'Value')}": x for x in pump_ids(PUMPS)}
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "peers" / "nodeopcua_hmi.js"),
        endpoint,
        "100",
        *ids,
        stdin=asyncio.subprocess.PIPE,  # the script ends when its stdin closes
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    seen: dict[str, float] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while len(seen) < len(ids) and time.monotonic() < deadline:
            raw = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
            if not raw:
                break
            text = raw.decode(errors="replace").strip()
            if not text.startswith("{"):
                continue  # node-opcua's own warnings
            note = json.loads(text)
            if note.get("node") in ids and note.get("source"):
                stamp = datetime.fromisoformat(note["source"].replace("Z", "+00:00"))
                seen.setdefault(ids[note["node"]], stamp.timestamp())
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return seen


async def _metrics(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{url}/metrics")
    response.raise_for_status()
    return {
        s.name + "".join(f"|{v}" for v in s.labels.values()): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _report(gateways: Sequence[GatewayProcess]) -> str:
    return "\n".join(f"--- {g.gateway_id}\n{g.tail(30)}" for g in gateways)


async def _start_fleet(
    tmp_path: Path, url_of: dict[str, str], plant: PlantSimulator, mes: MesReceiver
) -> list[GatewayProcess]:
    model = write_variants(tmp_path / "models")["pump_health_v1"]
    gateways = []
    for gid in GATEWAYS:
        mapping = fleet_mapping(
            tmp_path / f"{gid}.yaml",
            store=url_of[gid],
            plant=plant.port,
            mes=mes.port,
            model=model,
            pumps=PUMPS,
            period_s=PERIOD_S,
            outbox_lease_s=5.0,
        )
        g = GatewayProcess(gid, mapping, tmp_path / f"{gid}.log", free_port(), free_port())
        await g.start()
        gateways.append(g)
    return gateways


async def test_kill_9_is_taken_over_within_10_s_and_a_gateway_that_comes_back_gets_its_share(
    tmp_path: Path,
) -> None:
    with _database() as (url, _, _):
        store = open_store(url)
        async with _plant_and_mes() as (plant, mes):
            gateways = await _start_fleet(tmp_path, dict.fromkeys(GATEWAYS, url), plant, mes)
            a, b, c = gateways
            try:
                await wait_until(
                    lambda: _settled(store, GATEWAYS), 60, 0.2, "three gateways sharing"
                )
                settled = time.time()
                mine_c = sorted(x for x in pump_ids(PUMPS) if owner(x, GATEWAYS) == "gw-c")
                assert mine_c and len(mine_c) < PUMPS
                # Windows warm (a cold start serves "warming up" first), then every gateway's
                # HMI server shows every asset, its own and the others'.
                await wait_until(
                    lambda: _good_since(mes.calls, settled) == set(pump_ids(PUMPS)),
                    20,
                    0.2,
                    "a Good prediction of every asset",
                )
                for g in gateways:
                    await wait_until(
                        lambda g=g: _hmi_fresh(g.hmi_endpoint, settled),
                        10,
                        0.5,
                        f"{g.gateway_id}'s HMI showing every asset",
                    )
                    # ... while its source reads only the tags of the assets it serves.
                    share = sum(1 for x in pump_ids(PUMPS) if owner(x, GATEWAYS) == g.gateway_id)
                    samples = await _metrics(g.api_url)
                    assert samples["bridge_source_tags|plant"] == TAGS_PER_PUMP * share

                await c.kill()
                killed = time.time()

                def taken_over() -> list[ReceivedCall]:
                    """Good predictions of gw-c's assets by another gateway, made after the kill
                    (before it, gw-a may have served them while the fleet formed)."""
                    return [
                        x
                        for x in mes.calls
                        if x.body["asset"] in mine_c
                        and x.body["gateway_id"] != "gw-c"
                        and x.body["quality"] == "Good"
                        and _when(x) > killed
                    ]

                def resumed() -> bool:
                    return {x.body["asset"] for x in taken_over()} == set(mine_c)

                await wait_until(resumed, 30, 0.1, "gw-c's assets served by the others")
                first_good = {
                    asset: min(_when(x) for x in taken_over() if x.body["asset"] == asset)
                    for asset in mine_c
                }
                takeover = {k: round(v - killed, 2) for k, v in first_good.items()}
                print(f"take-over after kill -9, s per asset: {takeover}")
                assert max(takeover.values()) <= TAKEOVER_LIMIT_S, takeover
                await wait_until(
                    lambda: _settled(store, ("gw-a", "gw-b")), 5, 0.2, "gw-c's leases moved"
                )
                # Operations see it: two members now, and the survivors took gw-c's assets.
                taken_by = {}
                for g in (a, b):
                    samples = await _metrics(g.api_url)
                    serves = sum(
                        1 for x in pump_ids(PUMPS) if owner(x, ("gw-a", "gw-b")) == g.gateway_id
                    )
                    assert samples["bridge_fleet_members"] == 2, g.gateway_id
                    assert samples["bridge_fleet_assets_served"] == serves
                    # Its source reads the tags of the assets it serves, no others.
                    assert samples["bridge_source_tags|plant"] == TAGS_PER_PUMP * serves
                    taken_by[g.gateway_id] = samples["bridge_fleet_assets_taken_total"]
                assert all(n > 0 for n in taken_by.values()), taken_by
                # The survivors' HMI servers show every asset again, fresh.
                for g in (a, b):
                    await wait_until(
                        lambda g=g: _hmi_fresh(g.hmi_endpoint, killed + TAKEOVER_LIMIT_S),
                        15,
                        0.5,
                        f"{g.gateway_id}'s HMI showing every asset",
                    )
                # An HMI on another stack (node-opcua) sees the same on one endpoint.
                if NODE_OPCUA.is_dir():
                    seen = await _nodeopcua_sources(a.hmi_endpoint)
                    assert set(seen) == set(pump_ids(PUMPS))
                    assert min(seen.values()) > killed + TAKEOVER_LIMIT_S, seen

                await c.start()
                await wait_until(lambda: _settled(store, GATEWAYS), 40, 0.2, "gw-c back")
                rebalanced = time.time()
                await asyncio.sleep(3 * PERIOD_S)
                # Outbox rows gw-c had claimed when it was killed are sent by the others once
                # their outbox lease (5 s here) ends.
                await asyncio.sleep(6)
                calls = list(mes.calls)
                # (An event the killed gateway sent but could not mark sent is sent again by
                # another with the same Idempotency-Key: the MES keeps it once. What must not
                # happen is two predictions for one period: the fencing tokens prevent it.)
                assert _duplicates(calls) == {}, "two predictions for one asset and period"
                # No period is missing, but for the killed gateway's assets during take-over.
                before = _missing(calls, settled + 1, killed - 1)
                assert before == {}, before
                during = _missing(calls, killed - 1, killed + TAKEOVER_LIMIT_S)
                assert set(during) <= set(mine_c), during
                after = _missing(calls, killed + TAKEOVER_LIMIT_S, time.time() - 8)
                assert after == {}, f"gap after the take-over or at the hand-back: {after}"
                # The hand-back happened in that window: gw-c serves its share again.
                back = {
                    x.body["asset"]
                    for x in calls
                    if x.body["gateway_id"] == "gw-c" and x.received_at > rebalanced
                }
                assert back == set(mine_c)
            except BaseException:
                print(_report(gateways))
                raise
            finally:
                for g in gateways:
                    await g.stop()
                store.dispose()
        for g in gateways:
            assert "Traceback" not in g.log.read_text(), g.tail(60)


async def test_a_gateway_cut_off_from_postgresql_stops_publishing_before_another_takes_over(
    tmp_path: Path,
) -> None:
    with _database() as (url, port, _):
        store = open_store(url)
        proxy = FaultProxy("127.0.0.1", port)
        await proxy.start()
        async with _plant_and_mes() as (plant, mes):
            urls = {"gw-a": url, "gw-b": url, "gw-c": _via(url, proxy.port)}
            gateways = await _start_fleet(tmp_path, urls, plant, mes)
            c = gateways[2]
            try:
                await wait_until(
                    lambda: _settled(store, GATEWAYS), 60, 0.2, "three gateways sharing"
                )
                mine_c = sorted(x for x in pump_ids(PUMPS) if owner(x, GATEWAYS) == "gw-c")
                await asyncio.sleep(3 * PERIOD_S)
                proxy.set_mode(Mode.BLACKHOLE)  # gw-c's queries go out, no answer comes back
                cut = time.time()
                await wait_until(
                    lambda: _settled(store, ("gw-a", "gw-b")), 30, 0.2, "gw-c's assets taken"
                )
                # When each asset was taken: the first stored prediction of its new holder.
                await wait_until(
                    lambda: set(_first_taken(store, mine_c, cut)) == set(mine_c),
                    15,
                    0.2,
                    "the new holders' first predictions",
                )
                taken = _first_taken(store, mine_c, cut)
                # gw-c's own HMI server shows its last prediction of each of them: made
                # before the new holder's first one (it stopped before the take-over).
                shown = await _hmi_values(c.hmi_endpoint)
                for asset in mine_c:
                    last = shown[asset].SourceTimestamp
                    assert last is not None
                    assert last.timestamp() < taken[asset], (asset, last, taken[asset])
                assert "fleet_leases_expired" in c.log.read_text()
                # Back on the network: its old connections are reset, it rejoins and is handed
                # its share again; nothing it queued under the old tokens reaches the MES.
                proxy.set_mode(Mode.RST)
                await asyncio.sleep(0.5)
                proxy.set_mode(Mode.PASS)
                await wait_until(lambda: _settled(store, GATEWAYS), 60, 0.2, "gw-c rejoined")
                await asyncio.sleep(3 * PERIOD_S + 6)
                # Resends of events it sent but could not mark sent carry their first key (the
                # MES keeps each once); no period has two predictions, at the MES or stored.
                assert _duplicates(list(mes.calls)) == {}
                assert _stored_duplicates(store) == {}
            except BaseException:
                print(_report(gateways))
                raise
            finally:
                proxy.set_mode(Mode.PASS)
                for g in gateways:
                    await g.stop()
                await proxy.stop()
                store.dispose()


def _first_taken(store: Store, assets: Sequence[str], cut: float) -> dict[str, float]:
    """Asset -> timestamp of the first stored prediction made under a newer lease generation
    than the one the asset had when ``cut`` came (its new holder's first)."""
    out: dict[str, float] = {}
    with store.sessions() as s:
        for asset in assets:
            rows = s.execute(
                select(PredictionRow.timestamp, PredictionRow.fence)
                .where(PredictionRow.asset == asset)
                .order_by(PredictionRow.timestamp)
            ).all()
            old = max((r.fence for r in rows if r.timestamp < cut), default=None)
            newer = [r.timestamp for r in rows if old is not None and r.fence > old]
            if newer:
                out[asset] = newer[0]
    return out


def _stored_duplicates(store: Store) -> dict[str, list[int]]:
    with store.sessions() as s:
        rows = s.execute(select(PredictionRow.asset, PredictionRow.timestamp)).all()
    slots: dict[str, list[int]] = defaultdict(list)
    for asset, stamp in rows:
        slots[asset].append(math.floor(stamp / PERIOD_S + 1e-6))
    return {
        a: sorted({x for x in got if got.count(x) > 1})
        for a, got in slots.items()
        if len(set(got)) != len(got)
    }
