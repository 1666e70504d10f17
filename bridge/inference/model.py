"""One loaded ONNX model: its onnxruntime session, what it expects, batched runs off the loop."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import deque
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import structlog

from bridge.errors import InferenceError

__all__ = [
    "BatchResult",
    "LoadedModel",
    "ModelIO",
    "OutputRoles",
    "TensorSpec",
    "file_sha256",
]

log = structlog.get_logger(__name__)

# onnxruntime's type strings -> the numpy-style names used in messages and TensorSpec.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint64)": "uint64",
    "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}
# Batches up to this many rows run on the event loop (a few tens of µs for the bundled models).
INLINE_ROWS = 16
# A larger batch also runs on the loop when this model's calls measured so far say it takes
# less than this: the hop to a worker thread and back costs ~0.1-0.3 ms on a quiet machine and
# several ms on a loaded one (the thread and then the loop must each get a core), which a
# change-triggered model's chunks of ~100 rows paid on every run.
INLINE_S = 0.0005
_INT_DTYPES = frozenset({"int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8"})
_FLOAT_DTYPES = frozenset({"float32", "float64", "float16"})


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output. Symbolic dims are strings (``"batch"``), unknown ones ``None``."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"'{self.name}' {self.dtype} [{dims}]"


@dataclass(frozen=True)
class ModelIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str]

    def input(self, name: str) -> TensorSpec | None:
        return next((s for s in self.inputs if s.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((s for s in self.outputs if s.name == name), None)


@dataclass(frozen=True)
class OutputRoles:
    """Which model outputs the gateway reads: a classifier's ``label`` (class index) and
    ``scores`` (class probabilities), or a regressor's ``value``."""

    label: str | None = None
    scores: str | None = None
    value: str | None = None

    def names(self) -> list[str]:
        return [n for n in (self.label, self.scores, self.value) if n is not None]


@dataclass(frozen=True)
class BatchResult:
    """One row per input row. ``scores`` is the probability of the predicted class.

    ``invalid`` marks the rows whose score or value is NaN or infinite (``None``: none is):
    a model says nothing usable for them, and they must never pass as a Good ``null``."""

    labels: np.ndarray | None
    scores: np.ndarray | None
    values: np.ndarray | None
    invalid: np.ndarray | None = None

    def reason(self, i: int) -> str:
        """Why row ``i`` is unusable, or ``""``."""
        if self.invalid is None or not self.invalid[i]:
            return ""
        return "the model's output is not a finite number (NaN or infinity)"


class _RunCost:
    """Seconds per row of a model's session calls: the least of the last few (a call that lost
    its core or waited for the GIL says little about the model; a model that got slower shows
    in all of them). Unknown (infinite) until a call of more than ``INLINE_ROWS`` rows was
    measured. Written from worker threads: a deque append is atomic, a race only makes the
    figure one call older."""

    __slots__ = ("_recent",)

    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=8)

    def ran(self, rows: int, seconds: float) -> None:
        self._recent.append(seconds / rows)

    def expected_s(self, rows: int) -> float:
        recent = tuple(self._recent)
        return min(recent) * rows if recent else math.inf


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int | str) or d is None else str(d) for d in arg.shape or ())
    return TensorSpec(name=str(arg.name), shape=shape, dtype=_DTYPES.get(arg.type, str(arg.type)))


def _default_roles(io: ModelIO) -> OutputRoles:
    """Guess roles for a model used without a mapping: integer [N] is the label, float [N, C]
    the scores; a lone float output of a model with no label is a regression value."""
    label = next((o.name for o in io.outputs if o.dtype in _INT_DTYPES and len(o.shape) == 1), None)
    scores = next(
        (o.name for o in io.outputs if o.dtype in _FLOAT_DTYPES and len(o.shape) == 2), None
    )
    floats = [o for o in io.outputs if o.dtype in _FLOAT_DTYPES]
    if label is None and len(floats) == 1:
        return OutputRoles(value=floats[0].name)
    return OutputRoles(label=label, scores=scores)


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # Small models on a small box: one batched call per trigger, so parallelism inside a call is
    # worth little and spinning threads would steal the event loop's core.
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only; warnings go through our own log
    return opts


@dataclass(frozen=True)
class LoadedModel:
    """One onnxruntime InferenceSession per model version. Immutable; safe to share across
    threads (``InferenceSession.run`` is thread-safe)."""

    path: Path
    sha256: str
    io: ModelIO
    roles: OutputRoles
    session: ort.InferenceSession

    @classmethod
    def load(
        cls,
        path: Path,
        expected_sha256: str | None = None,
        intra_op_threads: int = 1,
        roles: OutputRoles | None = None,
    ) -> LoadedModel:
        """Read, verify and open a model. ``roles`` defaults to a guess from the output types."""
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise InferenceError(f"model file not found: {path}") from exc
        except OSError as exc:
            raise InferenceError(f"cannot read model file {path}: {exc}") from exc
        return cls.from_bytes(path, data, expected_sha256, intra_op_threads, roles)

    @classmethod
    def from_bytes(
        cls,
        path: Path,
        data: bytes,
        expected_sha256: str | None = None,
        intra_op_threads: int = 1,
        roles: OutputRoles | None = None,
    ) -> LoadedModel:
        """Verify and open model bytes the caller read (``path`` names them in messages)."""
        # Hash the very bytes the session is built from, so the sha names what actually runs.
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and sha != expected_sha256.lower():
            raise InferenceError(
                f"model {path} has sha256 {sha}, the mapping expects {expected_sha256}: "
                "refusing a model that is not the one that was approved"
            )
        try:
            session = ort.InferenceSession(
                data,
                sess_options=_session_options(intra_op_threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises several untyped Fail/InvalidProtobuf kinds
            raise InferenceError(f"{path} is not a loadable ONNX model: {exc}") from exc
        io = ModelIO(
            inputs=tuple(_spec(a) for a in session.get_inputs()),
            outputs=tuple(_spec(a) for a in session.get_outputs()),
            metadata=dict(session.get_modelmeta().custom_metadata_map),
        )
        model = cls(
            path=path, sha256=sha, io=io, roles=roles or _default_roles(io), session=session
        )
        log.info(
            "model_loaded",
            path=str(path),
            sha256=sha,
            inputs=[s.describe() for s in io.inputs],
            outputs=[s.describe() for s in io.outputs],
            intra_op_threads=intra_op_threads,
        )
        return model

    def with_roles(self, roles: OutputRoles) -> LoadedModel:
        """The same session read through other outputs (no reload)."""
        return replace(self, roles=roles)

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names from the ``labels`` metadata (comma-separated), index = class id."""
        raw = self.io.metadata.get("labels", "")
        return tuple(s.strip() for s in raw.split(",")) if raw.strip() else ()

    def check(
        self,
        input_name: str,
        n_features: int,
        label_output: str | None,
        score_output: str | None,
        value_output: str | None,
    ) -> list[str]:
        """What stops this model from serving the mapping; ``[]`` when it fits."""
        problems: list[str] = []
        has = ", ".join(s.describe() for s in self.io.inputs) or "none"
        spec = self.io.input(input_name)
        if spec is None:
            problems.append(f"model has no input '{input_name}'; its inputs are: {has}")
            # With one input there is no doubt which was meant: check it too, so every mistake
            # in the mapping shows up in one pass.
            if len(self.io.inputs) == 1:
                spec = self.io.inputs[0]
        if spec is not None:
            if len(self.io.inputs) > 1:
                problems.append(
                    f"model has {len(self.io.inputs)} inputs ({has}); "
                    "the gateway feeds exactly one feature matrix"
                )
            if len(spec.shape) != 2:
                problems.append(
                    f"model input '{spec.name}' has rank {len(spec.shape)} {spec.describe()}; "
                    "the gateway feeds a 2-D batch [rows, features]"
                )
            elif isinstance(spec.shape[1], int) and spec.shape[1] != n_features:
                problems.append(
                    f"model input '{spec.name}' expects {spec.shape[1]} values per row, "
                    f"the mapping builds {n_features} features"
                )
            if spec.dtype != "float32":
                problems.append(
                    f"model input '{spec.name}' is {spec.dtype}; the gateway feeds float32"
                )
        if label_output is None and value_output is None:
            problems.append("the mapping names neither a label output nor a value output")
        outs = ", ".join(s.describe() for s in self.io.outputs) or "none"
        for role, name in (
            ("label", label_output),
            ("scores", score_output),
            ("value", value_output),
        ):
            if name is None:
                continue
            out = self.io.output(name)
            if out is None:
                problems.append(
                    f"the mapping's {role} output '{name}' is not in the model; "
                    f"its outputs are: {outs}"
                )
            elif role == "label" and out.dtype not in _INT_DTYPES:
                problems.append(
                    f"model output '{name}' is {out.dtype}; a label output must hold integer "
                    "class indices (e.g. from ArgMax)"
                )
            elif role == "scores" and len(out.shape) != 2:
                problems.append(
                    f"model output '{name}' has rank {len(out.shape)} {out.describe()}; "
                    "a scores output must be [rows, classes] probabilities"
                )
            elif role == "scores" and out.dtype not in _FLOAT_DTYPES:
                problems.append(f"model output '{name}' is {out.dtype}; scores must be floats")
            elif role == "value" and (
                out.dtype not in _FLOAT_DTYPES or len(out.shape) not in (1, 2)
            ):
                problems.append(
                    f"model output '{name}' is {out.describe()}; a value output must be "
                    "float [rows] or [rows, 1]"
                )
        labels = self.labels
        scores_spec = self.io.output(score_output) if score_output is not None else None
        n_classes = scores_spec.shape[-1] if scores_spec is not None and scores_spec.shape else None
        if labels and isinstance(n_classes, int) and n_classes != len(labels):
            problems.append(
                f"model output '{score_output}' has {n_classes} classes, "
                f"its 'labels' metadata names {len(labels)}"
            )
        if not problems and spec is not None:
            roles = OutputRoles(label=label_output, scores=score_output, value=value_output)
            problems += self.probe(spec, n_features, roles)
        return problems

    def probe(self, spec: TensorSpec, n_features: int, roles: OutputRoles) -> list[str]:
        """Run the model on batches of zeros of 1 and of 2 rows and check what it computes
        against what the gateway reads: the declared shapes are only what the file claims
        (a model declaring ``[N]`` and computing ``[2N]`` passes every other check)."""
        width = spec.shape[1] if isinstance(spec.shape[1], int) else n_features
        names = roles.names()
        for rows in (1, 2):
            x = np.zeros((rows, width), dtype=np.float32)
            try:
                arrays = self.session.run(names, {spec.name: x})
            except Exception as exc:  # onnxruntime's errors are untyped
                return [f"model fails on a batch of {rows} row(s) of zeros: {exc}"]
            found = _shape_problems(roles, names, arrays, rows)
            if found:
                return [f"on a batch of {rows} row(s): {p}" for p in found]
        return []

    def run(self, x: np.ndarray) -> BatchResult:
        """One batched, synchronous call. ``x`` is [rows, features]; converted to float32."""
        # The pump model runs in ~100 µs per 512 rows: every µs of Python around the session
        # call is a percent of throughput, so the checks below take the fast path when the
        # batch is already what onnxruntime wants (bench/README.md, "Inference").
        batch = x if _is_ready(x) else np.ascontiguousarray(x, dtype=np.float32)
        if batch.ndim != 2:
            raise InferenceError(f"expected a 2-D batch [rows, features], got shape {batch.shape}")
        names = self._output_names
        if not names:
            raise InferenceError(f"model {self.path.name}: no output is mapped to label or value")
        rows = batch.shape[0]
        if rows == 0:
            return self._result([np.empty((0,)) for _ in names], rows=0)
        started = time.perf_counter()
        try:
            arrays = self.session.run(names, {self._input_name: batch})
        except Exception as exc:  # onnxruntime's errors are untyped
            raise InferenceError(
                f"model {self.path.name} failed on a {batch.shape} batch: {exc}"
            ) from exc
        # What the model computed, not what it declared: a wrong shape for some inputs only
        # must be a refused batch, never an exception that ends the runner.
        if rows > INLINE_ROWS:  # small batches are mostly the call's fixed cost
            self._cost.ran(rows, time.perf_counter() - started)
        problems = _shape_problems(self.roles, names, arrays, rows)
        if problems:
            raise InferenceError(
                f"model {self.path.name} on a {batch.shape} batch: {'; '.join(problems)}"
            )
        try:
            return self._result(arrays, rows=rows)
        except Exception as exc:  # a shape or type numpy cannot read as declared
            what = f"model {self.path.name}: cannot read its outputs"
            raise InferenceError(f"{what} for a {batch.shape} batch: {exc}") from exc

    async def run_async(self, x: np.ndarray) -> BatchResult:
        """``run`` in a worker thread: onnxruntime releases the GIL, the event loop keeps going.

        A small batch runs inline: the hop to a thread and back (and the GIL hand-over while
        the loop is busy with I/O) costs more than the call itself, and it lengthens the
        input -> prediction latency of a gateway with few assets. So does a larger batch of a
        model whose calls took less than ``INLINE_S`` for that many rows."""
        rows = x.shape[0]
        if rows <= INLINE_ROWS or self._cost.expected_s(rows) < INLINE_S:
            return self.run(x)
        return await asyncio.to_thread(self.run, x)

    @cached_property
    def _cost(self) -> _RunCost:
        return _RunCost()

    @cached_property
    def _output_names(self) -> list[str]:
        return self.roles.names()

    @cached_property
    def _input_name(self) -> str:
        return self.io.inputs[0].name

    def _result(self, arrays: list[np.ndarray], rows: int) -> BatchResult:
        """``arrays`` in the order of ``roles.names()``: label, scores, value (unmapped: absent)."""
        roles = self.roles
        i = 0
        labels = scores = values = None
        if roles.label is not None:
            labels = _as(arrays[0], np.int64).reshape(rows)
            i = 1
        if roles.scores is not None:
            # Pick before widening: float32 -> float64 is exact, so picking the rows' class
            # first and converting only those values gives the same bits as converting all.
            probs = arrays[i]
            i += 1
            if probs.ndim == 2 and labels is not None:
                picked = probs[_row_index(rows), labels] if rows else np.empty(0)
            elif probs.ndim == 2:
                picked = probs.max(axis=1) if rows else np.empty(0)
            else:
                picked = probs.reshape(rows)
            scores = _as(picked, np.float64)
        if roles.value is not None:
            values = _as(arrays[i], np.float64).reshape(rows)
        invalid = _non_finite(scores, values)
        return BatchResult(labels=labels, scores=scores, values=values, invalid=invalid)


def _shape_problems(
    roles: OutputRoles, names: list[str], arrays: list[Any], rows: int
) -> list[str]:
    """How the computed outputs differ from one label/value per row and [rows, classes] scores
    (``names`` in the order of ``roles.names()``, ``arrays`` as onnxruntime returned them)."""
    problems: list[str] = []
    for name, a in zip(names, arrays, strict=True):
        if not isinstance(a, np.ndarray):
            problems.append(f"output '{name}' is a {type(a).__name__}, not a tensor")
            continue
        shape = tuple(a.shape)
        if name == roles.scores:
            fits = (a.ndim == 2 and shape[0] == rows) or shape in ((rows,),)
            want = f"[{rows}, classes]"
        else:
            fits = shape in ((rows,), (rows, 1))
            want = f"[{rows}] or [{rows}, 1]"
        if not fits:
            problems.append(f"output '{name}' has shape {list(shape)}, expected {want}")
        elif name == roles.label and a.dtype.kind not in "iu":
            problems.append(f"output '{name}' holds {a.dtype}, expected integer class indices")
        elif name != roles.label and a.dtype.kind != "f":
            problems.append(f"output '{name}' holds {a.dtype}, expected floats")
    return problems


def _non_finite(*columns: np.ndarray | None) -> np.ndarray | None:
    """Rows where any column is NaN or infinite; ``None`` (no allocation) when there is none."""
    bad: np.ndarray | None = None
    for col in columns:
        if col is None or col.size == 0:
            continue
        finite = np.isfinite(col)
        if finite.all():
            continue
        bad = ~finite if bad is None else bad | ~finite
    return bad


def _as(a: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """``a`` as ``dtype``, without a copy (or a call into numpy) when it already is."""
    return a if a.dtype == dtype else a.astype(dtype)


@lru_cache(maxsize=8)
def _row_index(rows: int) -> np.ndarray:
    """``arange(rows)``, kept: batches come in a few sizes and building it costs as much as the
    pick it serves."""
    index = np.arange(rows)
    index.flags.writeable = False
    return index


def _is_ready(x: np.ndarray) -> bool:
    """Already a C-contiguous float32 ndarray: nothing to convert."""
    return type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous
