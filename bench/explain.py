"""Explanations and drift at fleet size: what they add to a model run of 2,000 assets.

- explanation: one batched occlusion pass of the bundled pump model (2,000 rows x 7 inputs =
  14,000 perturbed rows in one onnxruntime call) plus picking the top inputs and writing the
  one-line reason, per prediction; beside it the plain inference of the same batch per
  prediction (the floor: what a prediction costs without an explanation).
- drift: one drift update of 2,000 assets (observe one Good feature row each) and one
  evaluation (PSI of 7 features over a window of 100 rows per asset, 10 bins).

    python -m bench.explain [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import PUMP_MODEL, row, write_result
from bridge.config.reference import compute_reference
from bridge.drift.monitor import DriftMonitor
from bridge.explain.occlusion import occlusion_effects
from bridge.explain.reason import describe
from bridge.inference.model import LoadedModel, OutputRoles
from bridge.inference.score import score_function

ASSETS = 2000
WINDOW = 100
FEATURES = (
    "vibration.mean",
    "vibration.std",
    "vibration.max",
    "bearing_temperature.mean",
    "bearing_temperature.slope",
    "discharge_pressure.mean",
    "speed.mean",
)
MEAN = np.asarray([2.5, 0.15, 2.9, 50.0, 0.0, 4.4, 1470.0])
STD = np.asarray([0.15, 0.03, 0.2, 2.0, 0.02, 0.05, 4.0])


def _best_ms(call: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` (ms): on a shared machine the best run is the undisturbed one."""
    call()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best


def run(quick: bool = False) -> dict[str, Any]:
    repeats = 5 if quick else 30
    rng = np.random.default_rng(11)
    x = (MEAN + rng.normal(0, 1, (ASSETS, len(FEATURES))) * STD).astype(np.float32)
    model = LoadedModel.load(
        PUMP_MODEL, intra_op_threads=1, roles=OutputRoles(label="label", scores="probabilities")
    )
    classes = model.run(x).labels
    score = score_function(model, classes)

    def explain() -> list[str]:
        effects = occlusion_effects(x, MEAN, score)
        order = np.argsort(-np.abs(effects), axis=1)[:, :3]
        return [
            describe(
                FEATURES[j].split(".")[0],
                FEATURES[j].split(".")[1],
                "",
                float(x[r, j]),
                float(MEAN[j]),
            )
            for r, j in enumerate(order[:, 0])
        ]

    infer_ms = _best_ms(lambda: model.run(x), repeats)
    explain_ms = _best_ms(explain, repeats)

    train = MEAN + rng.normal(0, 1, (20000, len(FEATURES))) * STD
    reference = compute_reference(train, list(FEATURES), bins=10)
    assets = [f"pump-{i:05d}" for i in range(ASSETS)]
    monitor = DriftMonitor(assets, FEATURES, reference, WINDOW, 0.25)
    for _ in range(WINDOW):  # full windows: every asset is scored
        monitor.observe(assets, MEAN + rng.normal(0, 1, (ASSETS, len(FEATURES))) * STD)
    rows = (MEAN + rng.normal(0, 1, (ASSETS, len(FEATURES))) * STD).astype(np.float32)
    observe_ms = _best_ms(lambda: monitor.observe(assets, rows), repeats)
    evaluate_ms = _best_ms(lambda: monitor.evaluate(time.time()), repeats)

    per_pred_us = explain_ms * 1000 / ASSETS
    infer_us = infer_ms * 1000 / ASSETS
    drift_ms = observe_ms + evaluate_ms
    return {
        "assets": ASSETS,
        "features": len(FEATURES),
        "drift_window": WINDOW,
        "inference_ms_per_batch": round(infer_ms, 3),
        "explain_ms_per_batch": round(explain_ms, 3),
        "explain_us_per_prediction": round(per_pred_us, 2),
        "inference_us_per_prediction": round(infer_us, 2),
        "drift_observe_ms": round(observe_ms, 3),
        "drift_evaluate_ms": round(evaluate_ms, 3),
        "rows": [
            row(
                "explanation per prediction (pump model, 2,000 assets)",
                round(per_pred_us, 2),
                round(infer_us, 2),
                "us",
                "report",
                None,
                "occlusion: 7 perturbed rows per prediction in one batched call + top 3 + "
                "reason; floor: the prediction's own inference",
            ),
            row(
                "drift update + PSI, 2,000 assets x 7 features, window 100",
                round(drift_ms, 2),
                None,
                "ms",
                "report",
                None,
                f"observe {observe_ms:.2f} ms + evaluate {evaluate_ms:.2f} ms per model run",
            ),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    figures = run(quick=parser.parse_args().quick)
    print({k: v for k, v in figures.items() if k != "rows"})
    print(f"written {write_result('explain', figures)}")


if __name__ == "__main__":
    main()
