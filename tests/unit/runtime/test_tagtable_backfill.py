"""Historical samples (backfill after an outage) go into the model windows at their place in
time and never into a tag's live state; the window's times never go back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pump_mapping import pump_mapping

from bridge.config import load_mapping
from bridge.runtime.tagtable import TagTable
from bridge.types import Quality, TagSample

MODEL = Path(__file__).resolve().parents[3] / "mappings" / "models" / "pump_health.onnx"
WALL0 = 1_750_000_000.0


def _table(tmp_path: Path, clock: list[float], deadband: float = 0.0) -> TagTable:
    text = pump_mapping(store=tmp_path / "x.db", model=MODEL, timing={"window_s": 120})
    if deadband:
        text = text.replace('s={n}.V"}', f's={{n}}.V", deadband: {deadband}}}')
    path = tmp_path / "m.yaml"
    path.write_text(text)
    # clock[0]: seconds since WALL0, on both clocks (monotonic starts at 1000)
    return TagTable(
        load_mapping(path, {}),
        wall_clock=lambda: WALL0 + clock[0],
        monotonic_clock=lambda: 1000.0 + clock[0],
    )


def _live(t: float, value: float) -> TagSample:
    return TagSample("pump-a.vibration", value, Quality.GOOD, WALL0 + t, WALL0 + t)


def _old(t: float, value: float) -> TagSample:
    return TagSample(
        "pump-a.vibration", value, Quality.GOOD, WALL0 + 60, WALL0 + t, historical=True
    )


def test_history_fills_the_window_gap_in_time_order(tmp_path: Path) -> None:
    clock = [0.0]
    table = _table(tmp_path, clock)
    table.apply([_live(0, 1.0)])
    clock[0] = 10.0
    table.apply([_live(10, 2.0)])
    table.mark_bad(["pump-a.vibration"], "source down")
    clock[0] = 60.0  # reconnected: the gap (10, 60) from history, then the live value
    table.apply([_old(20, 3.0), _old(30, 4.0), _old(50, 5.0), _live(60, 6.0)])
    entry = table.get("pump-a.vibration")
    assert entry.ring is not None
    times, values = entry.ring.since(0.0)
    assert list(values) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert list(times) == pytest.approx([1000, 1010, 1020, 1030, 1050, 1060])
    # Live state: the newest live value, Good again; the history counted, not applied.
    assert entry.value == 6.0 and entry.quality is Quality.GOOD
    assert table.backfilled == 3 and table.updates == 3


def test_history_stamped_before_the_windows_newest_goes_after_it(tmp_path: Path) -> None:
    clock = [10.0]
    table = _table(tmp_path, clock)
    table.apply([_live(10, 2.0)])
    clock[0] = 60.0
    # A server clock behind the gateway's: the value claims a time before the newest sample.
    table.apply([_old(5, 3.0), _old(2000, 4.0)])
    ring = table.get("pump-a.vibration").ring
    assert ring is not None
    times, values = ring.since(0.0)
    assert list(values) == [2.0, 3.0, 4.0]
    assert np.all(np.diff(times) >= 0) and times[-1] <= 1060.0  # never after now


def test_history_passes_the_deadband_and_skips_bad_values(tmp_path: Path) -> None:
    clock = [0.0]
    table = _table(tmp_path, clock, deadband=1.0)
    table.apply([_live(0, 1.0)])
    clock[0] = 60.0
    bad = TagSample("pump-a.vibration", None, Quality.BAD, WALL0 + 60, WALL0 + 25, historical=True)
    table.apply([_old(20, 1.5), bad, _old(30, 2.5), _old(40, 3.0)])
    ring = table.get("pump-a.vibration").ring
    assert ring is not None
    assert list(ring.since(0.0)[1]) == [1.0, 2.5]  # 1.5 and 3.0 within 1.0 of the last kept
