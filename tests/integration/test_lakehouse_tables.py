"""What readers see in the lakehouse tables: typed columns and partitions (polars over Delta,
DuckDB over the bare Parquet files), additive schema evolution and the refusal of a type
change, the context table's versions (SCD type 2), compaction and vacuum. Real Delta tables in
tmp_path."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from lakehouse_support import Feed, envelopes, lake_settings, prediction, read_table, reading
from support import wait_until

from bridge.connectors.lakehouse.config import LakehouseSettings
from bridge.connectors.lakehouse.destination import LakehouseDestination
from bridge.destination import DestinationContext
from bridge.types import (
    AssetInfo,
    Contribution,
    Explanation,
    ModelStatus,
    PredictionSlot,
    TagInfo,
)

pytestmark = pytest.mark.timeout(60)

DAY1 = 1714564800.0  # 2024-05-01T12:00:00Z
DAY2 = DAY1 + 86400


def _staged(settings: LakehouseSettings) -> int:
    spool = Path(settings.spool_dir) / "lake"
    return sum(1 for t in ("predictions", "telemetry") for _ in (spool / t).glob("*.arrows"))


async def _run(
    settings: LakehouseSettings,
    readings: list[list[object]] | None = None,
    predictions: list[object] | None = None,
    slots: tuple[PredictionSlot, ...] = (),
) -> LakehouseDestination:
    """Start a destination, give it readings and predictions, wait until all is committed,
    close it."""
    feed = Feed()
    lake = LakehouseDestination("lake", settings, DestinationContext("gw", slots, samples=feed))
    await lake.start()
    for batch in readings or []:
        feed.publish(batch)  # type: ignore[arg-type]
    if predictions:
        assert await lake.deliver(envelopes(lake, predictions)) == [None] * len(predictions)  # type: ignore[arg-type]
    # The readings are drained once a second; the windows of past days are over at once.
    await wait_until(
        lambda: lake.health().counters["telemetry_rows"] > 0 or not readings,
        10,
        what="telemetry drained",
    )
    await wait_until(lambda: _staged(settings) == 0, 10, what="spool committed")
    await lake.close()
    return lake


def _explained(asset: str, seq: int, at: float) -> object:
    p = prediction(asset, seq)
    top = (Contribution("vibration.mean", 7.5, 2.0, 0.4),)
    return type(p)(
        **{
            **{f: getattr(p, f) for f in p.__dataclass_fields__},
            "timestamp": at,
            "explanation": Explanation("vibration +5.5 mm/s above normal", top),
            "drift_score": 0.12,
        }
    )


async def test_polars_and_duckdb_see_typed_columns_and_partitions(tmp_path: Path) -> None:
    settings = lake_settings(
        tmp_path,
        asset_levels={"p2": {"line": "line-5"}},
        telemetry={"tags": {"vib": {"downsample": {"every_s": 10, "aggregates": ["mean", "max"]}}}},
    )
    readings = [
        [reading(a, "temp", 20.0 + i, day + i) for a in ("p1", "p2") for day in (DAY1, DAY2)]
        + [reading(a, "vib", float(i), day + i) for a in ("p1", "p2") for day in (DAY1, DAY2)]
        + [reading("p1", "mode", "auto", DAY1 + i, unit=None)]
        for i in range(20)
    ]
    predictions = [_explained("p1", s, DAY1 + s) for s in range(3)]
    await _run(settings, readings, predictions)

    telemetry = read_table(tmp_path, "telemetry")
    assert telemetry.schema["time"] == pl.Datetime("us", "UTC")
    assert telemetry.schema["date"] == pl.Date
    assert telemetry.schema["value"] == pl.Float64
    assert telemetry.schema["count"] == pl.Int64
    raw = telemetry.filter(pl.col("tag") == "temp")
    assert raw.height == 80
    text = telemetry.filter(pl.col("tag") == "mode")
    assert text["value_text"].unique().to_list() == ["auto"] and text["value"].is_null().all()
    windows = telemetry.filter(pl.col("tag") == "vib").sort("asset", "time")
    # 20 s of 1 Hz samples per asset and day: two 10 s windows each.
    assert windows.height == 8
    first = windows.row(0, named=True)
    assert (first["count"], first["mean"], first["max"], first["min"]) == (10, 4.5, 9.0, None)
    assert first["value"] is None  # `last` not among the aggregates
    assert sorted(telemetry.filter(pl.col("asset") == "p2")["line"].unique()) == ["line-5"]
    partitions = sorted(
        str(p.relative_to(tmp_path / "lake" / "telemetry"))
        for p in (tmp_path / "lake" / "telemetry").glob("date=*/line=*")
    )
    assert partitions == [
        "date=2024-05-01/line=line-4",
        "date=2024-05-01/line=line-5",
        "date=2024-05-02/line=line-4",
        "date=2024-05-02/line=line-5",
    ]

    rows = read_table(tmp_path, "predictions").sort("seq")
    assert rows.schema["contributions"] == pl.List(
        pl.Struct(
            {
                "feature": pl.String,
                "value": pl.Float64,
                "baseline": pl.Float64,
                "effect": pl.Float64,
            }
        )
    )
    assert rows["explanation"][0] == "vibration +5.5 mm/s above normal"
    assert rows["drift_score"].to_list() == [0.12] * 3
    assert rows["label"].to_list() == ["healthy"] * 3 and rows["value"].is_null().all()
    assert rows["quality"].to_list() == ["Good"] * 3

    # DuckDB over the Parquet files (before any compaction: no replaced file is there yet).
    glob = str(tmp_path / "lake" / "telemetry" / "**" / "*.parquet")
    con = duckdb.connect()
    try:
        described = dict(
            con.execute(
                "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                f"read_parquet('{glob}', hive_partitioning=true, union_by_name=true))"
            ).fetchall()
        )
        assert described["date"] == "DATE"
        assert described["line"] == "VARCHAR"
        assert described["time"] == "TIMESTAMP WITH TIME ZONE"
        assert described["value"] == "DOUBLE"
        (count,) = con.execute(
            f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
            "WHERE date = DATE '2024-05-02' AND line = 'line-5'"
        ).fetchone() or (None,)
        assert (
            count
            == telemetry.filter(
                (pl.col("date") == pl.date(2024, 5, 2)) & (pl.col("line") == "line-5")
            ).height
        )
    finally:
        con.close()


async def test_a_downsampled_tag_adds_its_columns_and_a_new_tag_its_rows(
    tmp_path: Path,
) -> None:
    raw_only = lake_settings(tmp_path)
    await _run(raw_only, [[reading("p1", "temp", 1.0, DAY1)]])
    before = read_table(tmp_path, "telemetry")
    assert "count" not in before.columns

    # A mapping that downsamples a (new) tag: the window columns are added to the table.
    downsampling = lake_settings(
        tmp_path, telemetry={"tags": {"vib": {"downsample": {"every_s": 60}}}}
    )
    await _run(
        downsampling,
        [[reading("p1", "temp", 2.0, DAY1 + 1), reading("p1", "vib", 3.0, DAY1 + 1)]],
    )
    after = read_table(tmp_path, "telemetry").sort("time", "tag")
    assert {"window_s", "count", "mean", "min", "max"} <= set(after.columns)
    assert after.height == 3
    old, new_temp = after.filter(pl.col("tag") == "temp").sort("time").rows(named=True)
    assert old["count"] is None and new_temp["count"] is None  # raw rows have no window
    (vib,) = after.filter(pl.col("tag") == "vib").rows(named=True)
    assert (vib["count"], vib["window_s"], vib["mean"]) == (1, 60.0, 3.0)


async def test_a_type_change_is_refused_clearly_and_nothing_is_lost(tmp_path: Path) -> None:
    settings = lake_settings(tmp_path)
    # Someone made `value` text in the existing telemetry table.
    write_deltalake(
        str(tmp_path / "lake" / "telemetry"),
        pa.table({"date": pa.array([19844], pa.date32()), "value": pa.array(["x"])}),
        partition_by=["date"],
    )
    feed = Feed()
    lake = LakehouseDestination("lake", settings, DestinationContext("gw", samples=feed))
    await lake.start()
    feed.publish([reading("p1", "temp", 1.0, DAY1)])
    await lake.deliver(envelopes(lake, [prediction("p1", 0)]))

    def refused() -> bool:
        return "telemetry" in lake.health().detail

    await wait_until(refused, 10, what="the telemetry commit refused")
    health = lake.health()
    assert health.state == "degraded"
    assert "column 'value' is string in the table but double in the rows" in health.detail
    # The other tables go on; the refused rows stay in the spool.
    await wait_until(
        lambda: lake.health().counters["predictions_committed_rows"] == 1, 10, what="predictions"
    )
    assert lake.health().counters["telemetry_backlog_rows"] == 1
    await lake.close()
    assert DeltaTable(str(tmp_path / "lake" / "telemetry")).to_pyarrow_table().num_rows == 1

    # Pointed at a new location, the same spool commits the kept rows there.
    moved = lake_settings(tmp_path, uri=str(tmp_path / "lake2"))
    await _run(moved)
    rows = pl.read_delta(str(tmp_path / "lake2" / "telemetry"))
    assert rows.select("asset", "tag", "value").rows() == [("p1", "temp", 1.0)]


async def test_the_context_table_keeps_versions_of_what_changed(tmp_path: Path) -> None:
    settings = lake_settings(tmp_path, asset_levels={"p2": {"line": "line-5"}})
    v1 = (
        PredictionSlot("p1", "health", "1.0.0", "aa" * 32, labels=("ok", "bad")),
        PredictionSlot("p2", "health", "1.0.0", "aa" * 32, labels=("ok", "bad")),
    )
    feed = Feed()
    lake = LakehouseDestination("lake", settings, DestinationContext("gw", v1, samples=feed))
    await lake.start()
    feed.publish([reading("p1", "temp", 1.0, time.time())])

    def context() -> pl.DataFrame:
        return read_table(tmp_path, "context")

    await wait_until(
        lambda: lake.health().counters["context_inserted"] == 5,
        10,
        what="2 assets, 1 tag, 2 models",
    )
    first = context()
    assert first["valid_to"].is_null().all()
    p2 = first.filter(pl.col("key") == "asset:p2").row(0, named=True)
    assert (p2["enterprise"], p2["site"], p2["area"], p2["line"]) == (
        "acme",
        "dallas",
        "packaging",
        "line-5",
    )
    tag = first.filter(pl.col("kind") == "tag").row(0, named=True)
    assert (tag["key"], tag["unit"]) == ("tag:p1.temp", "mm/s")

    # p1's model moves to 2.0.0: only that row gets a new version.
    v2 = (PredictionSlot("p1", "health", "2.0.0", "bb" * 32, labels=("ok", "bad")), v1[1])
    await lake.follow_slots(v2)
    await wait_until(
        lambda: lake.health().counters["context_closed"] == 1, 10, what="the old version closed"
    )
    await lake.close()
    history = context().filter(pl.col("key") == "model:p1/health").sort("valid_from")
    assert history["version"].to_list() == ["1.0.0", "2.0.0"]
    old, new = history.rows(named=True)
    assert old["valid_to"] == new["valid_from"] and new["valid_to"] is None
    assert context().height == 6

    # A restart with the same state writes nothing.
    again = LakehouseDestination("lake", settings, DestinationContext("gw", v2, samples=feed))
    await again.start()
    feed.publish([reading("p1", "temp", 1.0, time.time())])
    await wait_until(lambda: _staged(settings) == 0, 10, what="committed")
    await again.close()
    assert again.health().counters["context_inserted"] == 0
    assert context().height == 6


async def test_the_context_table_holds_the_mappings_facts_and_the_registrys_states(
    tmp_path: Path,
) -> None:
    settings = lake_settings(tmp_path)
    slot = PredictionSlot("p1", "health", "1.0.0", "aa" * 32, labels=("ok", "bad"))
    tags = (
        TagInfo(
            "p1.temp",
            "p1",
            "temp",
            "degC",
            scale=0.1,
            offset=-5.0,
            clamp=(-20.0, 150.0),
            source="plc",
            address="{table: holding, address: 0, type: float32}",
            source_unit="degF",
        ),
        TagInfo("p1.vib", "p1", "vib", "mm/s", source="scada", address="nsu=urn:plant;s=P1.Vib"),
    )
    context = DestinationContext(
        "gw",
        (slot,),
        samples=Feed(),
        assets=(AssetInfo("p1", "pump", "Feed pump 1"), AssetInfo("p9")),
        tag_infos=tags,
        revision="r1" * 32,
    )
    lake = LakehouseDestination("lake", settings, context)
    await lake.start()

    def current() -> pl.DataFrame:
        return read_table(tmp_path, "context").filter(pl.col("valid_to").is_null())

    try:
        # Every mapping tag has its row at start, read or not: 2 assets, 2 tags, 1 model.
        await wait_until(
            lambda: lake.health().counters["context_inserted"] == 5, 10, what="context written"
        )
        rows = {r["key"]: r for r in current().rows(named=True)}
        p1, p9 = rows["asset:p1"], rows["asset:p9"]
        assert (p1["template"], p1["description"]) == ("pump", "Feed pump 1")
        assert (p9["template"], p9["description"]) == (None, None)
        temp = rows["tag:p1.temp"]
        assert (temp["unit"], temp["source_unit"], temp["scale"], temp["offset"]) == (
            "degC",
            "degF",
            0.1,
            -5.0,
        )
        assert (temp["clamp_low"], temp["clamp_high"]) == (-20.0, 150.0)
        assert (temp["source"], temp["address"]) == (
            "plc",
            "{table: holding, address: 0, type: float32}",
        )
        vib = rows["tag:p1.vib"]
        assert (vib["address"], vib["clamp_low"], vib["scale"]) == (
            "nsu=urn:plant;s=P1.Vib",
            None,
            1.0,
        )
        model = rows["model:p1/health"]
        assert (model["version"], model["state"], model["revision"]) == (
            "1.0.0",
            "active",
            "r1" * 32,
        )

        # The registry: 1.1.0 in shadow beside the active 1.0.0; a poll that changes only the
        # agreement writes nothing more.
        shadow = ModelStatus("health", "1.0.0", "aa" * 32, "1.1.0", "bb" * 32, "shadow")
        await lake.write_models([shadow])
        await wait_until(
            lambda: lake.health().counters["context_inserted"] == 6, 10, what="candidate row"
        )
        candidate = (
            current().filter(pl.col("key") == "model:p1/health/candidate").row(0, named=True)
        )
        assert (candidate["version"], candidate["sha256"], candidate["state"]) == (
            "1.1.0",
            "bb" * 32,
            "shadow",
        )
        agreed = ModelStatus(
            "health", "1.0.0", "aa" * 32, "1.1.0", "bb" * 32, "shadow", agreement=(("p1", 0.9),)
        )
        await lake.write_models([agreed])

        # A reload: a new revision and a tag's new scale; pump p1 described anew.
        scaled = (dataclasses.replace(tags[0], scale=0.2), tags[1])
        reloaded = dataclasses.replace(
            context,
            assets=(AssetInfo("p1", "pump", "Feed pump 1 (rebuilt)"), AssetInfo("p9")),
            tag_infos=scaled,
            revision="r2" * 32,
        )
        await lake.follow_context(reloaded)
        # Closed: the asset p1, the tag p1.temp, the active and the candidate model rows.
        await wait_until(
            lambda: lake.health().counters["context_closed"] == 4, 10, what="reload written"
        )
    finally:
        await lake.close()
    assert lake.health().counters["context_inserted"] == 10
    rows = {r["key"]: r for r in current().rows(named=True)}
    assert rows["asset:p1"]["description"] == "Feed pump 1 (rebuilt)"
    assert rows["tag:p1.temp"]["scale"] == 0.2
    assert {rows[k]["revision"] for k in ("model:p1/health", "model:p1/health/candidate")} == {
        "r2" * 32
    }
    history = read_table(tmp_path, "context").filter(pl.col("key") == "tag:p1.temp")
    assert sorted(history["scale"].to_list()) == [0.1, 0.2]


async def test_a_context_table_of_fewer_columns_gets_the_new_ones(tmp_path: Path) -> None:
    settings = lake_settings(tmp_path)
    # A context table as an earlier version wrote it: no template, scale, ... columns.
    old = pa.table(
        {
            "kind": ["asset"],
            "key": ["asset:p1"],
            "asset": ["p1"],
            "state": ["present"],
            "digest": ["0" * 32],
            "valid_from": pa.array([1_700_000_000_000_000], pa.timestamp("us", tz="UTC")),
            "valid_to": pa.array([None], pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(str(tmp_path / "lake" / "context"), old)
    context = DestinationContext("gw", assets=(AssetInfo("p1", "pump"),), samples=Feed())
    lake = LakehouseDestination("lake", settings, context)
    await lake.start()
    try:
        await wait_until(
            lambda: lake.health().counters["context_closed"] == 1, 10, what="context written"
        )
    finally:
        await lake.close()
    table = read_table(tmp_path, "context")
    assert {"template", "scale", "address", "revision"} <= set(table.columns)
    now = table.filter(pl.col("valid_to").is_null()).row(0, named=True)
    assert (now["key"], now["template"]) == ("asset:p1", "pump")
    assert table.filter(pl.col("valid_to").is_not_null())["template"].to_list() == [None]


async def test_optimize_and_vacuum_compact_the_files_on_schedule(tmp_path: Path) -> None:
    settings = lake_settings(tmp_path, flush={"max_age_s": 0.05})
    feed = Feed()
    lake = LakehouseDestination("lake", settings, DestinationContext("gw", samples=feed))
    await lake.start()
    for s in range(8):
        await lake.deliver(envelopes(lake, [prediction("p1", s)]))
        await wait_until(lambda: _staged(settings) == 0, 10, what="committed")
    await lake.close()
    table = tmp_path / "lake" / "predictions"
    assert len(DeltaTable(str(table)).file_uris()) == 8

    maintained = lake_settings(
        tmp_path,
        optimize={"every_s": 0.1, "target_file_mb": 64},
        vacuum={"every_s": 0.1, "retention_hours": 0},
    )
    again = LakehouseDestination("lake", maintained, DestinationContext("gw", samples=feed))
    await again.start()
    await wait_until(
        lambda: again.health().counters["vacuumed_files"] >= 8, 20, what="compacted, vacuumed"
    )
    await again.close()
    assert again.health().counters["optimized"] >= 1
    assert len(DeltaTable(str(table)).file_uris()) == 1
    parquet = list(table.glob("**/*.parquet"))
    assert len(parquet) == 1  # the replaced files are gone: bare-Parquet readers agree
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{parquet[0]}')").fetchall() == [(8,)]
    assert read_table(tmp_path, "predictions")["seq"].sort().to_list() == list(range(8))
