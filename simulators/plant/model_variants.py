"""Small variants of the pump-health model, for model lifecycle tests and demos.

``python -m simulators.plant.model_variants --out DIR`` writes ``pump_health_v1.onnx`` (the
bundled model's parameters) and ``pump_health_v2.onnx`` (the same with its decision threshold
moved, so it disagrees with v1 on borderline windows) plus ``always_fault.onnx`` and
``always_healthy.onnx`` (constant answers, for hand-computed agreement). Same inputs and outputs
as the bundled model; a few KB each; built in milliseconds (no training).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simulators.plant.build_model import DEFAULT_OUT, FEATURES, Classifier, to_onnx

__all__ = ["bundled_classifier", "constant", "shifted", "write_variants"]


def bundled_classifier(path: Path = DEFAULT_OUT) -> Classifier:
    """The parameters of the committed model, read back from its initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return Classifier(
        mean=init["feature_mean"].astype(np.float64),
        scale=init["feature_scale"].astype(np.float64),
        weights=init["weights"][:, 1].astype(np.float64),
        bias=float(init["bias"][1]),
    )


def shifted(clf: Classifier, bias_shift: float) -> Classifier:
    return Classifier(clf.mean, clf.scale, clf.weights, clf.bias + bias_shift)


def constant(fault: bool) -> Classifier:
    n = len(FEATURES)
    return Classifier(np.zeros(n), np.ones(n), np.zeros(n), 50.0 if fault else -50.0)


def write_variants(out: Path, bias_shift: float = 2.0) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    base = bundled_classifier()
    models = {
        "pump_health_v1": base,
        "pump_health_v2": shifted(base, bias_shift),
        "always_fault": constant(True),
        "always_healthy": constant(False),
    }
    paths = {}
    for name, clf in models.items():
        path = out / f"{name}.onnx"
        path.write_bytes(to_onnx(clf))
        paths[name] = path
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--bias-shift", type=float, default=2.0, help="v2's logit shift")
    args = parser.parse_args(argv)
    for name, path in write_variants(args.out, args.bias_shift).items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
