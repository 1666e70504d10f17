"""Build the bundled pump-health model from the simulator's own physics.

Run ``python -m bridge.simulators.plant.build_model [--out PATH]``. It simulates many pumps
(healthy and with developing bearing faults), cuts windows the way the gateway does, computes
features with ``bridge.features.stats``, trains a standardized logistic regression with numpy
and exports it to ONNX. The same seed gives the same bytes, so the committed model can be rebuilt
and compared. Beside the model it writes the reference statistics (``bridge-reference/1``) of the
healthy training windows: explanations measure each input against them and drift compares the
live windows with them, so a pump leaving normal operation shows in both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bridge.config.reference import compute_reference
from bridge.features import stats
from bridge.simulators.plant.physics import FaultPlan, PumpState

__all__ = [
    "DEFAULT_OUT",
    "DT_S",
    "FAULT_SEVERITY",
    "FEATURES",
    "LABELS",
    "SEED",
    "WINDOW_S",
    "BuildReport",
    "Classifier",
    "Dataset",
    "PumpTrace",
    "build",
    "main",
    "make_dataset",
    "pump_fleet",
    "reference_path",
    "simulate",
    "to_onnx",
    "train",
    "window_features",
]

WINDOW_S = 10
DT_S = 0.1
SEED = 7
FAULT_SEVERITY = 0.3
LABELS: tuple[str, ...] = ("healthy", "bearing_fault")
FEATURES: tuple[str, ...] = (
    "vibration.mean",
    "vibration.std",
    "vibration.max",
    "bearing_temperature.mean",
    "bearing_temperature.slope",
    "discharge_pressure.mean",
    "speed.mean",
)
# Feature prefix -> physics signal name (as served by the plant simulator).
SIGNAL_OF: dict[str, str] = {
    "vibration": "Vibration",
    "bearing_temperature": "BearingTemperature",
    "discharge_pressure": "DischargePressure",
    "speed": "Speed",
}
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "mappings" / "models" / "pump_health.onnx"

OPSET = 17
# IR 8 goes with opset 17 and loads in every onnxruntime the project allows (>= 1.18).
IR_VERSION = 8
# The label the committed model was built with (now bridge.simulators.plant.build_model): it is
# part of the model's bytes, so renaming it would change the model and its sha256 in lineage.
PRODUCER = "bridge simulators.plant.build_model"
PRODUCER_VERSION = "1"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PumpTrace:
    """One simulated pump run: sample times, signal values and fault severity per step."""

    t: FloatArray
    signals: dict[str, FloatArray]
    severity: FloatArray


@dataclass(frozen=True)
class Dataset:
    x: FloatArray  # [n, len(FEATURES)]
    y: npt.NDArray[np.int64]  # 1 = bearing_fault
    severity: FloatArray  # fault severity at each window's end
    fill_s: FloatArray  # seconds of data actually in each window


@dataclass(frozen=True)
class Classifier:
    """Logistic regression on standardized features: p(fault) = sigmoid(((x-mean)/scale)·w + b)."""

    mean: FloatArray
    scale: FloatArray
    weights: FloatArray
    bias: float

    def proba(self, x: FloatArray) -> FloatArray:
        z = ((x - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class BuildReport:
    out: Path
    size_bytes: int
    train_accuracy: float
    holdout_accuracy: float
    holdout_healthy_false_positive_rate: float
    holdout_fault_recall_at_0_5: float
    n_train: int
    n_holdout: int


def simulate(pump: PumpState, duration_s: float, dt: float = DT_S) -> PumpTrace:
    """Step a pump like the plant simulator does (fixed ``dt``), recording every reading."""
    n = round(duration_s / dt)
    t = np.arange(1, n + 1, dtype=np.float64) * dt
    cols: dict[str, list[float]] = {name: [] for name in SIGNAL_OF.values()}
    sev = np.empty(n, dtype=np.float64)
    for i in range(n):
        ti = float(t[i])
        reading = pump.step(ti, dt).as_signals()
        for name, col in cols.items():
            col.append(float(reading[name]))
        sev[i] = pump.severity(ti)
    return PumpTrace(t=t, signals={k: np.asarray(v) for k, v in cols.items()}, severity=sev)


def window_features(t: FloatArray, signals: Mapping[str, FloatArray]) -> FloatArray:
    """The model's input row for one window, in ``FEATURES`` order, from stats.compute."""
    row = np.empty(len(FEATURES), dtype=np.float64)
    for j, feature in enumerate(FEATURES):
        prefix, stat = feature.rsplit(".", 1)
        row[j] = stats.compute(stat, t, signals[SIGNAL_OF[prefix]])
    return row


def pump_fleet(first_seed: int, count: int, rng: np.random.Generator) -> list[PumpState]:
    """``count`` pumps with their own noise seeds and loads; two in three develop a fault."""
    pumps = []
    for k in range(count):
        fault = None
        if k % 3 != 0:
            fault = FaultPlan(
                start_s=float(rng.uniform(0.0, 40.0)), ramp_s=float(rng.uniform(5.0, 60.0))
            )
        pumps.append(
            PumpState(
                index=k % 8,
                seed=first_seed + k,
                fault=fault,
                load=float(rng.uniform(0.6, 1.0)),
            )
        )
    return pumps


def _windows(trace: PumpTrace, rng: np.random.Generator, every_s: float) -> Dataset:
    rows, labels, sevs, fills = [], [], [], []
    end_idx = np.arange(round(3.0 / DT_S) - 1, trace.t.size, round(every_s / DT_S))
    for e in end_idx:
        t_end = trace.t[e]
        # Mostly full windows; some shorter ones, as after start-up or a reconnect.
        length = float(WINDOW_S) if rng.random() < 0.7 else float(rng.uniform(3.0, WINDOW_S))
        sel = (trace.t > t_end - length) & (trace.t <= t_end)
        # Slower publishing intervals thin the samples the gateway sees.
        stride = int(rng.choice([1, 1, 1, 2, 5]))
        idx = np.flatnonzero(sel)[::-1][::stride][::-1]
        t = trace.t[idx]
        rows.append(window_features(t, {k: v[idx] for k, v in trace.signals.items()}))
        sev = float(trace.severity[e])
        labels.append(1 if sev >= FAULT_SEVERITY else 0)
        sevs.append(sev)
        fills.append(float(t[-1] - t[0]) + DT_S)
    return Dataset(
        x=np.asarray(rows),
        y=np.asarray(labels, dtype=np.int64),
        severity=np.asarray(sevs),
        fill_s=np.asarray(fills),
    )


def make_dataset(
    pumps: Sequence[PumpState], rng: np.random.Generator, duration_s: float = 90.0
) -> Dataset:
    """Simulate each pump and cut a window every second, labelled by severity at its end."""
    parts = [_windows(simulate(p, duration_s), rng, every_s=1.0) for p in pumps]
    return Dataset(
        x=np.concatenate([d.x for d in parts]),
        y=np.concatenate([d.y for d in parts]),
        severity=np.concatenate([d.severity for d in parts]),
        fill_s=np.concatenate([d.fill_s for d in parts]),
    )


def _round_sig(a: FloatArray, digits: int = 6) -> FloatArray:
    # A few significant digits make the exported bytes immune to last-bit BLAS differences.
    return np.asarray([float(f"{v:.{digits}g}") for v in np.ravel(a)]).reshape(np.shape(a))


def train(data: Dataset, l2: float = 1e-2, iterations: int = 40) -> Classifier:
    """L2-regularized logistic regression by Newton's method: deterministic, no learning rate."""
    mean = data.x.mean(axis=0)
    scale = np.maximum(data.x.std(axis=0), 1e-6)
    xs = (data.x - mean) / scale
    a = np.hstack([xs, np.ones((xs.shape[0], 1))])
    y = data.y.astype(np.float64)
    # Missing a fault costs little (the next window catches it); a false alarm on a healthy
    # pump costs trust, so healthy windows weigh more.
    sample_w = np.where(y == 0, 3.0, 1.0)
    beta = np.zeros(a.shape[1])
    reg = np.full(a.shape[1], l2 * a.shape[0])
    reg[-1] = 0.0  # the bias is not penalized
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a @ beta)))
        grad = a.T @ (sample_w * (p - y)) + reg * beta
        hess = (a * (sample_w * p * (1.0 - p))[:, None]).T @ a + np.diag(reg)
        beta = beta - np.linalg.solve(hess, grad)
    return Classifier(
        mean=_round_sig(mean),
        scale=_round_sig(scale),
        weights=_round_sig(beta[:-1]),
        bias=float(_round_sig(beta[-1:])[0]),
    )


def to_onnx(clf: Classifier) -> bytes:
    """Serialize the classifier: standardization, logits [0, z], Softmax and ArgMax in one graph."""
    import onnx  # the build-time ("model" extra) dependency; the gateway never needs it
    from onnx import TensorProto, helper, numpy_helper

    n = len(FEATURES)
    # Two logits [0, z] give softmax = [1 - sigmoid(z), sigmoid(z)]: exactly the regression.
    w2 = np.zeros((n, 2), dtype=np.float32)
    w2[:, 1] = clf.weights
    b2 = np.asarray([0.0, clf.bias], dtype=np.float32)
    inits = [
        numpy_helper.from_array(clf.mean.astype(np.float32), "feature_mean"),
        numpy_helper.from_array(clf.scale.astype(np.float32), "feature_scale"),
        numpy_helper.from_array(w2, "weights"),
        numpy_helper.from_array(b2, "bias"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "feature_mean"], ["centered"]),
        helper.make_node("Div", ["centered", "feature_scale"], ["standardized"]),
        helper.make_node("MatMul", ["standardized", "weights"], ["matmul"]),
        helper.make_node("Add", ["matmul", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "pump_health",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        outputs=[
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
        doc_string="Pump bearing health from 10 s window features (simulated training data).",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "labels": ",".join(LABELS),
            "features": ",".join(FEATURES),
            "window_s": str(WINDOW_S),
            "producer": f"{PRODUCER} v{PRODUCER_VERSION} (numpy logistic regression)",
        },
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _accuracy(clf: Classifier, data: Dataset) -> float:
    return float(np.mean((clf.proba(data.x) >= 0.5) == (data.y == 1)))


def reference_path(model: Path) -> Path:
    """``pump_health.onnx`` -> ``pump_health.reference.json`` beside it."""
    return model.with_name(model.stem + ".reference.json")


def _reference_json(data: Dataset) -> str:
    ref = compute_reference(data.x[data.severity == 0.0], FEATURES, bins=10)

    def rounded(value: float | list[float]) -> float | list[float]:
        # Rounded like the model's weights: a rebuild gives the same bytes.
        out = _round_sig(np.asarray(value, dtype=np.float64)).tolist()
        return out if isinstance(value, list) else float(out[0] if isinstance(out, list) else out)

    for f in ref["features"].values():
        for key in f:
            f[key] = rounded(f[key])
    return json.dumps(ref, indent=1, sort_keys=True) + "\n"


def build(out: Path = DEFAULT_OUT, seed: int = SEED) -> BuildReport:
    """Simulate, train, evaluate on held-out pumps and write the ONNX file to ``out``."""
    rng = np.random.default_rng(seed)
    # Training and holdout pumps have disjoint noise seeds (and stay clear of small demo seeds).
    train_set = make_dataset(pump_fleet(10_000 + seed * 1000, 60, rng), rng)
    holdout = make_dataset(pump_fleet(50_000 + seed * 1000, 24, rng), rng)
    clf = train(train_set)
    data = to_onnx(clf)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    reference_path(out).write_text(_reference_json(train_set), encoding="utf-8")
    pred = clf.proba(holdout.x) >= 0.5
    healthy = holdout.severity == 0.0
    severe = holdout.severity >= 0.5
    return BuildReport(
        out=out,
        size_bytes=len(data),
        train_accuracy=_accuracy(clf, train_set),
        holdout_accuracy=_accuracy(clf, holdout),
        holdout_healthy_false_positive_rate=float(np.mean(pred[healthy])),
        holdout_fault_recall_at_0_5=float(np.mean(pred[severe])),
        n_train=int(train_set.y.size),
        n_holdout=int(holdout.y.size),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the model")
    parser.add_argument("--seed", type=int, default=SEED, help="training seed")
    args = parser.parse_args(argv)
    r = build(args.out, args.seed)
    print(f"wrote {r.out} ({r.size_bytes} bytes)")
    print(f"train windows {r.n_train}, accuracy {r.train_accuracy:.4f}")
    print(f"holdout windows {r.n_holdout}, accuracy {r.holdout_accuracy:.4f}")
    print(f"holdout healthy false-positive rate {r.holdout_healthy_false_positive_rate:.4f}")
    print(f"holdout bearing_fault recall at severity >= 0.5 {r.holdout_fault_recall_at_0_5:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
