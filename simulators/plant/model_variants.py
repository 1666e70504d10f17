"""Small variants of the pump-health model, for model lifecycle tests and demos.

``python -m bridge.simulators.plant.model_variants --out DIR`` writes ``pump_health_v1.onnx`` (the
bundled model's parameters) and ``pump_health_v2.onnx`` (the same with its decision threshold
moved, so it disagrees with v1 on borderline windows) plus ``always_fault.onnx`` and
``always_healthy.onnx`` (constant answers, for hand-computed agreement). Same inputs and outputs
as the bundled model; a few KB each; built in milliseconds (no training).

Broken on purpose, for the tests of what the gateway does with a bad model:
``wrong_output_shape.onnx`` declares ``label`` as [N] and computes [2N]; ``five_features.onnx``
takes 5 features per row where the bundled mapping builds 7; ``drops_faulty_rows.onnx`` has a
``label`` with one row per input row *below* a vibration mean of 10 (right for a batch of zeros,
short as soon as a faulty pump is in the batch); ``nan_when_calm.onnx`` gives NaN scores for
rows with a vibration mean below 10 (healthy pumps), right ones above.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.simulators.plant.build_model import (
    DEFAULT_OUT,
    FEATURES,
    IR_VERSION,
    LABELS,
    OPSET,
    Classifier,
    to_onnx,
)

__all__ = [
    "bundled_classifier",
    "constant",
    "drops_faulty_rows",
    "five_features",
    "nan_when_calm",
    "shifted",
    "write_variants",
    "wrong_output_shape",
]

# Vibration mean (feature 0) between the simulated healthy (~2) and faulty (~20) pumps.
_CALM_LIMIT = 10.0


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


def _graph(
    clf: Classifier,
    features: Sequence[str],
    tail: Sequence[Any] = (),
    label: str = "label",
    probabilities: str = "probabilities",
) -> bytes:
    """The bundled model's graph over ``features``, with ``tail`` nodes appended; the outputs
    are read from ``label`` and ``probabilities`` (renamed to the declared output names)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = len(features)
    w2 = np.zeros((n, 2), dtype=np.float32)
    w2[:, 1] = clf.weights[:n]
    inits = [
        numpy_helper.from_array(clf.mean[:n].astype(np.float32), "feature_mean"),
        numpy_helper.from_array(clf.scale[:n].astype(np.float32), "feature_scale"),
        numpy_helper.from_array(w2, "weights"),
        numpy_helper.from_array(np.asarray([0.0, clf.bias], dtype=np.float32), "bias"),
        numpy_helper.from_array(np.asarray(0, dtype=np.int64), "first"),
        numpy_helper.from_array(np.asarray(_CALM_LIMIT, dtype=np.float32), "calm_limit"),
        numpy_helper.from_array(np.asarray(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "feature_mean"], ["centered"]),
        helper.make_node("Div", ["centered", "feature_scale"], ["standardized"]),
        helper.make_node("MatMul", ["standardized", "weights"], ["matmul"]),
        helper.make_node("Add", ["matmul", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["softmax"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["argmax"], axis=1, keepdims=0),
        # Feature 0 (vibration mean) of each row, for the variants that depend on it.
        helper.make_node("Gather", ["features", "first"], ["vibration"], axis=1),
        *tail,
        helper.make_node("Identity", [label], ["label"]),
        helper.make_node("Identity", [probabilities], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pump_health_variant",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        outputs=[
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"labels": ",".join(LABELS), "features": ",".join(features)})
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def wrong_output_shape(clf: Classifier) -> bytes:
    """``label`` declared [N], computed [2N] (the class indices twice)."""
    from onnx import helper

    tail = [helper.make_node("Concat", ["argmax", "argmax"], ["doubled"], axis=0)]
    return _graph(clf, FEATURES, tail, label="doubled", probabilities="softmax")


def five_features(clf: Classifier) -> bytes:
    """The first 5 of the 7 features: an input of [N, 5]."""
    return _graph(clf, FEATURES[:5], label="argmax", probabilities="softmax")


def drops_faulty_rows(clf: Classifier) -> bytes:
    """``label`` keeps only the rows with a vibration mean below 10: a batch of zeros (or of
    healthy pumps) gets one label per row, a batch with a faulty pump fewer."""
    from onnx import helper

    tail = [
        helper.make_node("Less", ["vibration", "calm_limit"], ["calm"]),
        helper.make_node("Compress", ["argmax", "calm"], ["kept"], axis=0),
    ]
    return _graph(clf, FEATURES, tail, label="kept", probabilities="softmax")


def nan_when_calm(clf: Classifier) -> bytes:
    """Scores + 0·sqrt(vibration - 10): NaN for rows with a vibration mean below 10."""
    from onnx import helper

    tail = [
        helper.make_node("Sub", ["vibration", "calm_limit"], ["above"]),
        helper.make_node("Sqrt", ["above"], ["root"]),
        helper.make_node("Mul", ["root", "zero"], ["nan_or_zero"]),
        helper.make_node("Unsqueeze", ["nan_or_zero", "axis1"], ["column"]),
        helper.make_node("Add", ["softmax", "column"], ["poisoned"]),
    ]
    return _graph(clf, FEATURES, tail, label="argmax", probabilities="poisoned")


def write_variants(out: Path, bias_shift: float = 2.0) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    base = bundled_classifier()
    models = {
        "pump_health_v1": to_onnx(base),
        "pump_health_v2": to_onnx(shifted(base, bias_shift)),
        "always_fault": to_onnx(constant(True)),
        "always_healthy": to_onnx(constant(False)),
        "wrong_output_shape": wrong_output_shape(base),
        "five_features": five_features(base),
        "drops_faulty_rows": drops_faulty_rows(base),
        "nan_when_calm": nan_when_calm(base),
    }
    paths = {}
    for name, data in models.items():
        path = out / f"{name}.onnx"
        path.write_bytes(data)
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
