"""The committer's Delta writes: Parquet files sized near ``flush.target_file_mb`` once a commit
showed the compression (remembered across restarts), a table an object store wrongly calls
"not found" never taking a segment twice, and a delivery's bodies parsed in bulk or, with
bodies of other kinds among them, one by one with the same rows. Real spool and Delta tables in
tmp_path."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from lakehouse_support import GATEWAY, envelopes, lake_settings, prediction, read_table
from support import wait_until

from bridge.connectors.lakehouse.committer import Committer
from bridge.connectors.lakehouse.delta import DeltaTables
from bridge.connectors.lakehouse.destination import PARTITIONS, LakehouseDestination
from bridge.connectors.lakehouse.rows import (
    TIMESTAMP,
    decode_prediction,
    encode_prediction,
    predictions_from_bodies,
    predictions_table,
    telemetry_schema,
)
from bridge.connectors.lakehouse.spool import TableSpool
from bridge.destination import DestinationContext, Envelope
from bridge.types import Trigger

pytestmark = pytest.mark.timeout(120)

T0 = 1714564800.0
_MB = 1024 * 1024
APP = "bridge/test/lake/spool"


def _telemetry(rng: random.Random, first: int, n: int) -> pa.Table:
    """``n`` telemetry rows of two lines, noisy values (compress as real readings do)."""
    times = [T0 + (first + i) * 0.001 for i in range(n)]
    micros = [round(t * 1_000_000) for t in times]
    columns = {
        "date": pa.array([19844] * n, pa.date32()),
        "line": pa.array([f"line-{i % 2}" for i in range(n)]),
        "time": pa.array(micros, pa.int64()).cast(TIMESTAMP),
        "received_time": pa.array(micros, pa.int64()).cast(TIMESTAMP),
        "asset": pa.array([f"pump-{i % 50:03d}" for i in range(n)]),
        "tag": pa.array(["vibration"] * n),
        "value": pa.array([round(rng.gauss(5, 1), 3) for _ in range(n)], pa.float64()),
        "value_text": pa.nulls(n, pa.string()),
        "unit": pa.array(["mm/s"] * n),
        "quality": pa.array(["Good"] * n),
        "reason": pa.nulls(n, pa.string()),
    }
    return pa.table(columns, schema=telemetry_schema(False))


def _files_per_commit(table: Path) -> dict[int, list[int]]:
    """Commit version -> the sizes of the Parquet files it added (from the Delta log)."""
    out: dict[int, list[int]] = {}
    for path in sorted((table / "_delta_log").glob("*.json")):
        adds = [json.loads(line).get("add") for line in path.read_text().splitlines()]
        out[int(path.stem)] = [a["size"] for a in adds if a]
    return out


def _committer(
    root: Path, tables: DeltaTables | None = None, **settings: object
) -> tuple[Committer, TableSpool]:
    """A committer of the telemetry table alone, and its spool."""
    s = lake_settings(root, **settings)
    spool = TableSpool(root / "spool", "telemetry")
    tables = tables or DeltaTables(s.uri, {}, PARTITIONS)
    return Committer("lake", s, tables, {"telemetry": spool}, APP, {}, list), spool


async def test_parquet_files_come_out_near_the_target_after_a_commit_showed_the_ratio(
    tmp_path: Path,
) -> None:
    committer, spool = _committer(tmp_path, flush={"target_file_mb": 1, "max_age_s": 3600})
    sizing = committer.sizing["telemetry"]
    assert sizing.seal_bytes == _MB  # nothing learned yet: the spool bytes alone
    rng = random.Random(5)
    appended = 0
    for _ in range(600):
        spool.append(_telemetry(rng, appended, 5000))
        appended += 5000
        await committer.tick()
        if committer.states["telemetry"].commits >= 5:
            break
    assert committer.states["telemetry"].commits >= 5, "five segments sealed by size"
    assert not committer.errors()
    # Arrow compresses several times in Parquet and a commit splits across the two lines.
    assert sizing.expansion > 2
    assert sizing.seal_bytes > 2 * _MB
    assert sizing.expansion < 50, "learned from the partitions' bytes, not growing each commit"

    commits = _files_per_commit(tmp_path / "lake" / "telemetry")
    first = commits[0]
    assert max(first) < 0.5 * _MB, f"the first commit's files should be small: {first}"
    later = sorted(size for version in sorted(commits)[1:] for size in commits[version])
    assert all(0.7 * _MB <= size <= 1.3 * _MB for size in later), f"later files: {later}"
    # One file per line and commit: the writer does not split a segment sized for it.
    assert all(len(commits[version]) == 2 for version in commits)
    assert read_table(tmp_path, "telemetry").height + spool.open_rows == appended

    # Remembered across a restart: the next process starts with the learned threshold.
    spool.close()
    again, _ = _committer(tmp_path, flush={"target_file_mb": 1, "max_age_s": 3600})
    assert again.sizing["telemetry"].expansion == pytest.approx(sizing.expansion)
    # Bounded by the spool: a segment never takes more than a quarter of max_spool_mb.
    small, _ = _committer(
        tmp_path / "small", flush={"target_file_mb": 1, "max_age_s": 3600}, max_spool_mb=2
    )
    small.sizing["telemetry"].expansion = 100.0
    assert small.sizing["telemetry"].seal_bytes == _MB // 2


class _NotFoundFirst(DeltaTables):
    """A store that answers "not found" for an existing table the first ``times`` it is asked
    (an object store's listing lagging or a transient error read as "no table")."""

    def __init__(self, times: int, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.times = times

    def table(self, table: str) -> DeltaTable | None:
        if self.times > 0:
            self.times -= 1
            self.forget(table)
            return None
        return super().table(table)


@pytest.mark.parametrize("times", [1, 3])
async def test_a_wrong_table_not_found_never_writes_a_segment_twice(
    tmp_path: Path, times: int
) -> None:
    settings = lake_settings(tmp_path)
    rng = random.Random(1)
    # The table holds segment 1 already (committed just before a crash, still in the spool).
    _, crashed = _committer(tmp_path)
    crashed.append(_telemetry(rng, 0, 100))
    crashed.seal()
    (segment,) = crashed.sealed()
    DeltaTables(settings.uri, {}, PARTITIONS).append(
        "telemetry", _telemetry(random.Random(1), 0, 100), APP, segment.seq, _MB
    )
    crashed.close()
    # A restart on a store that says "no such table" at first.
    lying = _NotFoundFirst(times, settings.uri, {}, PARTITIONS)
    committer, spool = _committer(tmp_path, lying)
    assert [s.seq for s in spool.sealed()] == [segment.seq]
    await committer.tick(final=True)
    # Creating the table failed (there is one): the segment stays and the commit is retried.
    assert "telemetry" in " ".join(committer.errors())
    assert spool.sealed(), "the segment must wait for the retry"
    for _ in range(times + 1):
        committer.states["telemetry"].next_try = 0.0
        await committer.tick(final=True)
    assert not committer.errors()
    assert not spool.sealed()
    assert committer.states["telemetry"].skipped == 1
    assert read_table(tmp_path, "telemetry").height == 100
    # A new segment after it is committed once, on top.
    spool.append(_telemetry(rng, 100, 10))
    await committer.tick(final=True)
    assert read_table(tmp_path, "telemetry").height == 110


async def test_the_first_commit_of_a_new_table_creates_it(tmp_path: Path) -> None:
    committer, spool = _committer(tmp_path)
    spool.append(_telemetry(random.Random(2), 0, 10))
    await committer.tick(final=True)
    assert not committer.errors()
    dt = DeltaTable(str(tmp_path / "lake" / "telemetry"))
    assert dt.version() == 0 and dt.transaction_version(APP) == 1


def test_bulk_parsed_bodies_are_the_rows_parsed_one_by_one() -> None:
    predictions = [prediction(f"p{a}", s) for a in range(3) for s in range(4)]
    bodies = [encode_prediction(Trigger(p), GATEWAY) for p in predictions]
    bulk = predictions_from_bodies(bodies)
    assert bulk is not None
    assert bulk.equals(predictions_table([decode_prediction(b) or {} for b in bodies]))
    # Not all ours: the caller goes body by body.
    assert predictions_from_bodies([*bodies, '{"event": "drift"}']) is None
    assert predictions_from_bodies([*bodies, "not json"]) is None
    assert predictions_from_bodies([bodies[0] + bodies[1]]) is None
    assert predictions_from_bodies([]) is None


async def test_a_batch_with_other_bodies_keeps_each_outcome_and_writes_the_rows_once(
    tmp_path: Path,
) -> None:
    lake = LakehouseDestination("lake", lake_settings(tmp_path), DestinationContext(GATEWAY))
    await lake.start()
    ours = envelopes(lake, [prediction("p1", s) for s in range(4)])
    batch = [
        ours[0],
        Envelope("alert-1", json.dumps({"event": "drift", "asset": "p1"})),
        ours[1],
        Envelope("bad", "not json"),
        ours[2],
        ours[0],  # the same prediction twice in one batch: one row
    ]
    outcomes = await lake.deliver(batch)
    assert outcomes[:3] == [None, None, None] and outcomes[4:] == [None, None]
    assert isinstance(outcomes[3], str) and "not a lakehouse prediction body" in outcomes[3]
    assert await lake.deliver(ours) == [None] * 4  # three of them again, and one new
    counters = lake.health().counters
    assert (counters["accepted"], counters["skipped"], counters["repeats"]) == (4, 1, 4)
    staged = Path(tmp_path / "spool" / "lake" / "predictions")
    await wait_until(lambda: not list(staged.glob("*.arrows")), 10, what="committed")
    await lake.close()
    rows = read_table(tmp_path, "predictions")
    assert sorted(rows["id"].to_list()) == sorted(e.key for e in ours)
