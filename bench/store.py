"""Store writer throughput: predictions with their outbox rows, vs a bare insert of the same rows.

For each backend (an SQLite file in WAL mode with ``synchronous=FULL``, the production profile;
PostgreSQL at 127.0.0.1 with ``synchronous_commit=on``), ``--rows`` predictions of a plant of
``--assets`` assets (2,000: one tick of the pipeline) are written two ways, in alternating
rounds of 5 ticks, so both sides see the same machine load:

- bridge: the real ``StoreSink`` (its defaults, a gateway id and a mapping revision, as the
  runtime builds it) with one outbox feed: ``write(tick)`` for each tick of the round, then
  wait until the last is committed. Each
  prediction carries the pump template's 5 input snapshots; the feed's ``encode`` hands out the
  body the MES destination rendered for that prediction beforehand: the MES encoding is the
  destination's CPU, not the store's, and is measured on its own (the last row).
- floor: the same rows, built beforehand as tuples (prediction columns with the same
  ``inputs_json``, outbox rows with the same bodies, the sequence high-water marks), written by
  the bare driver in one transaction per tick: SQLite ``executemany`` (sqlite3 module, same
  pragmas); PostgreSQL ``COPY`` and, in another store, ``executemany`` (psycopg 3, pipelined);
  the faster of the two is the floor. The sequence marks are an upsert on every side (COPY
  cannot upsert: executemany there).

Rows: predictions/s per backend (target >= 10,000/s and >= 70 % of the floor), and the MES
destination's encode per prediction (report). ``--quick`` writes 10,000 predictions (< 30 s).

    python -m bench.store [--backend sqlite,postgresql] [--rows 100000] [--assets 2000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import row, write_result
from bridge.connectors.mes import MesDestination, MesSettings
from bridge.destination import DestinationContext
from bridge.logging import configure_logging
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store.codec import PREDICTION_COLUMNS, prediction_row
from bridge.store.db import Store, open_store
from bridge.store.sink import StoreSink
from bridge.types import InputSnapshot, Prediction, Quality, Trigger

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
PG_DSN = "host=127.0.0.1 user=root dbname=test"
GATEWAY = "bench"
REVISION = "5e" * 32
TAGS = ("vibration", "bearing_temperature", "discharge_pressure", "speed", "running")
OUTBOX_COLUMNS = (
    "destination",
    "asset",
    "event_id",
    "body",
    "created_at",
    "attempts",
    "next_attempt_at",
    "last_error",
    "retries",
    "first_failed_at",
    "claimed_by",
    "lease_until",
)
TARGET_RATE = 10_000.0
# Bridge and floor alternate in rounds of this many ticks (5 ticks of 2,000 fill half the
# writer's queue): both sides see the same load, and the poll for "committed" is rare.
TICKS_PER_ROUND = 5
TARGET_RATIO = 0.70

Tick = list[Prediction]


def _prediction(asset: str, seq: int, now: float) -> Prediction:
    pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/pump-health/{seq}"))
    inputs = tuple(
        InputSnapshot(f"{asset}.{tag}", 20.0 + i + seq * 0.01, Quality.GOOD, now - 0.2)
        for i, tag in enumerate(TAGS)
    )
    return Prediction(
        id=pid,
        seq=seq,
        asset=asset,
        model="pump-health",
        version="1.0.0",
        sha256="ab" * 32,
        value="healthy" if seq % 7 else "worn",
        score=0.9375,
        quality=Quality.GOOD,
        timestamp=now,
        input_age_s=0.2,
        inputs=inputs,
    )


def _ticks(assets: int, ticks: int) -> list[Tick]:
    start = 1.7e9
    names = [f"pump-{i:05d}" for i in range(assets)]
    return [
        [_prediction(a, t + 1, start + t + 0.001 * i) for i, a in enumerate(names)]
        for t in range(ticks)
    ]


@contextlib.contextmanager
def _store(backend: str, workdir: Path, name: str) -> Iterator[Store]:
    if backend == "sqlite":
        s = open_store(f"sqlite:///{workdir / name}.db", synchronous="FULL", profile="production")
        try:
            yield s
        finally:
            s.dispose()
        return
    schema = f"bench_store_{name}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        s = open_store(PG_URL, schema=schema, synchronous="FULL", profile="production")
        try:
            yield s
        finally:
            s.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class Bare:
    """The floor: a bare driver connection writing prebuilt tuples, one transaction per tick."""

    def __init__(self, backend: str, store: Store, how: str) -> None:
        self.backend, self.how = backend, how
        url = store.engine.url
        p_names, o_names = ", ".join(PREDICTION_COLUMNS), ", ".join(OUTBOX_COLUMNS)
        if backend == "sqlite":
            self.conn: Any = sqlite3.connect(str(url.database), isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            mark = "?"
            self.seq_sql = (
                "INSERT INTO prediction_sequences (gateway_id, asset, model, last_seq) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (gateway_id, asset, model) DO UPDATE SET "
                "last_seq = max(prediction_sequences.last_seq, excluded.last_seq)"
            )
        else:
            import psycopg  # the driver the store uses; only the PostgreSQL floor needs it

            with store.engine.connect() as c:
                schema = str(c.exec_driver_sql("SELECT current_schema()").scalar())
            self.conn = psycopg.connect(PG_DSN, options=f"-csearch_path={schema}")
            mark = "%s"
            self.seq_sql = (
                "INSERT INTO prediction_sequences (gateway_id, asset, model, last_seq) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (gateway_id, asset, model) DO UPDATE SET "
                "last_seq = greatest(prediction_sequences.last_seq, excluded.last_seq)"
            )
        p_marks = ", ".join([mark] * len(PREDICTION_COLUMNS))
        self.p_sql = f"INSERT INTO predictions ({p_names}) VALUES ({p_marks})"
        self.o_sql = (
            f"INSERT INTO outbox ({o_names}) VALUES ({', '.join([mark] * len(OUTBOX_COLUMNS))})"
        )
        self.p_copy = f"COPY predictions ({p_names}) FROM STDIN"
        self.o_copy = f"COPY outbox ({o_names}) FROM STDIN"

    def write(
        self,
        p_rows: Sequence[tuple[Any, ...]],
        o_rows: Sequence[tuple[Any, ...]],
        s_rows: Sequence[tuple[Any, ...]],
    ) -> None:
        if self.backend == "sqlite":
            c = self.conn
            c.execute("BEGIN")
            c.executemany(self.seq_sql, s_rows)
            c.executemany(self.p_sql, p_rows)
            c.executemany(self.o_sql, o_rows)
            c.execute("COMMIT")
            return
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self.seq_sql, s_rows)
            if self.how == "copy":
                for sql, rows in ((self.p_copy, p_rows), (self.o_copy, o_rows)):
                    with cur.copy(sql) as copy:
                        for r in rows:
                            copy.write_row(r)
            else:
                cur.executemany(self.p_sql, p_rows)
                cur.executemany(self.o_sql, o_rows)

    def close(self) -> None:
        self.conn.close()


def _floor_rows(tick: Tick, bodies: dict[str, str]) -> tuple[list[Any], list[Any], list[Any]]:
    now = time.time()
    p_rows = [prediction_row(p, REVISION) for p in tick]
    o_rows = [("mes", p.asset, p.id, bodies[p.id], now, 0, 0.0, "", 0, 0.0, "", 0.0) for p in tick]
    s_rows = sorted((GATEWAY, p.asset, p.model, p.seq) for p in tick)
    return p_rows, o_rows, s_rows


async def _until(condition: Callable[[], bool], timeout_s: float = 120.0) -> None:
    """Poll the writer's counter (it has no event to wait on), bounded. Every 2 ms: a tighter
    poll takes the GIL from the writer's thread often enough to slow it down (measured)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the store writer did not commit the round in time")
        await asyncio.sleep(0.002)


def _count(store: Store, table: str) -> int:
    with store.engine.connect() as c:
        return int(c.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


async def run_backend(backend: str, ticks: list[Tick], bodies: dict[str, str]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    floors = ("copy", "executemany") if backend == "postgresql" else ("executemany",)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        store = stack.enter_context(_store(backend, tmp, "bridge"))
        floor_stores = {how: stack.enter_context(_store(backend, tmp, how)) for how in floors}
        bare = {how: Bare(backend, s, how) for how, s in floor_stores.items()}
        for b in bare.values():
            stack.callback(b.close)
        feed = OutboxFeed("mes", lambda p: bodies[p.id], Budget(10_000_000))
        sink = StoreSink(store, outbox=[feed], mapping_revision=REVISION, gateway_id=GATEWAY)
        await sink.start()
        bridge_s = bridge_cpu = 0.0
        floor_s = dict.fromkeys(floors, 0.0)
        floor_cpu = dict.fromkeys(floors, 0.0)
        written = 0
        try:
            for start in range(0, len(ticks), TICKS_PER_ROUND):
                rounds = ticks[start : start + TICKS_PER_ROUND]
                # Bridge: the round's ticks written one after the other as the pipeline hands
                # them over (Prediction objects in), until the last is committed.
                t0, c0 = time.perf_counter(), time.process_time()
                for tick in rounds:
                    await sink.write(tick)
                    written += len(tick)
                await _until(lambda: sink.counters["written"] >= written)  # noqa: B023
                bridge_s += time.perf_counter() - t0
                bridge_cpu += time.process_time() - c0
                # Floor: the same ticks, rows built beforehand (not timed), the bare write timed.
                for tick in rounds:
                    prepared = _floor_rows(tick, bodies)
                    for how, b in bare.items():
                        t1, c1 = time.perf_counter(), time.process_time()
                        b.write(*prepared)  # nothing else runs meanwhile: no thread needed
                        floor_s[how] += time.perf_counter() - t1
                        floor_cpu[how] += time.process_time() - c1
        finally:
            await sink.close()
        stored = _count(store, "predictions"), _count(store, "outbox")
        n = sum(len(t) for t in ticks)
        # The same rows on every side, or the comparison means nothing.
        for how, s in floor_stores.items():
            got = _count(s, "predictions"), _count(s, "outbox")
            if got != stored or stored != (n, n):
                raise RuntimeError(f"rows differ: bridge {stored}, {how} {got}, expected {n}")
    bridge_rate = n / bridge_s
    floor_rates = {how: n / s for how, s in floor_s.items()}
    best = max(floor_rates, key=lambda h: floor_rates[h])
    load_after = os.getloadavg()[0]
    return {
        "backend": backend,
        "predictions": n,
        "rows_stored": {"predictions": stored[0], "outbox": stored[1]},
        "bridge_predictions_per_s": round(bridge_rate),
        "floor_predictions_per_s": {h: round(r) for h, r in floor_rates.items()},
        "floor": best,
        "ratio": round(bridge_rate / floor_rates[best], 3),
        # This process's CPU (the database server's is not in it) per prediction: what the
        # writer costs the gateway; the floor's is the driver's alone (rows built untimed).
        "bridge_cpu_us_per_prediction": round(bridge_cpu / n * 1e6, 1),
        "floor_cpu_us_per_prediction": {h: round(c / n * 1e6, 1) for h, c in floor_cpu.items()},
        "dropped": sink.counters["dropped"],
        "errors": sink.counters["errors"],
        "batches": sink.counters["batches"],
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
    }


def _encode_cost(ticks: list[Tick], mes: MesDestination) -> float:
    """Microseconds per prediction of the MES destination's own ``encode`` (report)."""
    sample = ticks[0]
    t0 = time.perf_counter()
    for p in sample:
        mes.encode(Trigger(p))
    return (time.perf_counter() - t0) / len(sample) * 1e6


def run(backends: Sequence[str], rows: int, assets: int) -> dict[str, Any]:
    configure_logging("warning", json=False)
    ticks = _ticks(assets, max(1, rows // assets))
    mes = MesDestination(
        "mes", MesSettings(url="http://127.0.0.1:9/events"), DestinationContext(GATEWAY, ())
    )
    bodies = {p.id: mes.encode(Trigger(p)) for t in ticks for p in t}
    runs = [asyncio.run(run_backend(b, ticks, bodies)) for b in backends]
    encode_us = _encode_cost(ticks, mes)
    table = []
    for r in runs:
        floor = r["floor_predictions_per_s"][r["floor"]]
        met = r["bridge_predictions_per_s"] >= TARGET_RATE and r["ratio"] >= TARGET_RATIO
        floor_note = ", ".join(f"{h} {v:,}/s" for h, v in r["floor_predictions_per_s"].items())
        table.append(
            row(
                f"store writer, {r['backend']}: predictions + outbox rows (/s)",
                r["bridge_predictions_per_s"],
                floor,
                "predictions/s",
                ">= 10,000/s and >= 70% of bare",
                met,
                f"ticks of {assets}, 5 inputs each, 1 outbox row each; floor: bare {floor_note}; "
                f"CPU of this process {r['bridge_cpu_us_per_prediction']} us/prediction "
                f"(floor {r['floor_cpu_us_per_prediction'][r['floor']]}); "
                f"load {r['load_average_1m'][0]}-{r['load_average_1m'][1]}",
            )
        )
    table.append(
        row(
            "MES body encode, per prediction (us)",
            round(encode_us, 1),
            None,
            "us",
            "report",
            None,
            "the destination's encode, run by the store writer's feed in production",
        )
    )
    return {
        "runs": runs,
        "encode_us_per_prediction": round(encode_us, 1),
        "rows": table,
        "command": " ".join(sys.argv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--rows", type=int, default=100_000, help="predictions per backend")
    parser.add_argument("--assets", type=int, default=2000, help="predictions per tick")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10,000 rows (< 30 s)")
    args = parser.parse_args()
    if args.quick:
        args.rows = 10_000
    figures = run([b.strip() for b in args.backend.split(",") if b.strip()], args.rows, args.assets)
    for r in figures["rows"]:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        floor = f"{r['floor']:,.0f}" if r["floor"] is not None else "-"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(
            f"{r['measure']:<62} {r['bridge']:>10,} {floor:>10} {ratio:>5}  {r['target']:<32} {met}"
        )
        if r["note"]:
            print(f"    {r['note']}")
    print(f"wrote {write_result('store', figures)}")


if __name__ == "__main__":
    main()
