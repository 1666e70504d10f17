"""Helpers for the benchmarks that drive a server process with wrk."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.common import ROOT, proc_cpu_s, stop


@contextlib.contextmanager
def python_server(
    *args: str, ready: str = "ready", timeout: float = 60
) -> Iterator[tuple[int, str]]:
    """Run ``python -m <args>`` until it prints ``ready [extra]``; yield its pid and the extra
    words; always stop it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{' '.join(args)} exited with {proc.wait()} before ready")
            if line.split()[:1] == [ready]:
                break
        else:
            raise RuntimeError(f"{' '.join(args)} not ready within {timeout} s")
        yield proc.pid, line.strip()[len(ready) :].strip()
    finally:
        stop(proc)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk(
    url: str, seconds: float, pid: int, connections: int = 8, headers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Requests/s and server CPU of one wrk run (1 thread: the server gets the other core)."""
    c0, t0 = proc_cpu_s(pid), time.perf_counter()
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            *(arg for h in headers for arg in ("-H", h)),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    c1, t1 = proc_cpu_s(pid), time.perf_counter()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99_ms = None
    if p99:
        p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {
        "requests_per_s": float(rps.group(1)) if rps else 0.0,
        "p99_ms": p99_ms,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "server_cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 1),
        "connections": connections,
    }
