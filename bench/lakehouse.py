"""Lakehouse throughput: rows/s into Delta through the destination (spool, fsync, commits) against
``write_deltalake`` of the same Arrow batches directly, in the same run; file count and sizes.

A simulated plant of ``--assets`` assets x 5 tags at 1 Hz (raw telemetry) and one prediction per
asset and second, ``--seconds`` of simulated time fed as fast as it goes:

1. through the destination: each simulated second's tag readings go to the sample feed and its
   predictions are encoded (``encode``, as the store writer does) and delivered in batches of
   ``--batch-size`` (``deliver``: spool append + fsync); the destination's own tasks turn the
   readings into rows and commit sealed segments. Measured from the first row fed until every
   row is committed: rows/s (telemetry + predictions).
2. bare: the same rows as Arrow tables built by the destination's own row builders (that time
   is reported, not counted), written with ``write_deltalake`` directly in commits of the same
   size (``--file-mb`` of Arrow each), same partitioning: rows/s of the writes alone, and of
   building + writing.

The ratio destination / bare is the figure (target >= 0.7). Then the files of each table after
the run (count, sizes), and after one ``optimize.compact`` to 256 MB.

    python -m bench.lakehouse [--quick] [--assets 2000] [--seconds 3600] [--batch-size 2000]
                              [--file-mb 128] [--keep DIR]
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

from bench.common import row, write_result
from bridge.connectors.lakehouse.config import LakehouseSettings
from bridge.connectors.lakehouse.destination import PARTITIONS, LakehouseDestination
from bridge.connectors.lakehouse.rows import (
    decode_prediction,
    encode_prediction,
    predictions_table,
)
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
        rows = [
            decode_prediction(encode_prediction(Trigger(p), "bench")) or {} for p in predictions
        ]
        parts["predictions"].append(predictions_table(rows))
        built["predictions"] += time.perf_counter() - t
        last = second == args.seconds - 1
        for table, tables in parts.items():
            if tables and (last or sum(x.nbytes for x in tables) >= target):
                yield table, pa.concat_tables(tables), built[table]
                parts[table], built[table] = [], 0.0


def bare(root: Path, plant: Plant, args: argparse.Namespace) -> dict[str, Any]:
    write_s = build_s = 0.0
    rows = 0
    for table, data, built in _chunks(plant, args):
        t = time.perf_counter()
        write_deltalake(
            str(root / "bare" / table),
            data,
            mode="append",
            partition_by=PARTITIONS[table] or None,
            target_file_size=int(args.file_mb * _MB),
        )
        write_s += time.perf_counter() - t
        build_s += built
        rows += data.num_rows
    return {
        "rows": rows,
        "write_s": round(write_s, 2),
        "build_s": round(build_s, 2),
        "rows_per_s": round(rows / write_s),
        "rows_per_s_with_build": round(rows / (write_s + build_s)),
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
    try:
        print(
            f"{args.assets} assets x {len(TAGS)} tags at 1 Hz + {args.assets} predictions/s, "
            f"{args.seconds} s of simulated time",
            flush=True,
        )
        destination = await through_destination(root, plant, args)
        print("destination:", json.dumps(destination), flush=True)
        floor = bare(root, plant, args)
        print("bare write_deltalake:", json.dumps(floor), flush=True)
        tables = {t: files(root / "lake" / t) for t in ("telemetry", "predictions")}
        for t in tables:
            DeltaTable(str(root / "lake" / t)).optimize.compact(target_size=256 * _MB)
        compacted = {t: files(root / "lake" / t) for t in ("telemetry", "predictions")}
        print("files:", json.dumps(tables), flush=True)
        print("files after optimize:", json.dumps(compacted), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    ratio = destination["rows_per_s"] / floor["rows_per_s"]
    rows = [
        row(
            "rows/s into Delta (destination vs bare write_deltalake)",
            destination["rows_per_s"],
            floor["rows_per_s"],
            "rows/s",
            ">= 0.7x",
            ratio >= 0.7,
        ),
        row(
            "rows/s into Delta (destination vs bare build + write_deltalake)",
            destination["rows_per_s"],
            floor["rows_per_s_with_build"],
            "rows/s",
            "-",
            None,
            "the bare side also pays for the Arrow tables from Python objects",
        ),
    ]
    figures = {
        "assets": args.assets,
        "tags_per_asset": len(TAGS),
        "simulated_s": args.seconds,
        "batch_size": args.batch_size,
        "file_mb": args.file_mb,
        "destination": destination,
        "bare": floor,
        "files": tables,
        "files_after_optimize": compacted,
        "rows": rows,
        "quick": args.quick,
        "command": " ".join(sys.argv),
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
        "--quick", action="store_true", help="smoke run: 200 assets, 60 s, 16 MB segments"
    )
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.assets, parsed.seconds, parsed.file_mb, parsed.buffered_s = 200, 60, 16, 60
    asyncio.run(main(parsed))
