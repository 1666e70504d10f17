from __future__ import annotations

import numpy as np

from bridge.features.window import Ring


def test_ring_keeps_the_newest_in_time_order() -> None:
    ring = Ring(4)
    for i in range(6):
        ring.append(float(i), float(i * 10))
    assert len(ring) == 4
    t, v = ring.since(-1.0)
    assert t.tolist() == [2.0, 3.0, 4.0, 5.0]
    assert v.tolist() == [20.0, 30.0, 40.0, 50.0]


def test_since_cuts_at_the_window_start() -> None:
    ring = Ring(16)
    for i in range(10):
        ring.append(100.0 + i, float(i))
    t, v = ring.since(106.0)
    assert t.tolist() == [106.0, 107.0, 108.0, 109.0]
    assert np.array_equal(v, [6.0, 7.0, 8.0, 9.0])
    assert ring.since(200.0)[1].size == 0


def test_clear() -> None:
    ring = Ring(3)
    ring.append(1.0, 1.0)
    ring.clear()
    assert len(ring) == 0 and ring.since(0.0)[0].size == 0


def test_oldest_follows_the_ring() -> None:
    ring = Ring(3)
    assert ring.oldest() is None
    for i in range(5):
        ring.append(float(i), 0.0)
    assert ring.oldest() == 2.0
