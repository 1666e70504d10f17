"""The benchmark suite: every figure side by side with its floor, measured in the same run.

    python -m bench            # full run, on demand (several minutes)
    python -m bench --quick    # smoke run for CI (< 2 minutes): same code paths, smaller sizes
    python -m bench --only pipeline,inference
    python -m bench --quick --skip opcua_sessions,opcua_server   # leave parts out

Prints a table and writes bench/results/bench.json (bench-quick.json for --quick) with the
figures, the ratios, the versions and the machine. Targets are reported, never asserted: the
exit status is non-zero only when a part of this suite crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import api, explain, inference, memory, peer, pipeline
from bench.common import RESULTS, ROOT, row, table, write_result
from bench.peer import NODERED

# Benchmarks other issues add to bench/: run when present, read from their own JSON result.
EXTERNAL = (
    "opcua_ingest",
    "modbus_poll",
    "outbox",
    "api_auth",
    "retention",
    "trigger",
    "store",
    "opcua_server",
    "opcua_history",
    "opcua_alarms",
    "opcua_sessions",
    "opcua_transfer",
    "mqtt",
)
EXTERNAL_TIMEOUT_S = {True: 90, False: 900}
# Arguments of the full run where a part's own defaults are sized for running it alone
# (bench.outbox's 600 s backlog on two backends takes ~12 of the suite's ~18 minutes).
EXTERNAL_ARGS = {
    "outbox": ["--backlog-s", "60", "--drain-s", "15"],
    # bench.store's stand-alone default (100,000 rows per backend and side) takes minutes.
    "store": ["--rows", "40000"],
}


def _e2e(quick: bool) -> dict[str, Any]:
    figures = _run_module("e2e", [], EXTERNAL_TIMEOUT_S[quick])
    lat = figures.get("latency")
    if lat:
        note = (
            f"source publishing {lat['source_publishing_interval_ms']} ms, model period "
            f"{lat['model_period_ms']:g} ms, HMI publishing {lat['hmi_publishing_interval_ms']}"
            " ms; one tag, no background load"
        )
        figures["rows"] = [
            row(
                "input change -> HMI node, p99 (ms), no load",
                lat["p99_ms"],
                None,
                "ms",
                "p99 <= 50 ms at 10,000 updates/s",
                None,
                note,
            )
        ]
    loaded = _run_module("e2e_loaded", [], EXTERNAL_TIMEOUT_S[quick])
    figures["loaded"] = loaded
    ingested = loaded["gateway_updates_per_s"] or 0  # None: the health counter was unreadable
    figures.setdefault("rows", []).append(
        row(
            f"input change -> HMI node, p99 (ms), gateway ingesting {ingested:,}/s",
            loaded["p99_ms"],
            None,
            "ms",
            "p99 <= 50 ms at 10,000 updates/s",
            loaded["p99_ms"] <= 50 and ingested >= 10_000,
            f"offered {loaded['offered_updates_per_s']:,}/s on {loaded['load_items']} items "
            f"@{loaded['plant_publishing_interval_ms']} ms publishing; probe publishing "
            f"{loaded['probe_publishing_interval_ms']} ms, model period "
            f"{loaded['model_period_ms']:g} ms, HMI publishing "
            f"{loaded['hmi_publishing_interval_ms']} ms; p50 {loaded['p50_ms']} ms, "
            f"p95 {loaded['p95_ms']} ms; gateway CPU {loaded['gateway_cpu_percent']}%",
        )
    )
    return figures


def _run_module(name: str, args: list[str], timeout: float) -> dict[str, Any]:
    """``python -m bench.<name> ARGS`` in its own process; its figures from results/<name>.json."""
    result = RESULTS / f"{name}.json"
    started = time.time()
    # Its own process group, killed whole on a timeout: subprocess.run's timeout kills only the
    # child, and the servers it started (the MES receiver of bench.outbox) outlived it.
    child = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise RuntimeError(f"bench.{name} ran past {timeout:g} s and was stopped") from None
    proc = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"bench.{name} exited {proc.returncode}: {' | '.join(tail)}")
    if not result.exists() or result.stat().st_mtime < started:
        raise RuntimeError(f"bench.{name} wrote no {result.name}")
    figures: dict[str, Any] = json.loads(result.read_text())["figures"]
    return figures


def _external(name: str, quick: bool) -> dict[str, Any]:
    help_text = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    args = ["--quick"] if quick and "--quick" in help_text else []
    if quick and not args:
        return {"skipped": f"bench.{name} has no --quick mode", "rows": []}
    if not quick:
        args = EXTERNAL_ARGS.get(name, [])
    figures = _run_module(name, args, EXTERNAL_TIMEOUT_S[quick])
    if "rows" not in figures:
        figures["rows"] = [row(name, None, None, "", "", None, f"see bench/results/{name}.json")]
    return figures


def parts(quick: bool) -> dict[str, Callable[[], dict[str, Any]]]:
    found: dict[str, Callable[[], dict[str, Any]]] = {
        "pipeline": lambda: asyncio.run(pipeline.run(quick)),
        "inference": lambda: inference.run(quick),
        "api": lambda: api.run(quick),
        "memory": lambda: memory.run(quick, pumps=1000 if quick else 20_000),
        "peer": lambda: peer.run(quick),
        "explain": lambda: explain.run(quick),
    }
    if not quick:  # 30 s even when small: the smoke run leaves the latency figure out
        found["e2e"] = lambda: _e2e(quick)
    for name in EXTERNAL:
        if importlib.util.find_spec(f"bench.{name}") is not None:
            found[name] = lambda name=name: _external(name, quick)  # type: ignore[misc]
    return found


def tools() -> dict[str, str | None]:
    def first_line(cmd: list[str]) -> str | None:
        if shutil.which(cmd[0]) is None:
            return None
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (done.stdout or done.stderr).strip().splitlines()[0] if done else None

    nodered = None
    if NODERED.exists():
        nodered = json.loads((NODERED.parent / "package.json").read_text())["version"]
    return {
        "node": first_line(["node", "--version"]),
        "node-red": nodered,
        "wrk": first_line(["wrk", "-v"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run, < 2 minutes")
    parser.add_argument("--only", default="", help="comma-separated parts to run")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of bench/results/")
    args = parser.parse_args()
    from bridge.logging import configure_logging

    configure_logging("warning")
    available = parts(args.quick)
    chosen = [p for p in args.only.split(",") if p] or list(available)
    skipped = {p for p in args.skip.split(",") if p}
    if unknown := skipped - set(available):
        print(f"unknown part(s) {', '.join(sorted(unknown))} in --skip", file=sys.stderr)
        return 2
    chosen = [p for p in chosen if p not in skipped]
    figures: dict[str, Any] = {"quick": args.quick, "tools": tools(), "parts": {}}
    crashed = False
    t_all = time.perf_counter()
    for name in chosen:
        if name not in available:
            print(f"unknown part {name!r}; known: {', '.join(available)}", file=sys.stderr)
            return 2
        print(f"[{name}] ...", flush=True)
        t0 = time.perf_counter()
        try:
            result = available[name]()
        except Exception as exc:
            crashed = crashed or name not in EXTERNAL
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}", "rows": []}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        if "skipped" in result:
            print(f"[{name}] skipped: {result['skipped']}")
        figures["parts"][name] = result
        # Written after every part, so a long run that is stopped still leaves its figures.
        write_result("bench-quick" if args.quick else "bench", figures, args.out)
    figures["seconds"] = round(time.perf_counter() - t_all, 1)
    figures["rows"] = [r for part in figures["parts"].values() for r in part.get("rows", [])]
    print()
    print(table(figures["rows"]))
    path = write_result("bench-quick" if args.quick else "bench", figures, args.out)
    print(f"\nwritten {path} in {figures['seconds']} s")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
