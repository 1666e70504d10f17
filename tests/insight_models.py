"""Small ONNX models for the drift/explanation tests, built with the onnx package, and the
plant scenario of the insight test (its fault plan and the fleet's healthy reference)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.config.reference import compute_reference
from bridge.simulators.plant.physics import FaultPlan, PumpState

INSIGHT_PUMPS = (1, 3, 4)  # pumps 1, 3 and 4 of the simulator run at nearly the same load
INSIGHT_FEATURES = ("vibration.last", "discharge_pressure.last", "speed.last")
# An early bearing fault: vibration alone drifts. With pressure falling too, which of the two
# crosses the drift threshold first depended on the sampling phase (a row or two apart), and
# the alert named either.
INSIGHT_FAULT = FaultPlan(start_s=15.0, ramp_s=1.0, pressure_drop_bar=0.0)


def healthy_reference() -> dict[str, Any]:
    """Reference statistics of the simulated fleet in normal running (another stretch of time
    than the tests see), the way a data scientist would ship them with the model."""
    rows = []
    for index in INSIGHT_PUMPS:
        pump = PumpState(index=index, seed=0)
        for k in range(9000):
            r = pump.step(k * 0.1, 0.1)
            if k >= 5000:
                rows.append((r.vibration, r.discharge_pressure, r.speed))
    return compute_reference(np.asarray(rows), list(INSIGHT_FEATURES), bins=10)


def linear_regressor(
    path: Path, weights: Sequence[float], mean: Sequence[float], scale: Sequence[float]
) -> Path:
    """value = ((x - mean) / scale) . weights, input `features` [batch, n], output `value`."""
    from onnx import TensorProto, helper, numpy_helper, save

    n = len(weights)
    inits = [
        numpy_helper.from_array(np.asarray(mean, dtype=np.float32), "mean"),
        numpy_helper.from_array(np.asarray(scale, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(n, 1), "w"),
        numpy_helper.from_array(np.asarray([-1], dtype=np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["c"]),
        helper.make_node("Div", ["c", "scale"], ["z"]),
        helper.make_node("MatMul", ["z", "w"], ["v"]),
        helper.make_node("Reshape", ["v", "flat"], ["value"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def logistic_classifier(path: Path, weights: Sequence[float], bias: float) -> Path:
    """Two classes (normal, fault): p(fault) = sigmoid(x . weights + bias); outputs `label`,
    `probabilities`, labels metadata."""
    from onnx import TensorProto, helper, numpy_helper, save

    n = len(weights)
    w2 = np.zeros((n, 2), dtype=np.float32)
    w2[:, 1] = weights
    inits = [
        numpy_helper.from_array(w2, "w"),
        numpy_helper.from_array(np.asarray([0.0, bias], dtype=np.float32), "b"),
    ]
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "logistic",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"labels": "normal,fault"})
    save(model, str(path))
    return path
