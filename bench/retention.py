"""Retention and the prediction history on SQLite: bytes per prediction, page queries of
``GET /api/v1/predictions`` on a large store, and what the retention job costs while the store
writer takes 2,000 predictions/s.

    python -m bench.retention                  # 10,000,000 rows (~8 GB and several minutes)
    python -m bench.retention --rows 1000000
    python -m bench.retention --quick          # smoke run: 60,000 rows

1. Bytes per prediction: ``--size-rows`` realistic predictions (pump model, 4 inputs, uuid5
   ids) written through the store writer's own path (``PredictionRepository.add_many``, batches
   of 500) into a fresh store; the file size after a WAL checkpoint / rows, and per table and
   index (SQLite's dbstat).
2. A store of ``--rows`` rows (2,000 assets at 1 Hz, the newest a second ago), filled with
   plain sqlite3 inserts of the same row with sequential ids (fast to fill; random uuid5 ids
   make the id index ~1/3 larger, see 1.) and the indexes of revision 0007 only. The page
   queries that ``GET /predictions`` runs (``PredictionHistory.page``: newest page, a page deep
   in the history by cursor, one asset, an hour's range) are timed there **without** the
   revision 0008 indexes (the floor: what the issue measured), then the indexes are built
   (timed: what the upgrade costs on an existing store) and the queries are timed again.
3. Retention while writing: a thread writes 2,000 predictions/s (200 every 100 ms, as the
   store sink batches them) for ``--seconds`` alone, then again while the retention job
   (``RetentionJob.run_once``, default settings: 5,000 rows per batch, 50 ms pause) deletes the
   oldest ``--delete-rows`` rows. Reported: rows deleted per second, the writer's commit latency
   (p50 / p99 / max) in both windows, the process's CPU in both, and the share of its time the
   job needs at steady state (deleting 2,000 rows/s, as many as are written).

Writes bench/results/retention.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import percentile, row, write_result
from bridge.config.spec import RetentionSettings
from bridge.drift.events import DRIFT_LABEL
from bridge.logging import configure_logging
from bridge.runtime.retention import RetentionJob
from bridge.store.alerts import AlertRepository
from bridge.store.codec import prediction_to_values
from bridge.store.db import Store, open_store
from bridge.store.history import PredictionHistory
from bridge.store.repository import PredictionRepository
from bridge.store.retention import RetentionStore
from bridge.types import InputSnapshot, Prediction, Quality

ASSETS = 2000
RATE = 2000  # predictions/s written while the retention job runs
TICK_S = 0.1
REVISION = "c0ffee" * 10 + "c0ff"
INDEXES_0008 = {
    "ix_predictions_timestamp": "predictions (timestamp, id)",
    "ix_predictions_model_version": "predictions (model, version)",
}


def prediction(i: int, ts: float, run: str = "bench") -> Prediction:
    """What the gateway stores for the pump model: a label, its score, 4 input snapshots."""
    asset = f"pump-{i % ASSETS:04d}"
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}/{asset}/pump-health/{i}")),
        seq=i // ASSETS,
        asset=asset,
        model="pump-health",
        version="1.0.0",
        sha256="ab" * 32,
        value="healthy",
        score=0.9731,
        quality=Quality.GOOD,
        timestamp=ts,
        input_age_s=0.12,
        inputs=tuple(
            InputSnapshot(f"{asset}.{tag}", 41.5 + k, Quality.GOOD, ts - 0.1)
            for k, tag in enumerate(
                ("vibration", "bearing_temperature", "discharge_pressure", "speed")
            )
        ),
    )


def _checkpointed_size(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def bytes_per_row(workdir: Path, rows: int) -> dict[str, Any]:
    db = workdir / "size.db"
    store = open_store(f"sqlite:///{db}")
    try:
        empty = _checkpointed_size(db)
        repo = PredictionRepository(store, REVISION)
        t0 = time.time() - rows / RATE
        started = time.perf_counter()
        for start in range(0, rows, 500):
            repo.add_many(
                [prediction(i, t0 + i / RATE) for i in range(start, min(rows, start + 500))]
            )
        seconds = time.perf_counter() - started
    finally:
        store.dispose()
    size = _checkpointed_size(db)
    with sqlite3.connect(db) as conn:
        parts = dict(
            conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat WHERE name LIKE '%predictions%' "
                "GROUP BY name ORDER BY 2 DESC"
            ).fetchall()
        )
    return {
        "rows": rows,
        "file_bytes": size - empty,
        "bytes_per_row": round((size - empty) / rows, 1),
        "per_table_and_index_bytes_per_row": {k: round(v / rows, 1) for k, v in parts.items()},
        "write_rows_per_s": round(rows / seconds),
    }


def fill(db: Path, rows: int, now: float) -> dict[str, Any]:
    """``rows`` predictions, 2,000 assets at 1 Hz, the newest at ``now`` - 1 s; the revision
    0008 indexes are dropped first (the store as it was before them)."""
    store = open_store(f"sqlite:///{db}")
    store.dispose()
    template = prediction_to_values(prediction(0, now))
    template["mapping_revision"] = REVISION
    columns = list(template)
    sql = f"INSERT INTO predictions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    at = {c: k for k, c in enumerate(columns)}
    base = [template[c] for c in columns]
    started = time.perf_counter()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA cache_size=-1000000")
        conn.execute("PRAGMA synchronous=OFF")  # the fill only: the measured parts use NORMAL
        for name in INDEXES_0008:
            conn.execute(f"DROP INDEX {name}")
        chunk = 50_000
        for start in range(0, rows, chunk):
            batch = []
            for i in range(start, min(rows, start + chunk)):
                values = base.copy()
                values[at["prediction_id"]] = f"{i:08x}-0000-4000-8000-000000000000"
                values[at["seq"]] = i // ASSETS
                values[at["asset"]] = f"pump-{i % ASSETS:04d}"
                values[at["timestamp"]] = now - 1 - (rows - 1 - i) // ASSETS
                batch.append(values)
            conn.executemany(sql, batch)
            conn.commit()
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 1)}


def build_indexes(db: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with sqlite3.connect(db) as conn:
        for name, on in INDEXES_0008.items():
            started = time.perf_counter()
            conn.execute(f"CREATE INDEX {name} ON {on}")
            conn.commit()
            out[name] = round(time.perf_counter() - started, 2)
    return out


def time_pages(store: Store, rows: int, now: float, repeats: int) -> dict[str, dict[str, float]]:
    history = PredictionHistory(store)
    middle = now - rows / ASSETS / 2
    queries: dict[str, Callable[[], object]] = {
        "newest page (100)": lambda: history.page(None, None, None, 100),
        "page deep in the history (cursor)": lambda: history.page(
            None, None, None, 100, after=(middle, 2**62)
        ),
        "one asset, newest page": lambda: history.page("pump-0007", None, None, 100),
        "an hour's range, first page": lambda: history.page(None, middle - 3600, middle, 100),
    }
    out: dict[str, dict[str, float]] = {}
    for name, query in queries.items():
        if repeats > 1:
            query()  # warm the page cache (a single full scan of a large store is not repeated)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            page = query()
            times.append((time.perf_counter() - started) * 1000)
        assert getattr(page, "items", None), name
        out[name] = {
            "median_ms": round(statistics.median(times), 2),
            "p95_ms": round(percentile(times, 95), 2),
            "repeats": repeats,
        }
    return out


class Writer(threading.Thread):
    """2,000 predictions/s in batches of 200 every 100 ms through the store writer's path."""

    def __init__(self, store: Store, first: int) -> None:
        super().__init__(daemon=True)
        self._repo = PredictionRepository(store, REVISION)
        self._next = first
        self.latencies_ms: list[float] = []
        self.rows = 0
        self.stop = threading.Event()

    def run(self) -> None:
        per_tick = int(RATE * TICK_S)
        due = time.monotonic()
        while not self.stop.is_set():
            now = time.time()
            batch = [prediction(self._next + k, now, "live") for k in range(per_tick)]
            started = time.perf_counter()
            self._repo.add_many(batch)
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self._next += per_tick
            self.rows += per_tick
            due += TICK_S
            time.sleep(max(0.0, due - time.monotonic()))


def _window(writer: Writer, seconds: float, job: Callable[[], Any] | None) -> dict[str, Any]:
    rows0, lat0 = writer.rows, len(writer.latencies_ms)
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = None
    if job is not None:
        result = job()
    else:
        time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    lat = writer.latencies_ms[lat0:]
    return {
        "seconds": round(elapsed, 2),
        "written_per_s": round((writer.rows - rows0) / elapsed),
        "commit_p50_ms": round(percentile(lat, 50), 2),
        "commit_p99_ms": round(percentile(lat, 99), 2),
        "commit_max_ms": round(max(lat), 2),
        "cpu_percent": round(100 * cpu / elapsed, 1),
        "result": result,
    }


def _run_once(job: RetentionJob) -> dict[str, int]:
    return asyncio.run(job.run_once())


def retention_while_writing(
    store: Store, rows: int, delete_rows: int, now: float, seconds: float, batches: list[int]
) -> dict[str, Any]:
    """The writer alone, then one retention run per batch size, each deleting the next
    ``delete_rows`` oldest rows while the writer goes on."""
    writer = Writer(store, rows)
    writer.start()
    runs = []
    try:
        time.sleep(1.0)  # settle
        alone = _window(writer, seconds, None)
        alone.pop("result")
        for k, batch_rows in enumerate(batches, start=1):
            # Row i is stamped now - 1 - (rows - 1 - i) // ASSETS: this cutoff takes the rows
            # before k * delete_rows.
            cutoff = now - (rows - k * delete_rows) // ASSETS
            settings = RetentionSettings(
                predictions_days=(now - cutoff) / 86400, batch_rows=batch_rows
            )
            job = RetentionJob(
                RetentionStore(store, DRIFT_LABEL),
                settings,
                AlertRepository(store),
                "bench",
                clock=lambda: now,
            )
            during = _window(writer, 0, functools.partial(_run_once, job))
            deleted = during.pop("result")["predictions"]
            rate = deleted / during["seconds"]
            runs.append(
                {
                    "batch_rows": batch_rows,
                    "pause_s": settings.pause_s,
                    "deleted": deleted,
                    "deleted_per_s": round(rate),
                    "writer": during,
                    "steady_state_duty": round(RATE / rate, 3),
                }
            )
    finally:
        writer.stop.set()
        writer.join(10)
    return {"writer_alone": alone, "runs": runs}


def _retention_rows(retention: dict[str, Any]) -> list[dict[str, Any]]:
    alone = retention["writer_alone"]
    out = []
    for r in retention["runs"]:
        w = r["writer"]
        out += [
            row(
                f"retention, {r['batch_rows']:,} rows/batch: deleted/s while writing 2,000/s",
                r["deleted_per_s"],
                RATE,
                "rows/s",
                ">= 2,000/s (keeps up)",
                r["deleted_per_s"] >= RATE,
                f"{r['deleted']:,} rows in {w['seconds']} s; duty at steady state "
                f"{r['steady_state_duty']:.1%}",
            ),
            row(
                f"writer commit p99 during retention, {r['batch_rows']:,} rows/batch (ms)",
                w["commit_p99_ms"],
                alone["commit_p99_ms"],
                "ms",
                "report (floor: the writer alone)",
                None,
                f"p50 {w['commit_p50_ms']} vs {alone['commit_p50_ms']} ms, max "
                f"{w['commit_max_ms']} vs {alone['commit_max_ms']} ms; written "
                f"{w['written_per_s']}/s vs {alone['written_per_s']}/s; process CPU "
                f"{w['cpu_percent']} % vs {alone['cpu_percent']} %",
            ),
        ]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-retention-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        size = bytes_per_row(workdir, args.size_rows)
        print(f"bytes per prediction: {size['bytes_per_row']} ({size['rows']:,} rows)", flush=True)
        db = workdir / "big.db"
        now = time.time()
        filled = fill(db, args.rows, now)
        print(f"filled {args.rows:,} rows in {filled['seconds']} s", flush=True)
        store = open_store(f"sqlite:///{db}")
        try:
            before = time_pages(store, args.rows, now, args.before_repeats)
            index_s = build_indexes(db)
            print(f"revision 0008 indexes built in {index_s} s", flush=True)
            after = time_pages(store, args.rows, now, args.repeats)
            for name in after:
                print(
                    f"{name}: {before[name]['median_ms']} ms without the 0008 indexes -> "
                    f"{after[name]['median_ms']} ms",
                    flush=True,
                )
            retention = retention_while_writing(
                store, args.rows, args.delete_rows, now, args.seconds, args.batch_rows
            )
        finally:
            store.dispose()
        db_bytes = _checkpointed_size(db)
        print(f"store: {db_bytes / args.rows:.0f} bytes per row after retention", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    newest = "newest page (100)"
    figures: dict[str, Any] = {
        "quick": args.quick,
        "command": " ".join(["python -m bench.retention", *sys.argv[1:]]),
        "bytes_per_prediction": size,
        "store_rows": args.rows,
        "store_bytes": db_bytes,
        "fill": filled,
        "index_build_s": index_s,
        "pages_without_0008_indexes": before,
        "pages": after,
        "retention": retention,
        "rows": [
            row(
                "bytes per stored prediction (SQLite, pump model)",
                size["bytes_per_row"],
                None,
                "B",
                "report",
                None,
                f"{size['rows']:,} rows via the store writer's path; "
                f"{size['bytes_per_row'] * RATE * 86400 / 1e9:,.0f} GB/day at 2,000/s",
            ),
            row(
                f"GET /predictions newest page, {args.rows:,} rows (ms)",
                after[newest]["median_ms"],
                before[newest]["median_ms"],
                "ms",
                "report (floor: without the 0008 indexes)",
                None,
                "; ".join(
                    f"{k}: {before[k]['median_ms']} -> {v['median_ms']} ms (p95 {v['p95_ms']})"
                    for k, v in after.items()
                ),
            ),
            *_retention_rows(retention),
        ],
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the large store")
    parser.add_argument("--size-rows", type=int, default=200_000, help="rows for bytes/row")
    parser.add_argument(
        "--delete-rows", type=int, help="per batch size (default: a tenth, at most 1,000,000)"
    )
    parser.add_argument(
        "--batch-rows",
        default="5000,1000",
        help="retention batch sizes to compare (comma-separated; 5000 is the default setting)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="writer-alone window")
    parser.add_argument("--repeats", type=int, default=30, help="page queries per kind")
    parser.add_argument("--before-repeats", type=int, help="without the indexes (default 3/1)")
    parser.add_argument("--workdir", help="where the stores go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of bench/results/")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 60,000 rows (not the target's figures)"
    )
    args = parser.parse_args()
    args.batch_rows = [int(b) for b in args.batch_rows.split(",") if b]
    if args.quick:
        args.rows, args.size_rows, args.seconds, args.repeats = 60_000, 10_000, 2.0, 5
    if args.delete_rows is None:
        args.delete_rows = min(args.rows // 10, 1_000_000) if not args.quick else 10_000
    if args.before_repeats is None:
        args.before_repeats = 3 if args.rows <= 1_000_000 else 1
    configure_logging("warning", json=False)
    figures = run(args)
    path = write_result("retention", figures, args.out)
    for r in figures["rows"]:
        print(f"{r['measure']}: {r['bridge']} (floor {r['floor']}) {r['note']}")
    print(f"wrote {path} (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
