"""In-process pipeline vs its floor, one core, no sockets.

bridge: synthetic source (pre-built TagSample batches, 10 Hz rounds over every tag) ->
``TagTable.apply`` (normalize: scale, deadband, clamp, quality; numpy window rings) -> every 10
rounds (the model period of 1 s at 10 Hz) ``ModelRunner.tick`` (feature batch over every pump,
one onnxruntime call, predictions) -> a null sink.

floor: a plain Python loop doing the same per-sample work on lists (lookup, quality check,
scale, finiteness, deadband, latest value, ring append), and per period the same seven window
statistics vectorised over all pumps at once plus one raw onnxruntime call.

    python -m bench.pipeline [--pumps 2000] [--rounds 100]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.common import PUMP_MODEL, PUMP_TAGS, pump_mapping, row, write_result
from bridge.config import load_mapping
from bridge.inference.fit import load_model_for
from bridge.runtime.runner import ModelRunner
from bridge.runtime.tagtable import TagTable
from bridge.types import Prediction, Quality, TagSample

ROUNDS_PER_PERIOD = 10  # 10 Hz samples, model period 1 s
BATCH = 500  # samples per source batch, about one OPC UA publish response
VARIANTS = 20  # distinct pre-built rounds the synthetic source cycles through


def synthetic_rounds(pumps: int) -> list[list[list[TagSample]]]:
    """``VARIANTS`` rounds, each one value for every tag, cut in source-sized batches."""
    rnd = random.Random(7)
    now = time.time()
    rounds = []
    for _ in range(VARIANTS):
        samples = []
        for i in range(1, pumps + 1):
            for tag in PUMP_TAGS:
                value: float | bool = (
                    rnd.random() < 0.9 if tag == "running" else rnd.uniform(1.0, 100.0)
                )
                samples.append(TagSample(f"pump-{i:05d}.{tag}", value, Quality.GOOD, now, now, now))
        rounds.append([samples[k : k + BATCH] for k in range(0, len(samples), BATCH)])
    return rounds


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_bridge(
    mapping_path: Path, rounds: list[list[list[TagSample]]], n: int
) -> dict[str, Any]:
    mapping = load_mapping(mapping_path)
    model = mapping.models["pump-health"]
    loaded = load_model_for(model)
    table = TagTable(mapping)
    made = 0

    async def null_sink(batch: Sequence[Prediction]) -> None:
        nonlocal made
        made += sum(1 for p in batch if p.value is not None)

    runner = ModelRunner(model, loaded, loaded.labels, table.get, null_sink, "bench", "boot")
    # Warm-up: fill the windows past min_window_s so every tick runs the model on every pump.
    for k in range(ROUNDS_PER_PERIOD):
        for batch in rounds[k % VARIANTS]:
            table.apply(batch)
    await asyncio.sleep(model.min_window_s + 0.1)
    u0, made, t_apply, t_tick = table.updates, 0, 0.0, 0.0
    c0, t0 = _cpu(), time.perf_counter()
    for k in range(n):
        a = time.perf_counter()
        for batch in rounds[k % VARIANTS]:
            table.apply(batch)
        b = time.perf_counter()
        t_apply += b - a
        if (k + 1) % ROUNDS_PER_PERIOD == 0:
            await runner.tick()
            t_tick += time.perf_counter() - b
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    updates = table.updates - u0
    ticks = n // ROUNDS_PER_PERIOD
    return {
        "tag_updates": updates,
        "tag_updates_per_s": round(updates / wall),
        "tag_updates_per_cpu_s": round(updates / cpu),
        "normalize_updates_per_s": round(updates / t_apply),
        "tick_ms": round(1000 * t_tick / max(1, ticks), 2),
        "predictions_made": made,
        "predictions_expected": ticks * len(model.assets),
        "cpu_percent": round(100 * cpu / wall, 1),
    }


def run_floor(pumps: int, rounds: list[list[list[TagSample]]], n: int) -> dict[str, Any]:
    cap = 128
    session = ort.InferenceSession(
        str(PUMP_MODEL), _one_thread(), providers=["CPUExecutionProvider"]
    )
    windowed = PUMP_TAGS[:4]
    # tag id -> [value, quality, reason, t, scale, offset, deadband, ring_t, ring_v]
    state: dict[str, list[Any]] = {}
    rings: dict[str, list[tuple[list[float], list[float]]]] = {t: [] for t in windowed}
    for i in range(1, pumps + 1):
        for tag in PUMP_TAGS:
            ring: tuple[list[float], list[float]] | None = None
            if tag in windowed:
                ring = ([0.0] * cap, [0.0] * cap)
                rings[tag].append(ring)
            state[f"pump-{i:05d}.{tag}"] = [None, Quality.BAD, "", 0.0, 1.0, 0.0, 0.0, ring]
    good = Quality.GOOD
    isfinite = math.isfinite
    updates, pos, filled = 0, 0, 0
    c0, t0 = _cpu(), time.perf_counter()
    for k in range(n):
        now = time.time()
        for batch in rounds[k % VARIANTS]:
            for s in batch:
                e = state.get(s.tag)
                if e is None:
                    continue
                v = s.value
                if type(v) is float:
                    v = v * e[4] + e[5]
                    if not isfinite(v):
                        continue
                prev = e[0]
                if e[6] > 0 and prev is not None and abs(v - prev) < e[6]:
                    continue
                e[0], e[1], e[2], e[3] = v, s.quality, s.reason, now
                updates += 1
                r = e[7]
                if r is not None and s.quality is good:
                    r[0][pos] = now
                    r[1][pos] = v
        pos = (pos + 1) % cap
        filled = min(cap, filled + 1)
        if (k + 1) % ROUNDS_PER_PERIOD == 0:
            x = _floor_features(rings, filled)
            session.run(None, {"features": x})
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {
        "tag_updates": updates,
        "tag_updates_per_s": round(updates / wall),
        "tag_updates_per_cpu_s": round(updates / cpu),
    }


def _floor_features(
    rings: dict[str, list[tuple[list[float], list[float]]]], filled: int
) -> np.ndarray:
    """The seven pump features for every pump at once (order does not matter to any of them)."""
    vib = np.array([r[1][:filled] for r in rings["vibration"]])
    bt_t = np.array([r[0][:filled] for r in rings["bearing_temperature"]])
    bt_v = np.array([r[1][:filled] for r in rings["bearing_temperature"]])
    dp = np.array([r[1][:filled] for r in rings["discharge_pressure"]])
    sp = np.array([r[1][:filled] for r in rings["speed"]])
    tc = bt_t - bt_t.mean(axis=1, keepdims=True)
    denom = (tc * tc).sum(axis=1)
    slope = np.divide(
        (tc * (bt_v - bt_v.mean(axis=1, keepdims=True))).sum(axis=1),
        denom,
        out=np.zeros_like(denom),
        where=denom != 0,
    )
    cols = (vib.mean(1), vib.std(1), vib.max(1), bt_v.mean(1), slope, dp.mean(1), sp.mean(1))
    return np.stack(cols, axis=1).astype(np.float32)


def _one_thread() -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return opts


async def run(
    quick: bool = False, pumps: int | None = None, rounds: int | None = None
) -> dict[str, Any]:
    pumps = pumps or (500 if quick else 2000)
    n = rounds or (20 if quick else 100)
    data = synthetic_rounds(pumps)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        path.write_text(pump_mapping(pumps, f"sqlite:///{tmp}/p.db"))
        bridge = await run_bridge(path, data, n)
    floor = run_floor(pumps, data, n)
    # Per CPU-second: on a shared machine the scheduler takes wall time from either side at
    # random; CPU time is what one core spends (the onnxruntime thread included).
    b, f = bridge["tag_updates_per_cpu_s"], floor["tag_updates_per_cpu_s"]
    ratio = b / f
    return {
        "pumps": pumps,
        "tags": pumps * len(PUMP_TAGS),
        "rounds": n,
        "bridge": bridge,
        "floor": floor,
        "ratio": round(ratio, 3),
        "rows": [
            row(
                "in-process pipeline (tag updates per CPU-s)",
                b,
                f,
                "updates/s",
                ">= 200,000/s and >= 50% of floor",
                b >= 200_000 and ratio >= 0.5,
                f"{pumps} pumps x 5 tags at 10 Hz rounds, pump model on every pump each "
                f"{ROUNDS_PER_PERIOD} rounds; wall: bridge {bridge['tag_updates_per_s']:,}/s, "
                f"floor {floor['tag_updates_per_s']:,}/s",
            )
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pumps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    figures = asyncio.run(run(pumps=args.pumps, rounds=args.rounds))
    print(figures["bridge"], figures["floor"], f"ratio {figures['ratio']}", sep="\n")
    print(f"written {write_result('pipeline', figures)}")


if __name__ == "__main__":
    main()
