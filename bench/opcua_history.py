"""HistoryRead of 100,000 raw values of one node through continuation points, against reading
the same rows with SQLAlchemy directly.

bridge: the real ``PredictionServer`` (None policy, anonymous) with its history from a real
store (``StoreHmiHistory``) holding ``--rows`` predictions of one asset+model (two per
timestamp: ties a page boundary must split) and ``--other-rows`` more at the same times, half
of a second model of the same asset, half of 20 other assets (rows the node's reads must step
over, as in a plant's store). A client in its own process
(asyncua, ``HistoryRead`` of ``Value`` with StartTime/EndTime over all of it, NumValuesPerNode
0: the server's pages of ``MaxReturnDataValues`` = 10,000, continuation points followed) reads
the whole range ``--rounds`` times and checks every value arrived once, in order: values/s
(wall time of the read), the client's CPU and this process's (the server's) CPU.

floor (same run, same process, between the rounds): the same rows (the columns the Value node
is encoded from) read with SQLAlchemy Core directly in keyset pages of 10,000 on (timestamp,
id), the same query shape and page size as the server; also reported: one plain SELECT of
every row, and the core's ``StoreHmiHistory`` pages alone (the store part of the bridge side).
Last, the store's pages again without the revision 0015 index (asset, model, timestamp, id),
dropped for that: what the index changes.

    python -m bench.opcua_history [--rows 100000 --other-rows 100000 --backend sqlite,postgresql
                                   --rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from sqlalchemy import select

from bench.common import bench_store, free_port, machine, row, stop, write_result
from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.encode import node_string
from bridge.logging import configure_logging
from bridge.store.db import Store
from bridge.store.hmihistory import StoreHmiHistory
from bridge.store.repository import PredictionRepository
from bridge.store.tables import PredictionRow
from bridge.types import HistorySeries, Prediction, PredictionSlot, Quality, SinkContext

NS = "urn:bench:history"
ASSET, MODEL, OTHER = "pump-00001", "rul", "health"
START = 1_700_000_000.0
STEP = 0.01  # seconds between timestamps; two predictions of the model share each
PAGE = 10_000
WRITE_BATCH = 5_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


OTHER_ASSETS = 20
INDEX_0015 = "ix_predictions_asset_model_timestamp"


def _prediction(model: str, i: int, asset: str = ASSET) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-history/{asset}/{model}/{i}")),
        seq=i,
        asset=asset,
        model=model,
        version="1.0.0",
        sha256="a" * 64,
        value=float(i),
        score=(i % 100) / 100,
        quality=Quality.GOOD if i % 10 else Quality.UNCERTAIN,
        timestamp=START + (i // 2) * STEP,
        input_age_s=0.1,
    )


def _store(backend: str, workdir: Path) -> contextlib.AbstractContextManager[Store]:
    return bench_store(backend, workdir, "history")


def _fill(store: Store, rows: int, other_rows: int) -> float:
    """Write the predictions, the node's and the others interleaved in time; seconds taken."""
    started = time.perf_counter()
    repo = PredictionRepository(store)
    same_asset = other_rows // 2
    per_asset = (other_rows - same_asset) // OTHER_ASSETS
    # The other assets' rows spread over the node's time range (i scaled to its indexes).
    stride = max(1, rows // per_asset) if per_asset else 1
    for at in range(0, max(rows, same_asset), WRITE_BATCH):
        batch = [_prediction(MODEL, i) for i in range(at, min(at + WRITE_BATCH, rows))]
        batch += [_prediction(OTHER, i) for i in range(at, min(at + WRITE_BATCH, same_asset))]
        batch += [
            _prediction(MODEL, i, f"pump-{a + 2:05d}")
            for a in range(OTHER_ASSETS)
            for i in range(at, min(at + WRITE_BATCH, per_asset * stride), stride)
        ]
        repo.add_many(batch)
    with store.engine.begin() as conn:  # fresh planner statistics, as a running store has
        conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


def _range(rows: int) -> tuple[float, float]:
    """[start, end) holding every value of the node."""
    return START, START + (rows // 2 + 1) * STEP


# --- floors --------------------------------------------------------------------------------


def _sqlalchemy_pages(store: Store, rows: int) -> dict[str, Any]:
    """Keyset pages of PAGE rows with SQLAlchemy Core: the server's query shape."""
    p = PredictionRow
    start, end = _range(rows)
    columns = (p.timestamp, p.id, p.quality, p.value_text, p.value_num)
    base = (
        select(*columns)
        .where(p.asset == ASSET, p.model == MODEL, p.timestamp >= start, p.timestamp < end)
        .order_by(p.timestamp, p.id)
        .limit(PAGE + 1)
    )
    got, pages = 0, 0
    last: tuple[float, int] | None = None
    t0, c0 = time.perf_counter(), _cpu()
    with store.sessions() as session:
        while True:
            stmt = base
            if last is not None:
                ts, rid = last
                stmt = stmt.where(p.timestamp >= ts).where((p.timestamp > ts) | (p.id > rid))
            page = session.execute(stmt).all()
            more = len(page) > PAGE
            page = page[:PAGE]
            got += len(page)
            pages += 1
            if not more:
                break
            last = (page[-1][0], page[-1][1])
    return _figures(got, pages, time.perf_counter() - t0, _cpu() - c0)


def _sqlalchemy_once(store: Store, rows: int) -> dict[str, Any]:
    """One SELECT of every row (no pages): what an unbounded read would cost, memory aside."""
    p = PredictionRow
    start, end = _range(rows)
    stmt = (
        select(p.timestamp, p.id, p.quality, p.value_text, p.value_num)
        .where(p.asset == ASSET, p.model == MODEL, p.timestamp >= start, p.timestamp < end)
        .order_by(p.timestamp, p.id)
    )
    t0, c0 = time.perf_counter(), _cpu()
    with store.sessions() as session:
        got = len(session.execute(stmt).all())
    return _figures(got, 1, time.perf_counter() - t0, _cpu() - c0)


def _service_pages(history: StoreHmiHistory, rows: int) -> dict[str, Any]:
    """The core service's pages alone (what the server asks the store for)."""
    series = HistorySeries(ASSET, MODEL, "Value")
    start, end = _range(rows)
    low: tuple[float, int] = ((start * 1e6 - 0.5) / 1e6, -1)
    high = ((end * 1e6 - 0.5) / 1e6, -1)
    got, pages = 0, 0
    t0, c0 = time.perf_counter(), _cpu()
    while True:
        page = history.values_now(series, low, high, False, PAGE + 1)
        more = len(page) > PAGE
        page = page[:PAGE]
        got += len(page)
        pages += 1
        if not more:
            break
        low = (page[-1].timestamp, page[-1].row_id + 1)
    return _figures(got, pages, time.perf_counter() - t0, _cpu() - c0)


def _figures(values: int, pages: int, seconds: float, cpu_s: float) -> dict[str, Any]:
    return {
        "values": values,
        "pages": pages,
        "seconds": round(seconds, 3),
        "values_per_s": round(values / seconds) if seconds > 0 else None,
        "cpu_s": round(cpu_s, 3),
    }


# --- the client process ------------------------------------------------------------------


async def client_main(endpoint: str, identifier: str, rows: int) -> None:
    """On each "go": read the node's whole range through continuation points, check it, and
    print the figures as one JSON line; leave on "stop"."""
    start, end = _range(rows)
    async with Client(endpoint, timeout=120, watchdog_intervall=60) as client:
        ns = await client.get_namespace_index(NS)
        nodeid = make_node_id(identifier, ns)
        details = ua.ReadRawModifiedDetails(
            IsReadModified=False,
            StartTime=datetime.fromtimestamp(start, UTC),
            EndTime=datetime.fromtimestamp(end, UTC),
            NumValuesPerNode=0,
            ReturnBounds=False,
        )
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "go":
            t0, c0 = time.perf_counter(), _cpu()
            point: bytes | None = None
            values: list[float] = []
            pages = 0
            for _ in range(rows // 100 + 10):  # bounded: pages hold >= 100 values
                params = ua.HistoryReadParameters(
                    HistoryReadDetails=details,
                    TimestampsToReturn=ua.TimestampsToReturn.Source,
                    ReleaseContinuationPoints=False,
                    NodesToRead=[ua.HistoryReadValueId(NodeId=nodeid, ContinuationPoint=point)],
                )
                (result,) = await client.uaclient.history_read(params)
                result.StatusCode.check()
                values += [dv.Value.Value for dv in result.HistoryData.DataValues]
                pages += 1
                point = result.ContinuationPoint
                if not point:
                    break
            seconds, cpu_s = time.perf_counter() - t0, _cpu() - c0
            # Every value once, in order (each is its row's index: float(i)).
            complete = values == [float(i) for i in range(rows)]
            print(json.dumps({**_figures(len(values), pages, seconds, cpu_s), "ok": complete}))
            sys.stdout.flush()


# --- main ----------------------------------------------------------------------------------


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, _store(backend, Path(tmp)) as store:
        fill_s = await asyncio.to_thread(_fill, store, args.rows, args.other_rows)
        history = StoreHmiHistory(store, timeout_s=60)
        settings = OpcUaServerSettings(
            endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
            namespace=NS,
            allow_anonymous=True,
            security_policies=["None"],
        )
        slots = (
            PredictionSlot(ASSET, MODEL, "1.0.0", "a" * 64),
            PredictionSlot(ASSET, OTHER, "1.0.0", "a" * 64),
        )
        server = PredictionServer("hmi", settings, SinkContext("bench", slots, history=history))
        await server.start()
        command = [sys.executable, "-m", "bench.opcua_history", "--client", settings.endpoint]
        command += ["--identifier", node_string(ASSET, MODEL, "Value"), "--rows", str(args.rows)]
        client = subprocess.Popen(  # noqa: ASYNC220
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        sides: dict[str, list[dict[str, Any]]] = {
            "bridge": [],
            "sqlalchemy_pages": [],
            "sqlalchemy_once": [],
            "service_pages": [],
            "sqlalchemy_pages_without_0015": [],
            "service_pages_without_0015": [],
        }
        try:
            assert client.stdin is not None and client.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(client.stdout.readline), 120)
            if line.strip() != "ready":
                raise SystemExit(f"the HistoryRead client did not start: {line!r}")
            # Round 0 warms up (page cache, compiled statements) and is not counted.
            for round_ in range(args.rounds + 1):
                c0 = _cpu()
                client.stdin.write("go\n")
                client.stdin.flush()
                line = await asyncio.wait_for(asyncio.to_thread(client.stdout.readline), 600)
                read = json.loads(line)
                read["server_cpu_s"] = round(_cpu() - c0, 3)
                # The floors run while the server idles (no client reading).
                runs = {
                    "bridge": read,
                    "sqlalchemy_pages": _sqlalchemy_pages(store, args.rows),
                    "sqlalchemy_once": _sqlalchemy_once(store, args.rows),
                    "service_pages": _service_pages(history, args.rows),
                }
                for name, run in runs.items():
                    if round_:
                        sides[name].append(run)
            client.stdin.write("stop\n")
            client.stdin.flush()
            await asyncio.to_thread(client.wait, 30)
            # What revision 0015's index changes: the store's pages without it.
            with store.engine.begin() as conn:
                conn.exec_driver_sql(f"DROP INDEX {INDEX_0015}")
                conn.exec_driver_sql("ANALYZE")
            for round_ in range(args.rounds + 1):
                without = _sqlalchemy_pages(store, args.rows), _service_pages(history, args.rows)
                if round_:
                    sides["sqlalchemy_pages_without_0015"].append(without[0])
                    sides["service_pages_without_0015"].append(without[1])
        finally:
            stop(client, 10)
            await server.close()
    medians = {name: _median(runs) for name, runs in sides.items()}
    return {
        "rows": args.rows,
        "other_rows": args.other_rows,
        "fill_s": round(fill_s, 1),
        "page": PAGE,
        "all_values_once_in_order": all(r["ok"] for r in sides["bridge"]),
        "medians": medians,
        "runs": sides,
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("seconds", "values_per_s", "cpu_s", "server_cpu_s")
    out: dict[str, Any] = {"values": runs[0]["values"], "pages": runs[0]["pages"]}
    for key in keys:
        if all(key in r for r in runs):
            out[key] = statistics.median(r[key] for r in runs)
    return out


def _us(seconds: float, values: int) -> float:
    return round(seconds * 1e6 / values, 1) if values else float("nan")


def rows_of(figures: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for backend, f in figures["backends"].items():
        m = f["medians"]
        b, floor = m["bridge"], m["sqlalchemy_pages"]
        out.append(
            row(
                f"HistoryRead {f['rows']:,} raw values of one node, {backend} (values/s)",
                b["values_per_s"],
                floor["values_per_s"],
                "values/s",
                "report",
                None,
                f"{b['pages']} responses of <= {f['page']:,}; server CPU {b['server_cpu_s']} s "
                f"({_us(b['server_cpu_s'], f['rows'])} us/value; the floor's "
                f"{_us(floor['cpu_s'], f['rows'])}), client (asyncua) CPU {b['cpu_s']} s; "
                f"floor: SQLAlchemy keyset pages of {f['page']:,}; "
                f"one SELECT of all rows {m['sqlalchemy_once']['values_per_s']:,}/s; the core "
                f"service's pages alone {m['service_pages']['values_per_s']:,}/s; every value "
                f"once and in order: {f['all_values_once_in_order']}",
            )
        )
        out.append(
            row(
                f"History pages of the store, {backend}: with / without the 0015 index (values/s)",
                m["service_pages"]["values_per_s"],
                m["service_pages_without_0015"]["values_per_s"],
                "values/s",
                "report",
                None,
                f"CPU {m['service_pages']['cpu_s']} s vs {m['service_pages_without_0015']['cpu_s']}"
                f" s per {f['rows']:,} values; SQLAlchemy keyset pages "
                f"{floor['values_per_s']:,}/s with, "
                f"{m['sqlalchemy_pages_without_0015']['values_per_s']:,}/s without",
            )
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="values of the node read")
    parser.add_argument(
        "--other-rows", type=int, default=100_000, help="of another model of the same asset"
    )
    parser.add_argument("--backend", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=3, help="reads per side (medians)")
    parser.add_argument("--quick", action="store_true", help="10,000 rows, 1 round: a smoke run")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--identifier", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        await client_main(args.client, args.identifier, args.rows)
        return
    if args.quick:
        args.rows, args.other_rows, args.rounds = 10_000, 10_000, 1
    configure_logging("warning")
    load0 = os.getloadavg()[0]
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    figures: dict[str, Any] = {"backends": {}}
    for backend in backends:
        figures["backends"][backend] = await run_backend(backend, args)
    figures["load_average_1m_start"] = round(load0, 2)
    figures["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    figures["command"] = " ".join(["python -m bench.opcua_history", *sys.argv[1:]])
    figures["rows"] = rows_of(figures)
    figures["machine"] = machine()
    for r in figures["rows"]:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"{r['measure']}: bridge {r['bridge']:,} floor {r['floor']:,} ratio {ratio}")
        print(f"    {r['note']}")
    print(f"wrote {write_result('opcua_history', figures)}")


if __name__ == "__main__":
    asyncio.run(main())
