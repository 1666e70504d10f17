"""INT8 quantization with onnxruntime's own tools, measured against the float model.

``static`` (QDQ, activations and weights INT8, calibrated by MinMax on the calibration rows) or
``dynamic`` (weights INT8, activations quantized at run time). The report compares the two
models on a golden set: file size, median latency of one batched call, and agreement (same
label for classifiers; value within ``shadow.REL_TOL`` for regressors).
"""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from bridge.errors import BridgeError
from bridge.inference.model import BatchResult, LoadedModel
from bridge.lifecycle.shadow import agrees

__all__ = ["QuantizeReport", "agreement", "load_rows", "quantize"]

Method = Literal["static", "dynamic"]
F32 = npt.NDArray[np.float32]


class QuantizeError(BridgeError):
    pass


@dataclass(frozen=True)
class QuantizeReport:
    method: Method
    out: Path
    float_bytes: int
    int8_bytes: int
    golden_rows: int
    float_latency_ms: float
    int8_latency_ms: float
    agreement: float

    def lines(self) -> list[str]:
        return [
            f"method            {self.method}",
            f"size              {self.float_bytes} -> {self.int8_bytes} bytes "
            f"({self.int8_bytes / self.float_bytes:.2f}x)",
            f"latency (batch {self.golden_rows}) {self.float_latency_ms:.3f} -> "
            f"{self.int8_latency_ms:.3f} ms (median)",
            f"agreement         {self.agreement:.4f} on {self.golden_rows} golden rows",
        ]


def load_rows(path: Path, n_features: int | None = None) -> F32:
    """Rows [n, features] from ``.npy`` or ``.csv`` (a header line of names is skipped)."""
    try:
        if path.suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        else:
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
            if rows and not _numeric(rows[0]):
                rows = rows[1:]
            x = np.asarray([[float(v) for v in r] for r in rows if r])
    except (OSError, ValueError) as exc:
        raise QuantizeError(f"cannot read rows from {path}: {exc}") from exc
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise QuantizeError(f"{path}: expected a non-empty 2-D table of rows, got {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise QuantizeError(f"{path}: rows have {x.shape[1]} values, the model takes {n_features}")
    return x


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _width(model: LoadedModel) -> int | None:
    dim = model.io.inputs[0].shape[1] if len(model.io.inputs[0].shape) == 2 else None
    return dim if isinstance(dim, int) else None


def agreement(a: BatchResult, b: BatchResult) -> float:
    if a.labels is not None and b.labels is not None:
        return float(np.mean(a.labels == b.labels)) if a.labels.size else 1.0
    if a.values is not None and b.values is not None:
        flags = [agrees(float(x), float(y)) for x, y in zip(a.values, b.values, strict=True)]
        return sum(bool(f) for f in flags) / len(flags) if flags else 1.0
    raise QuantizeError("the model has neither a label nor a value output to compare")


def _latency_ms(model: LoadedModel, x: F32, repeats: int = 21) -> float:
    model.run(x)  # warm-up: first runs allocate
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.run(x)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol: dicts of input batches, then None."""

    def __init__(self, name: str, x: F32, batch: int = 64) -> None:
        self._batches = iter([{name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, F32] | None:
        return next(self._batches, None)


def quantize(
    src: Path,
    out: Path,
    calibration: F32,
    golden: F32 | None = None,
    method: Method = "static",
) -> QuantizeReport:
    from onnxruntime.quantization import (  # heavy import, only for this command
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_model = LoadedModel.load(src)
    width = _width(float_model)
    if width is not None and calibration.shape[1] != width:
        raise QuantizeError(
            f"calibration rows have {calibration.shape[1]} values, model takes {width}"
        )
    gold = calibration if golden is None else golden
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        try:
            quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization; quantize the original instead
            prepped = src
        try:
            if method == "dynamic":
                quantize_dynamic(prepped, out, weight_type=QuantType.QInt8)
            else:
                reader = _Reader(float_model.io.inputs[0].name, calibration)
                quantize_static(
                    prepped,
                    out,
                    calibration_data_reader=_as_reader(reader, CalibrationDataReader),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                )
        except Exception as exc:  # onnxruntime's quantizer raises untyped errors
            raise QuantizeError(f"quantizing {src} failed: {exc}") from exc
    int8_model = LoadedModel.load(out)
    return QuantizeReport(
        method=method,
        out=out,
        float_bytes=src.stat().st_size,
        int8_bytes=out.stat().st_size,
        golden_rows=len(gold),
        float_latency_ms=_latency_ms(float_model, gold),
        int8_latency_ms=_latency_ms(int8_model, gold),
        agreement=agreement(float_model.run(gold), int8_model.run(gold)),
    )


def _as_reader(reader: _Reader, base: type) -> object:
    """Wrap in a subclass of onnxruntime's abstract reader (it checks with isinstance)."""

    class Reader(base):  # type: ignore[misc]
        def get_next(self) -> dict[str, F32] | None:
            return reader.get_next()

    return Reader()
