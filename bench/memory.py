"""Memory and validation at 100,000 tags (20,000 pumps x 5 tags, the pump model on every pump):

- memory: a fresh process loads the mapping and the model, builds the tag table, fills every
  window as the declared tag rate would (the steady state: each ring at the size it keeps) and
  keeps every tag updating (rounds of one value per tag through ``TagTable.apply``, the model
  ticking once a period); its resident set size (RSS) is read from /proc at the end, and its
  peak.
- validate: the wall time of ``bridge validate`` on the same file, as a user runs it.

    python -m bench.memory [--pumps 20000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import PUMP_TAGS, ROOT, pump_mapping, row, rss_mb, write_result
from bridge.types import Prediction, Quality, TagSample


async def _hold(mapping_path: Path, rounds: int) -> dict[str, Any]:
    """Runs inside the child process: load, build, keep updating, report RSS."""
    from bridge.prepare import prepare
    from bridge.runtime.runner import ModelRunner
    from bridge.runtime.tagtable import TagTable

    base = rss_mb()
    prepared = prepare(mapping_path)
    loaded_mb = rss_mb()
    table = TagTable(prepared.mapping)
    model = prepared.mapping.models["pump-health"]

    async def null_sink(batch: Sequence[Prediction]) -> None:
        return None

    runner = ModelRunner(
        model,
        prepared.models["pump-health"],
        prepared.labels["pump-health"],
        table.get,
        null_sink,
        "bench",
        "boot",
    )
    ids = list(prepared.mapping.tags)
    built_mb = rss_mb()
    # The steady state: every window as full as the declared tag rate makes it (the sources'
    # publishing interval) over the longest window plus a margin, before the live rounds.
    rate_hz = _tag_rate_hz(prepared.mapping)
    reach = max(max(m.window_s, m.min_window_s) for m in prepared.mapping.models.values())
    fill = int(rate_hz * (reach + 2.0))
    start = time.monotonic() - fill / rate_hz  # window times are on the monotonic clock
    for i, e in enumerate(table.entries.values()):
        if e.ring is not None:
            for j in range(fill):
                e.ring.append(start + j / rate_hz, float((i + j) % 13))
    filled_mb = rss_mb()
    for k in range(rounds):
        now = time.time()
        batch = [
            TagSample(
                t,
                (k % 2 == 0) if t.endswith(".running") else float(k % 13) + i % 7,
                Quality.GOOD,
                now,
            )
            for i, t in enumerate(ids)
        ]
        for s in range(0, len(batch), 1000):
            table.apply(batch[s : s + 1000])
        if k % 10 == 9:
            await runner.tick()
    rings = [e.ring for e in table.entries.values() if e.ring is not None]
    slots = sum(r.allocated for r in rings)
    return {
        "tags": len(ids),
        "windowed_tags": len(rings),
        # Rings grow with rate x window (bridge/features/window.py), filled above to what the
        # declared rate keeps in the longest window.
        "ring_mb": round(slots * 16 / 1e6, 1),
        "ring_mb_at_capacity": round(sum(r.capacity for r in rings) * 16 / 1e6, 1),
        "fill_rate_hz": rate_hz,
        "fill_samples": fill,
        "rounds": rounds,
        "updates": table.updates,
        "python_baseline_mb": round(base, 1),
        "after_load_mb": round(loaded_mb, 1),
        "after_table_mb": round(built_mb, 1),
        "windows_full_mb": round(filled_mb, 1),
        "rss_mb": round(rss_mb(), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _tag_rate_hz(mapping: Any) -> float:
    """The fastest rate a source declares (OPC UA publishing interval), 10 Hz if none does."""
    intervals = [
        getattr(src.settings, "publishing_interval_ms", None) for src in mapping.sources.values()
    ]
    known = [float(i) for i in intervals if i]
    return 1000.0 / min(known) if known else 10.0


def run(quick: bool = False, pumps: int = 20_000, rounds: int | None = None) -> dict[str, Any]:
    rounds = rounds or (10 if quick else 30)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(pump_mapping(pumps, f"sqlite:///{tmp}/big.db"))
        # Three runs, the median reported: one run's wall time swings with the host.
        times: list[float] = []
        for _ in range(1 if quick else 3):
            t0 = time.perf_counter()
            check = subprocess.run(
                [sys.executable, "-m", "bridge", "validate", str(path)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            times.append(time.perf_counter() - t0)
        validate_s = statistics.median(times)
        child = subprocess.run(
            [sys.executable, "-m", "bench.memory", "--child", str(path), "--rounds", str(rounds)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    tags = pumps * len(PUMP_TAGS)
    return {
        "tags": tags,
        "validate_s": round(validate_s, 2),
        "validate_runs_s": [round(t, 2) for t in times],
        "validate_exit": check.returncode,
        "memory": memory,
        "rows": [
            row(
                f"RSS, {tags:,}-tag mapping loaded and updating (MB)",
                memory["peak_rss_mb"],
                None,
                "MB",
                "<= 500 MB",
                memory["peak_rss_mb"] <= 500,
                f"peak, every window full ({memory['fill_samples']} samples at "
                f"{memory['fill_rate_hz']:g} Hz); {memory['rss_mb']} MB at the end, "
                f"{rounds} rounds",
            ),
            row(
                f"bridge validate, {tags:,} tags (s)",
                round(validate_s, 2),
                None,
                "s",
                "<= 2 s",
                check.returncode == 0 and validate_s <= 2,
                f"exit {check.returncode}; whole process incl. interpreter start; median of "
                f"{', '.join(f'{t:.2f}' for t in times)} s",
            ),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pumps", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        from bridge.logging import configure_logging

        configure_logging("warning")
        print(json.dumps(asyncio.run(_hold(args.child, args.rounds))))
        return
    figures = run(pumps=args.pumps, rounds=args.rounds)
    print({k: v for k, v in figures.items() if k != "rows"})
    print(f"written {write_result('memory', figures)}")


if __name__ == "__main__":
    main()
