"""The insight test's plant scenario names one drifting input whatever the sampling phase.

The gateway reads `last` values every 0.2 s of a plant that updates every 0.1 s, so which plant
steps it sees depends on when it started. With two inputs drifting together the first crossing
named one or the other depending on that phase, and the integration test failed on some runs.
The same physics, reference and drift monitor as the gateway's, without sockets.
"""

from __future__ import annotations

import numpy as np
import pytest
from insight_models import INSIGHT_FAULT, INSIGHT_FEATURES, healthy_reference

from bridge.drift.monitor import DriftCrossing, DriftMonitor
from bridge.simulators.plant.physics import PumpState

WINDOW = 60  # as in tests/integration/test_model_insight.py
THRESHOLD = 1.0
MODEL_PERIOD_STEPS = 2  # model period 0.2 s over plant steps of 0.1 s


@pytest.fixture(scope="module")
def reference() -> dict[str, object]:
    return healthy_reference()


def _first_crossing(reference: dict[str, object], phase: int) -> tuple[int, DriftCrossing]:
    """Rows after the fault onset until the first crossing of pump 3, and the crossing."""
    monitor = DriftMonitor(["pump-03"], INSIGHT_FEATURES, reference, WINDOW, THRESHOLD)
    pump = PumpState(index=3, seed=0, fault=INSIGHT_FAULT)
    after_onset = 0
    for k in range(900):  # 90 s of plant time
        r = pump.step(k * 0.1, 0.1)
        if k % MODEL_PERIOD_STEPS != phase:
            continue
        t = k * 0.1
        after_onset += t >= INSIGHT_FAULT.start_s
        monitor.observe(["pump-03"], np.asarray([[r.vibration, r.discharge_pressure, r.speed]]))
        crossings = monitor.evaluate(t)
        if crossings:
            return after_onset, crossings[0]
    raise AssertionError(f"no drift crossing at phase {phase}")


@pytest.mark.parametrize("phase", range(MODEL_PERIOD_STEPS))
def test_vibration_alone_crosses_after_the_onset(reference: dict[str, object], phase: int) -> None:
    rows, crossing = _first_crossing(reference, phase)
    assert 0 < rows <= 2 * WINDOW, rows  # after the onset, within two windows
    assert crossing.drifting == ("vibration.last",)
    steady = {f.feature: f.psi for f in crossing.features if f.feature != "vibration.last"}
    assert max(steady.values()) < THRESHOLD / 2, steady
