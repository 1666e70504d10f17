"""LoadedModel against the bundled pump model and small hand-built ONNX graphs."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bridge.errors import InferenceError
from bridge.inference import LoadedModel, OutputRoles, TensorSpec, file_sha256
from bridge.simulators.plant import build_model
from bridge.simulators.plant.physics import FaultPlan, PumpState


def write_model(
    path: Path,
    *,
    input_type: int = TensorProto.FLOAT,
    input_shape: list[int | str] | None = None,
    regressor: bool = False,
) -> Path:
    """A model summing its input rows: ``value`` float [N] for a regressor, otherwise a float
    ``label`` (wrongly typed on purpose) and a rank-1 ``scores``."""
    shape: list[int | str] = input_shape if input_shape is not None else ["batch", 3]
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["xf", "axes"], ["value"], keepdims=0),
    ]
    outputs = [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch"])]
    if not regressor:
        nodes.append(helper.make_node("Identity", ["value"], ["scores"]))
        nodes.append(helper.make_node("Identity", ["value"], ["label"]))
        outputs = [
            helper.make_tensor_value_info("label", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"]),
        ]
    graph = helper.make_graph(
        nodes,
        "test",
        inputs=[helper.make_tensor_value_info("x", input_type, shape)],
        outputs=outputs,
        initializer=[numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


PUMP_CHECK = {
    "input_name": "features",
    "n_features": 7,
    "label_output": "label",
    "score_output": "probabilities",
    "value_output": None,
}


def test_loads_bundled_model_and_describes_it(bundled_model: Path) -> None:
    m = LoadedModel.load(bundled_model)
    assert m.sha256 == hashlib.sha256(bundled_model.read_bytes()).hexdigest()
    assert m.sha256 == file_sha256(bundled_model)
    assert m.io.inputs == (TensorSpec("features", ("batch", 7), "float32"),)
    assert m.io.outputs == (
        TensorSpec("label", ("batch",), "int64"),
        TensorSpec("probabilities", ("batch", 2), "float32"),
    )
    assert m.io.metadata["features"] == ",".join(build_model.FEATURES)
    assert m.io.metadata["window_s"] == "10"
    assert m.labels == ("healthy", "bearing_fault")
    assert m.roles == OutputRoles(label="label", scores="probabilities")


def test_expected_sha256(bundled_model: Path) -> None:
    sha = file_sha256(bundled_model)
    assert LoadedModel.load(bundled_model, expected_sha256=sha.upper()).sha256 == sha
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    with pytest.raises(InferenceError, match=f"has sha256 {sha}, the mapping expects {wrong}"):
        LoadedModel.load(bundled_model, expected_sha256=wrong)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match="model file not found"):
        LoadedModel.load(tmp_path / "nope.onnx")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty"])
def test_corrupt_file(tmp_path: Path, bundled_model: Path, kind: str) -> None:
    good = bundled_model.read_bytes()
    data = {
        "garbage": b"this is not a protobuf \x00\xff" * 20,
        "truncated": good[: len(good) // 2],
        "empty": b"",
    }[kind]
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(InferenceError, match="not a loadable ONNX model"):
        LoadedModel.load(path)


def test_check_accepts_a_fitting_mapping(bundled_model: Path) -> None:
    assert LoadedModel.load(bundled_model).check(**PUMP_CHECK) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"input_name": "x"}, "model has no input 'x'; its inputs are: 'features' float32"),
        (
            {"n_features": 5},
            "model input 'features' expects 7 values per row, the mapping builds 5 features",
        ),
        ({"label_output": "class"}, "the mapping's label output 'class' is not in the model"),
        ({"score_output": "probs"}, "the mapping's scores output 'probs' is not in the model"),
        ({"label_output": "probabilities"}, "model output 'probabilities' is float32; a label"),
        ({"score_output": "label"}, "model output 'label' has rank 1"),
        ({"label_output": None}, "names neither a label output nor a value output"),
    ],
)
def test_check_reports_what_differs(
    bundled_model: Path, change: dict[str, object], expected: str
) -> None:
    problems = LoadedModel.load(bundled_model).check(**{**PUMP_CHECK, **change})  # type: ignore[arg-type]
    assert any(expected in p for p in problems), problems


def test_check_reports_every_mistake_at_once(bundled_model: Path) -> None:
    problems = LoadedModel.load(bundled_model).check("feats", 2, "label", "probs", None)
    assert len(problems) == 3, problems
    assert "model has no input 'feats'" in problems[0]
    assert "model input 'features' expects 7 values per row, the mapping builds 2" in problems[1]
    assert "scores output 'probs' is not in the model" in problems[2]


def test_check_input_type_and_rank(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.onnx", input_type=TensorProto.INT64, input_shape=[2, 3, 4])
    problems = LoadedModel.load(path).check("x", 3, None, None, "value")
    assert any("model input 'x' has rank 3" in p for p in problems), problems
    assert any("model input 'x' is int64; the gateway feeds float32" in p for p in problems)


def test_check_symbolic_feature_dim_fits_any_count(tmp_path: Path) -> None:
    m = LoadedModel.load(
        write_model(tmp_path / "m.onnx", input_shape=["batch", "n"], regressor=True)
    )
    assert m.check("x", 11, None, None, "value") == []
    assert any("value output 'nope'" in p for p in m.check("x", 11, None, None, "nope"))


def test_check_label_must_be_integer_and_scores_rank_two(tmp_path: Path) -> None:
    m = LoadedModel.load(write_model(tmp_path / "m.onnx"))
    problems = m.check("x", 3, "label", "scores", None)
    assert any("model output 'label' is float32; a label output" in p for p in problems)
    assert any("model output 'scores' has rank 1" in p for p in problems)


def _pump_rows(fault: FaultPlan | None, seeds: range) -> np.ndarray:
    """Feature rows from the physics: the last 10 s window after 60 s of running."""
    rows = []
    for seed in seeds:
        trace = build_model.simulate(PumpState(index=1, seed=seed, fault=fault), 60.0)
        sel = trace.t > trace.t[-1] - 10.0
        rows.append(
            build_model.window_features(trace.t[sel], {k: v[sel] for k, v in trace.signals.items()})
        )
    return np.asarray(rows)


def test_run_separates_healthy_from_faulty_pumps(bundled_model: Path) -> None:
    m = LoadedModel.load(bundled_model)
    healthy = _pump_rows(None, range(300, 306))
    faulty = _pump_rows(FaultPlan(start_s=10.0, ramp_s=20.0), range(400, 406))
    result = m.run(np.vstack([healthy, faulty]))
    assert result.labels is not None and result.scores is not None
    assert result.labels.tolist() == [0] * 6 + [1] * 6
    assert result.labels.dtype == np.int64
    assert np.all(result.scores > 0.9)  # confident both ways, far from the boundary
    assert result.values is None


def test_run_edge_cases(bundled_model: Path) -> None:
    m = LoadedModel.load(bundled_model)
    empty = m.run(np.empty((0, 7)))
    assert empty.labels is not None and empty.labels.shape == (0,)
    with pytest.raises(InferenceError, match="2-D batch"):
        m.run(np.zeros(7))
    with pytest.raises(InferenceError, match="failed on a"):
        m.run(np.zeros((2, 5)))


def test_regressor_value_output(tmp_path: Path) -> None:
    m = LoadedModel.load(write_model(tmp_path / "r.onnx", regressor=True))
    assert m.roles == OutputRoles(value="value")
    result = m.run(np.array([[1.0, 2.0, 3.0], [0.5, 0.5, -4.0]]))
    assert result.values is not None
    assert result.values.tolist() == [6.0, -3.0]
    assert result.labels is None and result.scores is None


def test_with_roles_reads_other_outputs(bundled_model: Path) -> None:
    m = LoadedModel.load(bundled_model).with_roles(OutputRoles(scores="probabilities"))
    result = m.run(_pump_rows(None, range(500, 502)))
    assert result.labels is None
    assert result.scores is not None and np.all(result.scores > 0.5)


async def _ticks_during(call: Coroutine[Any, Any, object]) -> tuple[int, float, float]:
    """How often a 1 ms ticker got the loop while ``call`` ran, its longest wait, and how long
    the call took."""
    ticks = 0
    longest = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks, longest
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            ticks += 1
            longest = max(longest, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # let the ticker start
    ticks = 0
    start = time.perf_counter()
    try:
        await call
    finally:
        took = time.perf_counter() - start
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    return ticks, longest, took


@pytest.mark.serial
async def test_run_async_does_not_block_the_loop(bundled_model: Path) -> None:
    m = LoadedModel.load(bundled_model)
    # Grow the batch until one call takes long enough to measure (>= 80 ms).
    rows = 50_000
    while True:
        x = np.random.default_rng(0).normal(size=(rows, 7)).astype(np.float32)
        start = time.perf_counter()
        m.run(x)
        took = time.perf_counter() - start
        if took >= 0.08 or rows >= 8_000_000:
            break
        rows *= 2
    assert took >= 0.08, "could not make inference slow enough to measure"

    async def blocking() -> None:
        m.run(x)  # the wrong way: the measure must tell it apart

    blocked_ticks, blocked_gap, blocked_took = await _ticks_during(blocking())
    ticks, gap, took = await _ticks_during(m.run_async(x))
    assert blocked_ticks <= 1 and blocked_gap >= blocked_took * 0.8
    assert ticks >= 10, f"loop got only {ticks} ticks during a {took:.3f}s inference"
    assert gap < took * 0.5, f"loop stalled {gap:.3f}s during a {took:.3f}s inference"


async def test_run_async_gives_run_results_inline_and_in_a_thread(bundled_model: Path) -> None:
    from bridge.inference.model import INLINE_ROWS

    m = LoadedModel.load(bundled_model)
    rng = np.random.default_rng(5)
    for rows in (1, INLINE_ROWS, INLINE_ROWS + 1, 512):
        x = rng.normal(size=(rows, 7)).astype(np.float32)
        sync, via = m.run(x), await m.run_async(x)
        assert sync.labels is not None and via.labels is not None
        assert np.array_equal(sync.labels, via.labels)
        assert sync.scores is not None and via.scores is not None
        assert np.array_equal(sync.scores, via.scores)
        assert via.scores.dtype == np.float64 and via.labels.dtype == np.int64


async def test_a_batch_the_model_was_measured_to_run_fast_stays_on_the_loop(
    bundled_model: Path,
) -> None:
    """Larger than INLINE_ROWS: a worker thread until the model's calls were measured, then
    inline when they take well under a thread hop; a batch expected to be slow still goes to
    a thread."""
    from concurrent.futures import ThreadPoolExecutor

    from bridge.inference.model import INLINE_ROWS, INLINE_S

    submitted: list[object] = []

    class Counting(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    executor = Counting(max_workers=1)
    asyncio.get_running_loop().set_default_executor(executor)
    m = LoadedModel.load(bundled_model)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4 * INLINE_ROWS, 7)).astype(np.float32)
    await m.run_async(x)
    assert len(submitted) == 1  # not measured yet: a thread
    for _ in range(5):
        m.run(x)  # a few µs a row: well under INLINE_S for these rows
    assert m._cost.expected_s(len(x)) < INLINE_S
    via = await m.run_async(x)
    assert len(submitted) == 1  # ran on the loop
    sync = m.run(x)
    assert via.labels is not None and sync.labels is not None
    assert np.array_equal(via.labels, sync.labels)
    big = rows_for(m, INLINE_S * 20)
    await m.run_async(rng.normal(size=(big, 7)).astype(np.float32))
    assert len(submitted) == 2  # expected to hold the loop: a thread


def rows_for(m: LoadedModel, seconds: float) -> int:
    """Rows that the model's measured cost says take ``seconds``."""
    per_row = m._cost.expected_s(1)
    return int(seconds / per_row) + 1
