"""Shared pieces of the benchmarks: free ports, result files, machine facts."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def read_key(mapping: Path) -> str:
    """A read-scope API key in the mapping's store: health counters need one."""
    create = ["apikeys", "create", "bench", "--scope", "read", "--mapping", str(mapping)]
    done = subprocess.run(
        [sys.executable, "-m", "bridge", *create],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def health(api_port: int, key: str) -> Any:
    """``/api/v1/health`` of a gateway on 127.0.0.1 with its component details."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}/api/v1/health", headers={"X-API-Key": key}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "versions": {
            p: version(p)
            for p in (
                "bridge-gateway",
                "asyncua",
                "pymodbus",
                "onnxruntime",
                "numpy",
                "fastapi",
                "uvicorn",
                "pydantic",
            )
        },
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def write_result(name: str, figures: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "figures": figures,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


# --- pieces shared by the `python -m bench` suite -------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
PUMP_MODEL = ROOT / "mappings" / "models" / "pump_health.onnx"
PUMP_TAGS = ("vibration", "bearing_temperature", "discharge_pressure", "speed", "running")
PUMP_FEATURES = """
      - {tag: vibration, stat: mean}
      - {tag: vibration, stat: std}
      - {tag: vibration, stat: max}
      - {tag: bearing_temperature, stat: mean}
      - {tag: bearing_temperature, stat: slope}
      - {tag: discharge_pressure, stat: mean}
      - {tag: speed, stat: mean}"""


def pump_mapping(
    pumps: int,
    store: str,
    *,
    endpoint: str = "opc.tcp://127.0.0.1:4840",
    model: bool = True,
    max_samples: int = 128,
    scale: float = 1.0,
    api_port: int | None = None,
) -> str:
    """A mapping of ``pumps`` pumps of the plant simulator (5 tags each), optionally with the
    bundled pump-health model on every pump. Windows of 10 s at 10 Hz need 100 samples, hence
    128 kept per tag instead of the default 2048 (32 KB per tag: 3 GB at 100,000 tags)."""
    api = f"{{host: 127.0.0.1, port: {api_port}}}" if api_port else "{enabled: false}"
    lines = [
        "version: 1",
        f'gateway: {{id: bench, store: "{store}", api: {api}}}',
        "sources:",
        f'  plant: {{kind: opcua, endpoint: "{endpoint}", publishing_interval_ms: 100}}',
        "templates:",
        "  pump:",
        "    tags:",
    ]
    for tag in PUMP_TAGS:
        signal = "".join(part.capitalize() for part in tag.split("_"))
        address = f"nsu=urn:bridge:sim:plant;s=Pump{{n}}.{signal}"
        lines.append(
            f'      {tag}: {{source: plant, address: "{address}"'
            + (f", scale: {scale}" if scale != 1.0 and tag != "running" else "")
            + "}"
        )
    lines.append("assets:")
    lines += [
        f'  pump-{i:05d}: {{template: pump, vars: {{n: "{i:02d}"}}}}' for i in range(1, pumps + 1)
    ]
    if model:
        lines += [
            "models:",
            "  pump-health:",
            f"    file: {PUMP_MODEL}",
            "    version: 1.0.0",
            "    template: pump",
            "    period_s: 1",
            "    window_s: 10",
            "    min_window_s: 0.5",
            f"    max_samples: {max_samples}",
            "    input: features",
            "    features:" + PUMP_FEATURES,
            "    outputs: {label: label, scores: probabilities}",
        ]
    return "\n".join(lines) + "\n"


def rss_mb() -> float:
    """Resident set size of this process now (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), children excluded."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def row(
    measure: str,
    bridge: float | None,
    floor: float | None,
    unit: str,
    target: str,
    met: bool | None,
    note: str = "",
) -> dict[str, Any]:
    """One line of the summary table; ``ratio`` is bridge / floor when both exist."""
    ratio = bridge / floor if bridge is not None and floor else None
    return {
        "measure": measure,
        "bridge": bridge,
        "floor": floor,
        "unit": unit,
        "ratio": round(ratio, 3) if ratio is not None else None,
        "target": target,
        "met": met,
        "note": note,
    }


@contextlib.contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in ``log``, terminated (then killed) on leaving."""
    with log.open("wb") as out:
        # Unbuffered, so the log is complete when read while the process still runs.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            stop(proc, 15)


def stop(proc: subprocess.Popen[Any], grace_s: float = 10) -> None:
    """Terminate ``proc``; kill it if it has not exited within ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 100:
        return f"{value:,.2f}"
    if isinstance(value, int | float):
        return f"{value:,.0f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("measure", "bridge", "floor", "ratio", "target", "met")
    lines = [
        (
            r["measure"],
            _fmt(r["bridge"]),
            _fmt(r["floor"]),
            _fmt(r["ratio"]),
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r["met"]],
        )
        for r in rows
    ]
    if not lines:
        return "(no rows)"
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i in (0, 4) else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    notes = [f"  {r['measure']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join([*out, "notes:", *notes])


PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"


@contextlib.contextmanager
def bench_store(backend: str, workdir: Path, name: str, **options: Any) -> Iterator[Any]:
    """A store of its own for one benchmark run: a SQLite file ``<name>.db`` in ``workdir``, or
    a fresh PostgreSQL schema dropped afterwards. ``options`` go to ``open_store``."""
    import uuid

    from sqlalchemy import create_engine, text

    from bridge.store.db import open_store

    if backend == "sqlite":
        s = open_store(f"sqlite:///{workdir / name}.db", **options)
        try:
            yield s
        finally:
            s.dispose()
        return
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        s = open_store(PG_URL, schema=schema, **options)
        try:
            yield s
        finally:
            s.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
