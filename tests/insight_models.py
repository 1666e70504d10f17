"""Small ONNX models for the drift/explanation tests, built with the onnx package."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


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
