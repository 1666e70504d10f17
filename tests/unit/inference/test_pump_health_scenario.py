"""The bundled model in the demo's situation: 8 pumps at 10 Hz, pump 3 developing a bearing
fault (start 5 s, ramp 15 s), the gateway scoring the last 10 s every second from start-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.inference import LoadedModel
from bridge.simulators.plant import build_model
from bridge.simulators.plant.physics import FaultPlan, PumpState

FAULTY = 3
RUN_S = 90.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_fleet(bundled_model: Path, seed: int) -> None:
    model = LoadedModel.load(bundled_model)
    labels = model.labels
    traces = [
        build_model.simulate(
            PumpState(
                index=i, seed=seed, fault=FaultPlan(start_s=5, ramp_s=15) if i == FAULTY else None
            ),
            RUN_S,
        )
        for i in range(8)
    ]
    t = traces[0].t
    first_fault: float | None = None
    # Windows are only partly filled for the first 10 s: scoring starts once 3 s are in.
    for now in np.arange(3.0, RUN_S + 0.01, 1.0):
        sel = (t > now - build_model.WINDOW_S) & (t <= now + 1e-9)
        x = np.asarray(
            [
                build_model.window_features(t[sel], {k: v[sel] for k, v in tr.signals.items()})
                for tr in traces
            ]
        )
        result = model.run(x)  # one batched call per trigger, as the gateway does
        assert result.labels is not None
        names = [labels[i] for i in result.labels]
        healthy_now = [n for i, n in enumerate(names) if i != FAULTY]
        assert healthy_now == ["healthy"] * 7, f"false alarm at t={now}: {names}"
        if names[FAULTY] == "bearing_fault" and first_fault is None:
            first_fault = float(now)
        if first_fault is not None:
            assert names[FAULTY] == "bearing_fault", f"fault flickered off at t={now}"
    assert first_fault is not None and first_fault <= 30.0, first_fault
    # Not before the fault is really there (severity 0.3 at 9.5 s): no alarm at start-up.
    assert first_fault >= 8.0, first_fault
