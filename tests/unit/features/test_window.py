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


def _full_and_lazy(capacity: int, horizon: float) -> tuple[Ring, Ring]:
    return Ring(capacity), Ring(capacity, horizon_s=horizon)


def test_a_lazy_ring_answers_every_window_like_the_full_ring() -> None:
    # Bursts and pauses: rate x window is sometimes above the capacity, sometimes far below.
    rng = np.random.default_rng(7)
    window, min_window = 10.0, 5.0
    full, lazy = _full_and_lazy(64, window)
    now = 1000.0
    for step in range(3000):
        now += float(rng.choice([0.01, 0.1, 1.0, 8.0], p=[0.3, 0.4, 0.25, 0.05]))
        full.append(now, float(step))
        lazy.append(now, float(step))
        query = now + float(rng.uniform(0.0, 3.0))  # a model tick a little later
        start = query - window
        ft, fv = full.since(start)
        lt, lv = lazy.since(start)
        assert np.array_equal(ft, lt) and np.array_equal(fv, lv), step
        f_old, l_old = full.oldest(), lazy.oldest()
        assert f_old is not None and l_old is not None
        assert (query - f_old >= min_window) == (query - l_old >= min_window), step
        assert len(lazy) <= len(full)


def test_a_lazy_ring_stays_as_small_as_its_rate_and_window_need() -> None:
    full, lazy = _full_and_lazy(2048, 10.0)
    for i in range(1000):  # 1 Hz for 1,000 s: ~11 samples reach back one window
        full.append(float(i), 0.0)
        lazy.append(float(i), 0.0)
    assert len(full) == 1000
    assert 11 <= len(lazy) <= 16
    assert lazy.since(989.0)[0].tolist() == [float(i) for i in range(989, 1000)]


def test_a_lazy_ring_grows_to_its_capacity_and_no_further() -> None:
    lazy = Ring(100, horizon_s=60.0)
    for i in range(500):  # 10 Hz: 600 samples a window, more than the capacity
        lazy.append(i / 10, float(i))
    assert len(lazy) == 100
    _, v = lazy.since(0.0)
    assert v.tolist() == [float(i) for i in range(400, 500)]


def test_a_lazy_ring_keeps_the_sample_that_proves_enough_history() -> None:
    # One old sample, then a burst: dropping the old one would make the tag look as if it had
    # 1.5 s of history (warming up) where the full ring shows 15.5 s.
    full, lazy = _full_and_lazy(64, 10.0)
    for t in (0.0, 14.0, 14.1, 14.2, 14.3, 14.4, 14.5, 14.6, 15.0):
        full.append(t, 1.0)
        lazy.append(t, 1.0)
    assert full.oldest() == lazy.oldest() == 0.0
    assert lazy.since(5.5)[0].tolist() == full.since(5.5)[0].tolist()


def test_a_lazy_ring_settles_at_rate_x_window_not_the_next_power_of_two() -> None:
    # 10 Hz with jitter, window 10 s: ~101 samples reach back one window; doubling alone
    # would keep 128. Every window stays the full ring's.
    rng = np.random.default_rng(3)
    full, lazy = _full_and_lazy(128, 10.0)
    now = 0.0
    for step in range(2000):
        now += float(rng.uniform(0.095, 0.105))
        full.append(now, float(step))
        lazy.append(now, float(step))
        ft, fv = full.since(now - 10.0)
        lt, lv = lazy.since(now - 10.0)
        assert np.array_equal(ft, lt) and np.array_equal(fv, lv), step
        l_old = lazy.oldest()
        assert (l_old is not None and now - l_old >= 10.0) or step < 101
    assert 100 <= lazy.allocated <= 112 < full.allocated


def test_a_settled_ring_grows_again_when_the_rate_rises() -> None:
    lazy = Ring(512, horizon_s=10.0)
    for i in range(300):  # 10 Hz
        lazy.append(i / 10, 0.0)
    settled = lazy.allocated
    for i in range(600):  # then 40 Hz
        lazy.append(30.0 + i / 40, 1.0)
    assert lazy.allocated > settled
    t, _ = lazy.since(lazy.oldest() or 0.0)
    assert t[-1] - t[0] >= 10.0
    assert np.all(np.diff(t) > 0)


def test_count_and_copy_give_what_since_gives() -> None:
    rng = np.random.default_rng(11)
    for ring in (Ring(32), Ring(64, horizon_s=5.0), Ring(16)):
        now = 0.0
        for step in range(400):
            now += float(rng.choice([0.05, 0.2, 1.0]))
            ring.append(now, float(rng.normal()))
            start = now - float(rng.uniform(0.0, 8.0))
            t, v = ring.since(start)
            k = ring.count_since(start)
            assert k == len(t), step
            t_out, v_out = np.full(k, np.nan), np.full(k, np.nan)
            ring.copy_newest(k, t_out, v_out)
            assert np.array_equal(t_out, t) and np.array_equal(v_out, v), step
            ring.copy_newest(k, None, v_out)
            assert np.array_equal(v_out, v), step
