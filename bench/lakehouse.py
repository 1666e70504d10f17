"""Lakehouse throughput: the Delta commit path of the destination against ``write_deltalake`` of
the same Arrow batches (same run), rows/s end to end from samples and predictions, the tables'
files; and the NGSI-LD destination's batch upsert against a bare httpx client.

A simulated plant of ``--assets`` assets x 5 tags at 1 Hz (raw telemetry) and one prediction per
asset and second (the plant makes ``--assets`` x 6 rows/s: 12,000 at 2,000 assets):

1. end to end: ``--seconds`` of simulated time fed as fast as it goes through the destination:
   each second's tag readings go to the sample feed and its predictions are encoded
   (``encode``, as the store writer does) and delivered in batches of ``--batch-size``
   (``deliver``: spool append + fsync); the destination's own tasks turn the readings into rows
   and commit sealed segments. From the first row fed until every row is committed: rows/s,
   also without the time the simulation took to make the readings and predictions.
2. the commit path (the >= 0.7 target): the same rows as Arrow tables, built by the
   destination's own row builders, in chunks of ``--file-mb`` of Arrow. Each chunk is spooled
   as one segment (not timed: ``deliver`` and the telemetry drain pay for that), then timed
   side by side, the side going first alternating: the destination's committer committing
   that segment (read it back, ask the table which segments it holds, check the schema,
   ``write_deltalake`` with the application transaction, learn the file sizes), and
   ``write_deltalake`` of the same Arrow table straight to another table, same partitioning
   and largest file size. The build time is reported, counted in neither.
3. the files of each table after the end-to-end run (count, sizes), and after one
   ``optimize.compact`` to 256 MB.
4. NGSI-LD batch upsert: ``bench.ngsild``'s measurement (its defaults; ``--quick``: its quick
   run), the destination's ``deliver`` against a bare ``httpx`` client to the same in-process
   broker.

    python -m bench.lakehouse [--quick] [--assets 2000] [--seconds 3600] [--batch-size 2000]
                              [--file-mb 128] [--keep DIR] [--no-ngsild]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
from deltalake import DeltaTable, write_deltalake

from bench import ngsild
from bench.common import row, write_result
from bridge.connectors.lakehouse.committer import Committer, KeptSegments
from bridge.connectors.lakehouse.config import LakehouseSettings
from bridge.connectors.lakehouse.delta import DeltaTables
from bridge.connectors.lakehouse.destination import PARTITIONS, LakehouseDestination
from bridge.connectors.lakehouse.rows import encode_prediction, predictions_from_bodies
from bridge.connectors.lakehouse.sizing import SPLIT
from bridge.connectors.lakehouse.spool import TableSpool
from bridge.connectors.lakehouse.telemetry import TelemetryBuffer
from bridge.destination import DestinationContext, Envelope
from bridge.logging import configure_logging
from bridge.types import Prediction, Quality, SampleCallback, TagReading, Trigger

T0 = 1714564800.0
TAGS = (
    ("vibration", "mm/s"),
    ("bearing_temperature", "degC"),
    ("discharge_pressure", "bar"),
    ("speed", "rpm"),
    ("running", None),
)
LEVELS = {"enterprise": "acme", "site": "dallas", "area": "packaging", "line": "line-1"}
_MB = 1024 * 1024


class Plant:
    """The simulated readings and predictions of one second."""

    def __init__(self, assets: int, lines: int) -> None:
        self.assets = [f"pump-{i:05d}" for i in range(assets)]
        self.asset_levels = {
            a: {"line": f"line-{i % lines + 1}"} for i, a in enumerate(self.assets)
        }
        self.ids = [(f"{a}.{t}", a, t, unit) for a in self.assets for t, unit in TAGS]
        self._ns = uuid.uuid4()

    def readings(self, second: int) -> list[TagReading]:
        at = T0 + second
        good = Quality.GOOD
        return [
            TagReading(tag, asset, name, (second % 97) * 0.5 + i % 13, unit, good, at, at + 0.05)
            for i, (tag, asset, name, unit) in enumerate(self.ids)
        ]

    def predictions(self, second: int) -> list[Prediction]:
        at = T0 + second
        return [
            Prediction(
                id=str(uuid.uuid5(self._ns, f"{a}/{second}")),
                seq=second,
                asset=a,
                model="pump-health",
                version="1.0.0",
                sha256="ab" * 32,
                value="healthy" if (second + i) % 50 else "bearing_fault",
                score=0.93,
                quality=Quality.GOOD,
                timestamp=at + 0.2,
                input_age_s=0.3,
                drift_score=0.04,
            )
            for i, a in enumerate(self.assets)
        ]


class Feed:
    """A ``bridge.types.SampleFeed``, as the tag table's."""

    def __init__(self) -> None:
        self.callbacks: list[SampleCallback] = []

    def __call__(self, callback: SampleCallback) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def publish(self, readings: list[TagReading]) -> None:
        for callback in self.callbacks:
            callback(readings)


def _settings(root: Path, plant: Plant, args: argparse.Namespace, max_age_s: float) -> Any:
    return LakehouseSettings.model_validate(
        {
            "uri": str(root / "lake"),
            "spool_dir": str(root / "spool"),
            **LEVELS,
            "asset_levels": plant.asset_levels,
            "flush": {"target_file_mb": args.file_mb, "max_age_s": max_age_s},
            "optimize": None,
            "vacuum": None,
            "batch_size": args.batch_size,
        }
    )


async def _committed(lake: LakehouseDestination) -> None:
    while True:
        c = lake.health().counters
        if (
            c["predictions_backlog_rows"] == 0
            and c["telemetry_backlog_rows"] == 0
            and c["telemetry_buffered"] == 0
        ):
            return
        await asyncio.sleep(0.05)


async def through_destination(root: Path, plant: Plant, args: argparse.Namespace) -> dict[str, Any]:
    feed = Feed()
    # Size seals the segments while the plant is fed (as at 1 Hz: 128 MB of telemetry is two
    # minutes of it, well within the default max_age_s); closing seals and commits the tail.
    settings = _settings(root, plant, args, 300.0)
    lake = LakehouseDestination("lake", settings, DestinationContext("bench", samples=feed))
    await lake.start()
    started = time.perf_counter()
    feed_s = 0.0
    for second in range(args.seconds):
        g = time.perf_counter()
        readings = plant.readings(second)
        predictions = plant.predictions(second)
        feed_s += time.perf_counter() - g
        feed.publish(readings)
        bodies = [Envelope(p.id, lake.encode(Trigger(p)) or "") for p in predictions]
        for i in range(0, len(bodies), args.batch_size):
            outcomes = await lake.deliver(bodies[i : i + args.batch_size])
            assert all(o is None for o in outcomes), outcomes[:3]
        # The feed's buffer is drained once a second: a bounded number of seconds waits.
        while lake.health().counters["telemetry_buffered"] > args.buffered_s * len(readings):  # noqa: ASYNC110 - another task's figure
            await asyncio.sleep(0.01)
    fed = time.perf_counter()
    await lake.close()
    counters = dict(lake.health().counters)
    left = counters["predictions_backlog_rows"] + counters["telemetry_backlog_rows"]
    if left:
        # The close's final commit took longer than its bound: the next start commits it.
        again = LakehouseDestination("lake", settings, DestinationContext("bench"))
        await again.start()
        await _committed(again)
        await again.close()
        for key, value in again.health().counters.items():
            if key.endswith(("_committed_rows", "_commits")):
                counters[key] += value
    done = time.perf_counter()
    rows = counters["telemetry_committed_rows"] + counters["predictions_committed_rows"]
    wall = done - started
    return {
        "rows": rows,
        "telemetry_rows": counters["telemetry_committed_rows"],
        "prediction_rows": counters["predictions_committed_rows"],
        "wall_s": round(wall, 2),
        "feeding_s": round(fed - started, 2),
        "simulation_s": round(feed_s, 2),
        "rows_per_s": round(rows / wall),
        "rows_per_s_without_simulation": round(rows / (wall - feed_s)),
        "commits": counters["telemetry_commits"] + counters["predictions_commits"],
    }


def _chunks(plant: Plant, args: argparse.Namespace) -> Iterator[tuple[str, pa.Table, float]]:
    """(table, Arrow rows, seconds it took to build them), about ``--file-mb`` each."""
    settings = _settings(Path("/nonexistent"), plant, args, 5.0)
    buffer = TelemetryBuffer(settings.telemetry, settings)
    target = args.file_mb * _MB
    parts: dict[str, list[pa.Table]] = {"telemetry": [], "predictions": []}
    built = {"telemetry": 0.0, "predictions": 0.0}
    for second in range(args.seconds):
        readings = plant.readings(second)
        predictions = plant.predictions(second)
        t = time.perf_counter()
        parts["telemetry"].append(buffer.rows(readings, time.time()).table())
        built["telemetry"] += time.perf_counter() - t
        t = time.perf_counter()
        bodies = [encode_prediction(Trigger(p), "bench") for p in predictions]
        parsed = predictions_from_bodies(bodies)  # as ``deliver`` does
        assert parsed is not None
        parts["predictions"].append(parsed)
        built["predictions"] += time.perf_counter() - t
        last = second == args.seconds - 1
        for table, tables in parts.items():
            if tables and (last or sum(x.nbytes for x in tables) >= target):
                yield table, pa.concat_tables(tables), built[table]
                parts[table], built[table] = [], 0.0


async def commit_path(root: Path, plant: Plant, args: argparse.Namespace) -> dict[str, Any]:
    """The destination's commit of each spooled segment against ``write_deltalake`` of the same
    Arrow table, chunk by chunk, the side going first alternating."""
    base = root / "commit"
    settings = _settings(base, plant, args, 86400.0)
    spools = {t: TableSpool(base / "spool", t) for t in ("telemetry", "predictions")}
    kept = KeptSegments(base / "spool" / "predictions" / "done", 100_000)
    committer = Committer(
        "bench",
        settings,
        DeltaTables(str(base / "lake"), {}, PARTITIONS),
        spools,
        "bench/commit-path",
        {"predictions": kept},
        list,  # no context rows: the context table is not measured here
    )
    commit_s = write_s = build_s = spool_s = 0.0
    rows = chunks = 0
    for table, data, built in _chunks(plant, args):
        t = time.perf_counter()
        await asyncio.to_thread(spools[table].append, data)
        spools[table].seal()
        spool_s += time.perf_counter() - t

        async def destination(table: str = table) -> float:
            t = time.perf_counter()
            await committer.tick(final=True)
            if committer.errors() or spools[table].sealed():
                raise RuntimeError(f"the commit failed: {committer.errors()}")
            return time.perf_counter() - t

        async def direct(table: str = table, data: pa.Table = data) -> float:
            t = time.perf_counter()
            await asyncio.to_thread(
                write_deltalake,
                str(base / "bare" / table),
                data,
                mode="append",
                partition_by=PARTITIONS[table] or None,
                target_file_size=round(args.file_mb * _MB * SPLIT),  # as the committer
            )
            return time.perf_counter() - t

        if chunks % 2:
            write_s += await direct()
            commit_s += await destination()
        else:
            commit_s += await destination()
            write_s += await direct()
        build_s += built
        rows += data.num_rows
        chunks += 1
    return {
        "rows": rows,
        "segments": chunks,
        "destination_commit_s": round(commit_s, 2),
        "destination_rows_per_s": round(rows / commit_s),
        "bare_write_s": round(write_s, 2),
        "bare_rows_per_s": round(rows / write_s),
        "build_s": round(build_s, 2),
        "spool_append_s": round(spool_s, 2),
        "bare_rows_per_s_with_build": round(rows / (write_s + build_s)),
    }


def files(table: Path) -> dict[str, Any]:
    dt = DeltaTable(str(table))
    sizes = [os.path.getsize(uri) for uri in dt.file_uris()]
    mb = [s / _MB for s in sizes]
    return {
        "files": len(sizes),
        "total_mb": round(sum(mb), 1),
        "min_mb": round(min(mb), 2) if mb else None,
        "median_mb": round(statistics.median(mb), 2) if mb else None,
        "max_mb": round(max(mb), 2) if mb else None,
        "partitions": len({os.path.dirname(uri) for uri in dt.file_uris()}),
    }


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", json=False)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-lakehouse-"))
    root.mkdir(parents=True, exist_ok=True)
    plant = Plant(args.assets, args.lines)
    plant_rate = args.assets * (len(TAGS) + 1)
    try:
        print(
            f"{args.assets} assets x {len(TAGS)} tags at 1 Hz + {args.assets} predictions/s "
            f"({plant_rate:,} rows/s), {args.seconds} s of simulated time",
            flush=True,
        )
        end_to_end = await through_destination(root, plant, args)
        print("end to end:", json.dumps(end_to_end), flush=True)
        commit = await commit_path(root, plant, args)
        print("commit path:", json.dumps(commit), flush=True)
        tables = {t: files(root / "lake" / t) for t in ("telemetry", "predictions")}
        for t in tables:
            DeltaTable(str(root / "lake" / t)).optimize.compact(target_size=256 * _MB)
        compacted = {t: files(root / "lake" / t) for t in ("telemetry", "predictions")}
        print("files:", json.dumps(tables), flush=True)
        print("files after optimize:", json.dumps(compacted), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    ngsi: dict[str, Any] | None = None
    if not args.no_ngsild:
        quick = argparse.Namespace(entities=1_000, assets=100, batch_size=50, rounds=1)
        full = argparse.Namespace(entities=20_000, assets=500, batch_size=50, rounds=3)
        try:
            ngsi = await ngsild.measure(quick if args.quick else full)
        except Exception as exc:  # the lakehouse figures are kept, the failure reported
            ngsi = {"error": f"{type(exc).__name__}: {exc}"[:500], "rows": []}
            print(f"NGSI-LD section failed: {ngsi['error']}", flush=True)
    ratio = commit["destination_rows_per_s"] / commit["bare_rows_per_s"]
    rows = [
        row(
            "Delta commit path: the destination's commit of its spooled segments vs bare "
            "write_deltalake of the same Arrow batches (rows/s)",
            commit["destination_rows_per_s"],
            commit["bare_rows_per_s"],
            "rows/s",
            ">= 0.7x",
            ratio >= 0.7,
        ),
        row(
            "end to end into Delta: samples and predictions -> rows -> spool -> commits "
            "(rows/s, simulation time left out) vs the plant's rate",
            end_to_end["rows_per_s_without_simulation"],
            plant_rate,
            "rows/s",
            "report",
            None,
            f"with the simulation's time counted: {end_to_end['rows_per_s']:,} rows/s",
        ),
        row(
            "end to end into Delta vs bare build (same row builders) + write_deltalake (rows/s)",
            end_to_end["rows_per_s_without_simulation"],
            commit["bare_rows_per_s_with_build"],
            "rows/s",
            "report",
            None,
            "the destination also encodes and decodes each prediction, fsyncs every append "
            "and runs its commits beside the feeding",
        ),
    ]
    if ngsi is not None:
        rows += ngsi["rows"]
    figures = {
        "assets": args.assets,
        "tags_per_asset": len(TAGS),
        "plant_rows_per_s": plant_rate,
        "simulated_s": args.seconds,
        "batch_size": args.batch_size,
        "file_mb": args.file_mb,
        "end_to_end": end_to_end,
        "commit_path": commit,
        "files": tables,
        "files_after_optimize": compacted,
        "ngsild": ngsi,
        "rows": rows,
        "quick": args.quick,
        "command": " ".join(["python -m bench.lakehouse", *sys.argv[1:]]),
    }
    for r in rows:
        print(f"{r['measure']}: {r['bridge']} vs {r['floor']} (ratio {r['ratio']})")
    path = write_result("lakehouse-quick" if args.quick else "lakehouse", figures)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.lakehouse", description=__doc__)
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=4, help="ISA-95 lines the assets are on")
    parser.add_argument("--seconds", type=int, default=3600, help="simulated seconds")
    parser.add_argument("--batch-size", type=int, default=2000, help="predictions per deliver")
    parser.add_argument("--file-mb", type=float, default=128, help="flush.target_file_mb")
    parser.add_argument("--keep", default="", help="write the tables here and keep them")
    parser.add_argument(
        "--buffered-s", type=int, default=30, help="simulated seconds of readings let wait"
    )
    parser.add_argument(
        "--no-ngsild", action="store_true", help="leave out the NGSI-LD upsert section"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 200 assets, 60 s, 16 MB segments; NGSI-LD: 1,000 entities, 1 round",
    )
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.assets, parsed.seconds, parsed.file_mb, parsed.buffered_s = 200, 60, 16, 60
    asyncio.run(main(parsed))
