"""bridge vs Node-RED on the same job, one after the other on the same simulators.

The job: subscribe to every pump tag of the plant simulator (OPC UA, 100 ms publishing and
sampling) -> scale the value -> call the MES receiver over HTTP.

- Node-RED (bench/nodered, installed by bench/setup_nodered.sh): OpcUa-Client "subscribe" with
  one monitored-item group for all tags -> function node (scale) -> http request node (one POST
  per message to the MES receiver). messages/s = POSTs the MES recorded per second.
- bridge (``bridge run`` in its own process): the plant source with ``scale:`` on the tags ->
  normalize -> windows -> the pump model once a second -> the MES sink (one POST per prediction).
  messages/s = tag updates normalized per second (from /api/v1/health); the MES calls it makes
  are reported too. The two do not post the same number of HTTP calls: Node-RED posts every
  sample, bridge posts what the MES is meant to get (predictions).

CPU is the process's user+system time over the measuring window (100% = one core); the
simulators run in processes of their own and are not counted for either side.

    python -m bench.peer [--pumps 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import ROOT, free_port, proc_cpu_s, pump_mapping, row, write_result

NODERED = Path(__file__).resolve().parent / "nodered" / "node_modules" / "node-red" / "red.js"
SIGNALS = ("Vibration", "BearingTemperature", "DischargePressure", "Speed", "Running")
SCALE = 2.0


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready within {timeout:g} s")


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _mes_count(port: int) -> int:
    return int(_get_json(f"http://127.0.0.1:{port}/stats")["count"])


def _plant_namespace(port: int) -> int:
    from asyncua.client.client import Client

    async def get() -> int:
        async with Client(f"opc.tcp://127.0.0.1:{port}", timeout=10) as client:
            return int(await client.get_namespace_index("urn:bridge:sim:plant"))

    return asyncio.run(get())


def _measure(
    pid: int, counter: Callable[[], int], seconds: float, extra: Callable[[], int] | None = None
) -> dict[str, Any]:
    n0, c0, t0 = counter(), proc_cpu_s(pid), time.perf_counter()
    e0 = extra() if extra else 0
    time.sleep(seconds)
    n1, c1, t1 = counter(), proc_cpu_s(pid), time.perf_counter()
    e1 = extra() if extra else 0
    wall = t1 - t0
    out = {
        "messages_per_s": round((n1 - n0) / wall),
        "cpu_percent": round(100 * (c1 - c0) / wall, 1),
    }
    if extra:
        out["mes_calls_per_s"] = round((e1 - e0) / wall, 1)
    return out


def nodered_flow(plant_port: int, ns: int, pumps: int, mes_port: int) -> list[dict[str, Any]]:
    items = [
        {"nodeId": f"ns={ns};s=Pump{i:02d}.{sig}"} for i in range(1, pumps + 1) for sig in SIGNALS
    ]
    setup = (
        f"msg.topic = 'multiple'; msg.interval = 100; msg.payload = {json.dumps(items)}; "
        "return msg;"
    )
    scale = (
        "const v = msg.payload && msg.payload.value ? msg.payload.value.value : undefined;"
        "if (typeof v !== 'number' && typeof v !== 'boolean') return null;"
        f"msg.payload = {{tag: msg.topic, value: typeof v === 'number' ? v * {SCALE} : v}};"
        "msg.headers = {'content-type': 'application/json'};"
        "return msg;"
    )
    return [
        {"id": "tab", "type": "tab", "label": "bench"},
        {
            "id": "ep",
            "type": "OpcUa-Endpoint",
            "endpoint": f"opc.tcp://127.0.0.1:{plant_port}",
            "secpol": "None",
            "secmode": "None",
            "none": True,
            "login": False,
        },
        {
            "id": "go",
            "type": "inject",
            "z": "tab",
            "once": True,
            "onceDelay": "1",
            "repeat": "",
            "wires": [["items"]],
        },
        {"id": "items", "type": "function", "z": "tab", "func": setup, "wires": [["client"]]},
        {
            "id": "client",
            "type": "OpcUa-Client",
            "z": "tab",
            "endpoint": "ep",
            "action": "subscribe",
            "time": 100,
            "timeUnit": "ms",
            "certificate": "n",
            "securitymode": "None",
            "securitypolicy": "None",
            "wires": [["scale"], [], []],
        },
        {"id": "scale", "type": "function", "z": "tab", "func": scale, "wires": [["post"]]},
        {
            "id": "post",
            "type": "http request",
            "z": "tab",
            "method": "POST",
            "ret": "txt",
            "paytoqs": "ignore",
            "url": f"http://127.0.0.1:{mes_port}/api/v1/events",
            "wires": [[]],
        },
    ]


def run(
    quick: bool = False, pumps: int | None = None, seconds: float | None = None
) -> dict[str, Any]:
    pumps = pumps or (20 if quick else 200)
    seconds = seconds or (3 if quick else 20)
    if shutil.which("node") is None or not NODERED.exists():
        msg = "Node-RED not installed: run bench/setup_nodered.sh (needs node + npm)"
        return {"skipped": msg, "rows": []}
    plant_port, mes_port = free_port(), free_port()
    py = sys.executable
    out: dict[str, Any] = {
        "pumps": pumps,
        "tags": pumps * len(SIGNALS),
        "offered_per_s": pumps * len(SIGNALS) * 10,
        "publishing_interval_ms": 100,
        "sampling_interval_ms": 100,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plant_cmd = [py, "-m", "bridge", "simulate", "plant", "--port", str(plant_port)]
        plant_cmd += ["--pumps", str(pumps), "--faulty", "", "--interval", "0.1"]
        mes_cmd = [py, "-m", "bridge", "simulate", "mes", "--port", str(mes_port)]
        with (
            process(plant_cmd, work / "plant.log"),
            process(mes_cmd, work / "mes.log"),
        ):
            _wait(lambda: _plant_namespace(plant_port) > 0, 60, "plant simulator")
            _wait(lambda: _mes_count(mes_port) >= 0, 30, "MES receiver")
            ns = _plant_namespace(plant_port)
            settle = 1.0 if quick else 3.0  # every monitored item created and reporting
            out["bridge"] = _run_bridge(work, pumps, plant_port, mes_port, seconds, settle)
            out["nodered"] = _run_nodered(work, pumps, plant_port, ns, mes_port, seconds, settle)
    b, n = out["bridge"], out["nodered"]
    ratio = b["messages_per_s"] / n["messages_per_s"] if n["messages_per_s"] else None
    out["throughput_ratio"] = round(ratio, 2) if ratio else None
    met = ratio is not None and ratio >= 5 and b["cpu_percent"] <= n["cpu_percent"]
    out["rows"] = [
        row(
            f"peer: {pumps * len(SIGNALS)} tags subscribe->scale->MES (msg/s)",
            b["messages_per_s"],
            n["messages_per_s"],
            "msg/s",
            ">= 5x Node-RED at no more CPU",
            met,
            f"CPU bridge {b['cpu_percent']}% vs Node-RED {n['cpu_percent']}%; "
            f"offered {out['offered_per_s']}/s",
        )
    ]
    return out


def _run_bridge(
    work: Path, pumps: int, plant_port: int, mes_port: int, seconds: float, settle: float
) -> dict[str, Any]:
    api = free_port()
    mapping = pump_mapping(
        pumps,
        f"sqlite:///{work}/peer.db",
        endpoint=f"opc.tcp://127.0.0.1:{plant_port}",
        scale=SCALE,
        api_port=api,
    )
    mapping += (
        "outputs:\n  mes:\n    kind: mes-rest\n"
        f"    url: http://127.0.0.1:{mes_port}/api/v1/predictions\n"
    )
    path = work / "peer.yaml"
    path.write_text(mapping)
    health = f"http://127.0.0.1:{api}/api/v1/health"

    def updates() -> int:
        comps = _get_json(health)["components"]
        return int(next(c for c in comps if c["name"] == "normalize")["counters"]["updates"])

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "bridge", "--log-level", "warning", "run", str(path)]
    with process(cmd, work / "bridge.log", env) as pid:
        _wait(lambda: updates() > 0, 90, "bridge gateway")
        time.sleep(settle)
        return _measure(pid, updates, seconds, lambda: _mes_count(mes_port))


def _run_nodered(
    work: Path,
    pumps: int,
    plant_port: int,
    ns: int,
    mes_port: int,
    seconds: float,
    settle: float,
) -> dict[str, Any]:
    user = work / "nodered"
    user.mkdir()
    (user / "flows.json").write_text(json.dumps(nodered_flow(plant_port, ns, pumps, mes_port)))
    port = free_port()
    cmd = ["node", str(NODERED), "-u", str(user), "-p", str(port), "flows.json"]
    base = _mes_count(mes_port)
    with process(cmd, work / "nodered.log") as pid:
        _wait(lambda: _mes_count(mes_port) > base, 90, "Node-RED flow")
        time.sleep(settle)
        return _measure(pid, lambda: _mes_count(mes_port), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pumps", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    figures = run(pumps=args.pumps, seconds=args.seconds)
    print({k: v for k, v in figures.items() if k != "rows"})
    print(f"written {write_result('peer', figures)}")


if __name__ == "__main__":
    main()
