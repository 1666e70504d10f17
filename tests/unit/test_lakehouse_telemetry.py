"""Tag readings -> telemetry rows: raw rows, clock-aligned windows with their aggregates, late
samples left out, only the assets asked for."""

from __future__ import annotations

from bridge.connectors.lakehouse.config import LakehouseSettings
from bridge.connectors.lakehouse.telemetry import TelemetryBuffer
from bridge.types import Quality, TagReading

T0 = 1714564800.0  # a multiple of 10 s


def _buffer(**telemetry: object) -> TelemetryBuffer:
    s = LakehouseSettings.model_validate(
        {
            "uri": "/lake",
            "spool_dir": "/spool",
            "enterprise": "acme",
            "site": "dallas",
            "area": "packaging",
            "line": "line-4",
            "asset_levels": {"p2": {"line": "line-5"}},
            "telemetry": telemetry,
        }
    )
    return TelemetryBuffer(s.telemetry, s)


def _r(asset: str, tag: str, value: object, at: float, q: Quality = Quality.GOOD) -> TagReading:
    return TagReading(f"{asset}.{tag}", asset, tag, value, "bar", q, at, at + 0.5)  # type: ignore[arg-type]


def test_raw_rows_carry_value_text_quality_and_the_line() -> None:
    b = _buffer()
    b.take([_r("p1", "x", 1.5, T0), _r("p2", "x", "open", T0 + 1), _r("p1", "x", True, T0 + 2)])
    rows = b.rows(b.swap(), T0 + 3)
    assert b.windows is False
    assert rows.value == [1.5, None, 1.0]
    assert rows.value_text == [None, "open", None]
    assert rows.line == ["line-4", "line-5", "line-4"]
    assert rows.time == [T0, T0 + 1, T0 + 2]
    table = rows.table()
    assert table.num_rows == 3
    assert table["time"][1].value == round((T0 + 1) * 1e6)  # microseconds, UTC
    assert table["received_time"][0].value == round((T0 + 0.5) * 1e6)
    assert str(table["date"][0]) == "2024-05-01"


def test_windows_are_aligned_to_the_clock_and_written_once_they_ended() -> None:
    b = _buffer(default={"downsample": {"every_s": 10}}, late_s=2)
    b.take([_r("p1", "x", float(i), T0 + 3 + i) for i in range(10)])  # T0+3 .. T0+12
    rows = b.rows(b.swap(), T0 + 11)  # the first window ended 1 s ago: not yet
    assert len(rows) == 0
    rows = b.rows(b.swap(), T0 + 12)
    assert rows.time == [T0]
    assert (rows.count, rows.mean, rows.min, rows.max, rows.value) == (
        [7],
        [3.0],
        [0.0],
        [6.0],
        [6.0],
    )
    assert rows.window_s == [10.0]
    final = b.rows(b.swap(), T0 + 12, final=True)
    assert final.time == [T0 + 10] and final.count == [3]


def test_statistics_are_of_good_numeric_samples_and_quality_is_the_worst() -> None:
    b = _buffer(default={"downsample": {"every_s": 10, "aggregates": ["min", "max"]}})
    b.take(
        [
            _r("p1", "x", 5.0, T0),
            _r("p1", "x", 99.0, T0 + 1, Quality.BAD),
            _r("p1", "x", 7.0, T0 + 2),
        ]
    )
    rows = b.rows(b.swap(), T0 + 100)
    assert (rows.count, rows.min, rows.max, rows.mean, rows.value) == (
        [3],
        [5.0],
        [7.0],
        [None],
        [None],
    )
    assert rows.quality == ["Bad"]


def test_a_sample_for_a_written_window_is_counted_late_and_left_out() -> None:
    b = _buffer(default={"downsample": {"every_s": 10}}, late_s=0)
    b.take([_r("p1", "x", 1.0, T0 + 1)])
    assert len(b.rows(b.swap(), T0 + 10)) == 1
    b.take([_r("p1", "x", 2.0, T0 + 2), _r("p1", "x", 3.0, T0 + 11)])
    assert len(b.rows(b.swap(), T0 + 20)) == 1  # only the second window
    assert b.late == 1


def test_only_the_assets_asked_for_and_per_tag_modes() -> None:
    b = _buffer(assets=["p1"], tags={"y": {"downsample": {"every_s": 5}}})
    b.take([_r("p1", "x", 1.0, T0), _r("p1", "y", 2.0, T0), _r("p2", "x", 3.0, T0)])
    rows = b.rows(b.swap(), T0 + 60)
    assert b.windows is True
    assert sorted(zip(rows.tag, rows.count, strict=True)) == [("x", None), ("y", 1)]
    assert set(b.tags) == {"p1.x", "p1.y", "p2.x"}  # every tag seen goes to the context
