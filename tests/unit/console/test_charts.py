"""Server-side SVG charts: well-formed, CSP-safe (no inline style or script) and truthful."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from bridge.console.charts import Series, bar_chart, line_chart, sparkline, sparkline_points

HOSTILE = "<script>alert(1)</script>"
# 2023-11-14 22:00:00 UTC: a whole hour, so round ticks are predictable.
T0 = 1_699_999_200.0


def _tag(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


def _parse(svg: Markup) -> ET.Element:
    root = ET.fromstring(str(svg))
    assert _tag(root) == "svg"
    # The console's Content-Security-Policy refuses inline styles and scripts.
    for el in root.iter():
        assert "style" not in el.attrib, el.attrib
        assert _tag(el) not in ("style", "script", "foreignObject")
    return root


def _find(root: ET.Element, tag: str, cls: str | None = None) -> list[ET.Element]:
    return [
        el
        for el in root.iter()
        if _tag(el) == tag and (cls is None or cls in el.get("class", "").split())
    ]


def _points(attr: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in attr.split())]


def _viewbox(root: ET.Element) -> tuple[float, float]:
    _, _, w, h = (float(n) for n in root.get("viewBox", "").split())
    return w, h


def _texts(root: ET.Element, cls: str) -> list[str]:
    return [el.text or "" for el in _find(root, "text", cls)]


# --- sparkline -----------------------------------------------------------------------------


def test_sparkline_points_are_inside_the_box_and_higher_values_are_higher() -> None:
    pts = _points(sparkline_points([3.0, 1.0, 2.0, 5.0], width=120, height=24))
    assert len(pts) == 4
    assert all(0 <= x <= 120 and 0 <= y <= 24 for x, y in pts)
    assert [x for x, _ in pts] == sorted(x for x, _ in pts)
    assert pts[0][0] == 0 and pts[-1][0] == 120
    ys = [y for _, y in pts]
    # SVG's y grows downwards: the largest value has the smallest y.
    assert ys.index(min(ys)) == 3 and ys.index(max(ys)) == 1
    assert ys[1] > ys[2] > ys[0] > ys[3]


def test_sparkline_points_skip_gaps_but_keep_their_place_in_time() -> None:
    pts = _points(sparkline_points([1.0, None, math.nan, 2.0], width=90, height=30))
    assert [x for x, _ in pts] == [0, 90]
    assert pts[0][1] > pts[1][1]


def test_a_flat_sparkline_runs_through_the_middle_and_no_values_give_no_points() -> None:
    pts = _points(sparkline_points([4.2, 4.2, 4.2], width=60, height=20))
    assert {y for _, y in pts} == {10}
    assert sparkline_points([]) == ""
    assert sparkline_points([None, math.nan]) == ""


def test_sparkline_coordinates_are_compact() -> None:
    attr = sparkline_points([1 / 3, 2 / 7, 0.123456789, 9.87654321], width=100, height=17)
    assert all(re.fullmatch(r"-?\d+(\.\d)?", n) for p in attr.split() for n in p.split(","))


def test_sparkline_svg_has_a_polyline_and_a_readable_label() -> None:
    root = _parse(sparkline([0.5, 0.7, 0.93], label="score"))
    assert root.get("class") == "spark"
    assert root.get("role") == "img"
    assert root.get("viewBox") == "0 0 120 24"
    assert root.get("aria-label") == "score trend, last 0.93"
    [line] = _find(root, "polyline", "spark-line")
    assert len(_points(line.get("points", ""))) == 3
    assert line.get("fill") == "none"


def test_an_empty_sparkline_still_has_a_polyline_for_the_live_page_to_fill() -> None:
    root = _parse(sparkline([None, None]))
    assert root.get("aria-label") == "no data"
    [line] = _find(root, "polyline", "spark-line")
    assert line.get("points") == ""


def test_sparkline_label_is_escaped() -> None:
    svg = sparkline([1.0], label=HOSTILE)
    assert "<script>" not in svg
    assert _parse(svg).get("aria-label", "").startswith(HOSTILE)


# --- line chart ----------------------------------------------------------------------------


def _polylines(root: ET.Element, index: int) -> list[list[tuple[float, float]]]:
    [group] = _find(root, "g", f"series-{index}")
    return [_points(p.get("points", "")) for p in _find(group, "polyline")]


def test_line_chart_draws_inside_the_box_with_higher_values_higher() -> None:
    pts = [(T0 + 60 * i, float(v)) for i, v in enumerate([1, 5, 3, 9, 2])]
    root = _parse(line_chart([Series("temp", pts)], title="Temperature", width=500, height=180))
    w, h = _viewbox(root)
    assert (w, h) == (500, 180)
    [line] = _polylines(root, 0)
    assert len(line) == 5
    assert all(0 <= x <= w and 0 <= y <= h for x, y in line)
    xs, ys = [x for x, _ in line], [y for _, y in line]
    assert xs == sorted(xs)
    assert ys.index(min(ys)) == 3 and ys.index(max(ys)) == 0


def test_line_chart_is_labelled_by_its_title() -> None:
    root = _parse(line_chart([Series("a", [(T0, 1.0), (T0 + 60, 2.0)])], title="Flow rate"))
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Flow rate"
    assert [t.text for t in _find(root, "title")] == ["Flow rate"]


def test_a_gap_splits_the_line() -> None:
    pts: list[tuple[float, float | None]] = [
        (T0, 1.0),
        (T0 + 600, 2.0),
        (T0 + 1200, None),
        (T0 + 1800, 3.0),
        (T0 + 2400, 4.0),
    ]
    root = _parse(line_chart([Series("a", pts)], title="t"))
    lines = _polylines(root, 0)
    assert [len(line) for line in lines] == [2, 2]
    assert max(x for x, _ in lines[0]) < min(x for x, _ in lines[1])


def test_series_get_cycling_classes_and_a_legend_only_when_there_are_several() -> None:
    one = _parse(line_chart([Series("only", [(T0, 1.0), (T0 + 60, 2.0)])], title="t"))
    assert not _find(one, "g", "legend")
    many = [Series(f"s{i}", [(T0, float(i)), (T0 + 60, i + 1.0)]) for i in range(7)]
    root = _parse(line_chart(many, title="t"))
    classes = [g.get("class", "").split() for g in _find(root, "g", "series")]
    assert [c[-1] for c in classes] == [f"series-{i % 6}" for i in range(7)]
    [legend] = _find(root, "g", "legend")
    assert [t.text for t in _find(legend, "text")] == [s.name for s in many]


def test_time_ticks_are_clock_times_for_two_hours() -> None:
    pts = [(T0 + 60 * i, float(i % 7)) for i in range(121)]
    labels = _texts(_parse(line_chart([Series("a", pts)], title="t")), "tick-x")
    assert 4 <= len(labels) <= 6
    assert all(re.fullmatch(r"\d\d:\d\d", label) for label in labels), labels
    assert labels[0] == "22:00"


def test_time_ticks_carry_the_date_for_three_days() -> None:
    pts = [(T0 + 3600 * i, float(i % 5)) for i in range(73)]
    labels = _texts(_parse(line_chart([Series("a", pts)], title="t")), "tick-x")
    assert 4 <= len(labels) <= 6
    assert all(re.fullmatch(r"\d\d-\d\d \d\d:\d\d", label) for label in labels), labels
    assert labels == sorted(labels)


def test_since_and_until_set_the_axis_and_leave_out_other_points() -> None:
    pts = [(T0 + 600 * i, float(i)) for i in range(13)]  # two hours
    root = _parse(line_chart([Series("a", pts)], title="t", since=T0, until=T0 + 3600))
    labels = _texts(root, "tick-x")
    assert labels[0] == "22:00" and labels[-1] == "23:00"
    [line] = _polylines(root, 0)
    assert len(line) == 7


def test_value_ticks_are_nice_numbers_and_the_unit_titles_the_axis() -> None:
    pts = [(T0 + 60 * i, v) for i, v in enumerate([0.0, 0.31, 0.93, 0.5])]
    root = _parse(line_chart([Series("score", pts)], title="Score", unit="°C"))
    ticks = [float(t) for t in _texts(root, "tick-y")]
    assert 3 <= len(ticks) <= 5
    assert ticks == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert _texts(root, "axis-title") == ["°C"]


def test_value_ticks_on_larger_and_negative_ranges_use_steps_of_1_2_or_5() -> None:
    for lo, hi in [(-37.0, 112.0), (1012.5, 1013.2), (-0.004, -0.001), (0.0, 1.0)]:
        pts = [(T0, lo), (T0 + 60, hi)]
        ticks = [
            float(t) for t in _texts(_parse(line_chart([Series("a", pts)], title="t")), "tick-y")
        ]
        assert 3 <= len(ticks) <= 5, (lo, hi, ticks)
        assert all(lo - 1e-9 <= t <= hi + 1e-9 for t in ticks)
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert any(math.isclose(mantissa, m) for m in (1, 2, 5)), (lo, hi, step)


def test_a_flat_series_still_gets_ticks_and_a_middle_line() -> None:
    root = _parse(line_chart([Series("a", [(T0, 5.0), (T0 + 60, 5.0)])], title="t"))
    assert len(_texts(root, "tick-y")) >= 3
    [line] = _polylines(root, 0)
    assert line[0][1] == line[1][1]


def test_no_data_in_range_says_so() -> None:
    for series in ([], [Series("a", [])], [Series("a", [(T0, None), (T0 + 60, math.nan)])]):
        root = _parse(line_chart(series, title="Empty"))
        assert _texts(root, "empty") == ["no data in this range"]
        assert root.get("aria-label") == "Empty"
    far = [Series("a", [(T0, 1.0)])]
    root = _parse(line_chart(far, title="t", since=T0 + 3600, until=T0 + 7200))
    assert _texts(root, "empty") == ["no data in this range"]


def test_a_hundred_thousand_points_stay_a_small_svg() -> None:
    pts = [
        (T0 + 0.5 * i, math.sin(i / 500) + (5.0 if i == 54_321 else 0.0)) for i in range(100_000)
    ]
    svg = line_chart([Series("vibration", pts)], title="Vibration", width=640)
    assert len(svg.encode()) < 100_000
    root = _parse(svg)
    lines = _polylines(root, 0)
    assert sum(len(line) for line in lines) <= 640
    # Min/max per bucket keeps a one-sample spike, at its place in time.
    xs = [x for line in lines for x, _ in line]
    top = min(y for line in lines for _, y in line)
    spike_x = min(x for line in lines for x, y in line if y == top)
    assert (spike_x - xs[0]) / (xs[-1] - xs[0]) == pytest.approx(54_321 / 99_999, abs=0.01)


def test_line_chart_text_is_escaped() -> None:
    svg = line_chart(
        [Series(HOSTILE, [(T0, 1.0)]), Series("b", [(T0 + 60, 2.0)])], title=HOSTILE, unit=HOSTILE
    )
    assert "<script>" not in svg
    root = _parse(svg)
    assert root.get("aria-label") == HOSTILE
    assert _find(root, "title")[0].text == HOSTILE
    assert _texts(root, "axis-title") == [HOSTILE]


# --- bar chart -----------------------------------------------------------------------------


BARS = [("temperature", 0.42), ("pressure", -0.13), ("flow", 0.05), ("vibration", -0.31)]


def test_bars_keep_their_order_sign_and_class() -> None:
    root = _parse(bar_chart(BARS, title="Why this score"))
    rows = _find(root, "g", "bar-row")
    assert len(rows) == len(BARS)
    assert [_texts(row, "bar-label") for row in rows] == [[name] for name, _ in BARS]
    assert [_texts(row, "bar-value") for row in rows] == [
        ["+0.42"],
        ["-0.13"],
        ["+0.05"],
        ["-0.31"],
    ]
    rects = [_find(row, "rect")[0] for row in rows]
    assert [r.get("class") for r in rects] == ["bar-pos", "bar-neg", "bar-pos", "bar-neg"]
    ys = [float(r.get("y", "")) for r in rects]
    assert ys == sorted(ys)


def test_bars_grow_from_the_zero_line_in_proportion() -> None:
    root = _parse(bar_chart(BARS, title="t", width=480))
    [zero] = _find(root, "line", "zero-line")
    zx = float(zero.get("x1", ""))
    rects = {
        row: _find(g, "rect")[0] for row, g in zip(BARS, _find(root, "g", "bar-row"), strict=True)
    }
    for (_, value), rect in rects.items():
        x, w = float(rect.get("x", "")), float(rect.get("width", ""))
        assert x >= 0 and x + w <= 480
        if value > 0:
            assert x == zx
        else:
            assert x + w == pytest.approx(zx, abs=0.11)
    widths = {name: float(r.get("width", "")) for (name, _), r in rects.items()}
    assert widths["temperature"] / widths["vibration"] == pytest.approx(0.42 / 0.31, rel=0.01)


def test_bar_chart_height_grows_with_rows_and_values_have_three_digits() -> None:
    small = _parse(bar_chart(BARS[:1], title="t"))
    big = _parse(bar_chart([*BARS, ("a", 1234.5678), ("b", -0.000123456)], title="t"))
    assert _viewbox(big)[1] - _viewbox(small)[1] == 5 * 28
    assert _texts(big, "bar-value")[-2:] == ["+1235", "-0.000123"]


def test_bar_chart_text_is_escaped_and_labelled() -> None:
    svg = bar_chart([(HOSTILE, 1.0)], title=HOSTILE, unit="<b>")
    assert "<script>" not in svg and "<b>" not in svg
    root = _parse(svg)
    assert root.get("aria-label") == HOSTILE and root.get("role") == "img"
    assert _find(root, "title")[0].text == HOSTILE
    assert _texts(root, "bar-value") == ["+1 <b>"]


def test_no_bars_say_no_explanation() -> None:
    root = _parse(bar_chart([], title="Why"))
    assert _texts(root, "empty") == ["no explanation"]
    assert not _find(root, "rect")
