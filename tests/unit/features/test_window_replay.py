"""Reading a window as it was at a past time (``Replay``) and keeping a backfilled gap in a ring
while it is applied (``Ring.hold``/``release``): what predictions for the past read."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.features.window import Ring


def _ring_of(times: list[float], values: list[float]) -> Ring:
    ring = Ring(len(times) + 1)
    for t, v in zip(times, values, strict=True):
        ring.append(t, v)
    return ring


def test_replay_at_t_reads_like_a_ring_that_ended_at_t() -> None:
    # A wrapped ring: 40 samples through 16 places.
    ring = Ring(16)
    times = [100.0 + 0.5 * i for i in range(40)]
    for i, t in enumerate(times):
        ring.append(t, float(i * i))
    kept_t, kept_v = ring.since(0.0)
    replay = ring.replay()
    for at in (107.0, 112.25, 114.0, 119.5, 130.0):
        upto = [i for i, t in enumerate(kept_t) if t <= at]
        want = _ring_of([kept_t[i] for i in upto], [kept_v[i] for i in upto])
        got = replay.at(at)
        assert len(got) == len(want)
        assert got.oldest() == want.oldest() and got.newest() == want.newest()
        assert got.last() == want.last()
        for start in (at - 3.0, at - 1.0, at):
            assert got.count_since(start) == want.count_since(start)
            assert [a.tolist() for a in got.since(start)] == [a.tolist() for a in want.since(start)]
        k = got.count_since(at - 2.0)
        t_out, v_out = np.empty(k), np.empty(k)
        got.copy_newest(k, t_out, v_out)
        assert t_out.tolist() == want.since(at - 2.0)[0].tolist()
        assert v_out.tolist() == want.since(at - 2.0)[1].tolist()


def test_replay_before_its_first_sample_is_empty_and_is_read_only() -> None:
    ring = _ring_of([10.0, 11.0], [1.0, 2.0])
    replay = ring.replay()
    assert len(replay.at(9.0)) == 0 and replay.newest() is None and replay.last() is None
    assert replay.at(10.0).last() == 1.0
    ring.append(12.0, 3.0)  # a copy: the ring goes on, the replay does not see it
    assert replay.at(99.0).newest() == 11.0
    with pytest.raises(TypeError):
        replay.append(13.0, 4.0)


def test_hold_keeps_a_gap_longer_than_the_horizon_and_release_cuts_it_back() -> None:
    # Whole seconds, a 50 s horizon: exact times, no rounding at the window's edge.
    ring = Ring(1000, horizon_s=50.0)
    for t in range(1, 101):  # 100 s at 1 Hz: the ring settles at about its horizon
        ring.append(float(t), float(t))
    assert ring.allocated < 80
    ring.hold()
    for t in range(101, 401):  # a 300 s gap from history
        ring.append(float(t), float(t))
    # Everything since the hold, and the window the ring held before it, is still there.
    oldest = ring.oldest()
    assert oldest is not None and oldest <= 50.0
    assert ring.count_since(101.0) == 300 and len(ring) == 400 - oldest + 1
    ring.release()
    # Back to its horizon: the last 50 s and one sample before, in a ring about that size.
    assert ring.since(0.0)[0].tolist() == [float(t) for t in range(349, 401)]
    assert ring.allocated < 80
    for t in range(401, 501):  # and it goes on as before
        ring.append(float(t), float(t))
    assert ring.allocated < 80 and ring.newest() == 500.0 and ring.since(450.0)[0].size == 51


def test_hold_stops_at_capacity() -> None:
    ring = Ring(64, horizon_s=1.0)
    ring.hold()
    for i in range(200):
        ring.append(float(i), float(i))
    assert len(ring) == 64 and ring.oldest() == 136.0
    ring.release()
    assert ring.since(0.0)[0].tolist() == [197.0, 198.0, 199.0]
