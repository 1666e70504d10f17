"""The gateway's OPC UA server under an HMI: CPU and write time of a batch of predictions per
second, against asyncua's own server written through its documented fast path.

bridge: the real ``PredictionServer`` (None policy, anonymous) with ``--assets`` assets x 1
model; once a second ``write()`` gets a batch of one prediction per asset in which 8 nodes
change (Value, Score, Quality, Timestamp, InputAge, PredictionId, Explanation, DriftScore; the
model's name, version and hash stay the same and are skipped).

floor (same run, same process, one after the other): a bare asyncua ``Server`` with the same
variables (same node ids, types and count: 11 per asset), the same 8 per asset written once a
second with ``await server.write_attribute_value(nodeid, DataValue(...))`` per node, the
cheapest path asyncua documents (a DataValue built per write, as the gateway must).

Both sides: one HMI client in its own process (``--hmi``) subscribed at ``--hmi-ms``
publishing to every asset's ``Value`` (``--fields all``: to all 8 written variables), so every
write also queues notifications. Measured over ``--seconds`` batches after a warm-up batch:
this process's CPU (user + system, ``resource.getrusage``; 100 % = one core; the client's
process is not counted), ``write()``'s wall time per batch, and the HMI's latency: client
arrival - write start (the value's SourceTimestamp) and arrival - write end (the publish and
network part), both on this machine's wall clock.

    python -m bench.opcua_server [--assets 2000 --seconds 10 --hmi-ms 10 --fields value] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server

from bench.common import free_port, machine, percentile, row, stop, write_result
from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.encode import FIELDS, node_string
from bridge.logging import configure_logging
from bridge.types import Explanation, Prediction, PredictionSlot, Quality, SinkContext

NS = "urn:bench:hmi"
MODEL = "m"
TARGET_CPU_PERCENT = 25.0
# What changes in every prediction (the model fields are the same each time).
CHANGING = (
    "Value",
    "Score",
    "Quality",
    "Timestamp",
    "InputAge",
    "PredictionId",
    "Explanation",
    "DriftScore",
)
QUALITIES = (Quality.GOOD, Quality.UNCERTAIN)
Writer = Callable[[float, int], Awaitable[None]]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _assets(n: int) -> list[str]:
    return [f"a{i:05d}" for i in range(n)]


def _idents(assets: Sequence[str], fields: str) -> list[str]:
    watched = CHANGING if fields == "all" else ("Value",)
    return [node_string(a, MODEL, f) for a in assets for f in watched]


# --- the two servers -----------------------------------------------------------------------


async def bridge_server(assets: Sequence[str], port: int) -> tuple[PredictionServer, Writer]:
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{port}",
        namespace=NS,
        allow_anonymous=True,
        security_policies=["None"],
    )
    slots = tuple(PredictionSlot(a, MODEL, "1.0.0", "a" * 64) for a in assets)
    server = PredictionServer("hmi", settings, SinkContext("bench", slots))
    await server.start()

    async def write(stamp: float, k: int) -> None:
        batch = [
            Prediction(
                id=f"{a}-{k}",
                seq=k,
                asset=a,
                model=MODEL,
                version="1.0.0",
                sha256="a" * 64,
                value=float(k + i),
                score=(k % 100) / 100,
                quality=QUALITIES[k % 2],
                timestamp=stamp,
                input_age_s=0.001 * k,
                explanation=Explanation(f"x high {k}", ()),
                drift_score=0.01 * k,
            )
            for i, a in enumerate(assets)
        ]
        await server.write(batch)
        # A batch larger than the server's chunk is written by its drain task: the batch's
        # cost is until the last chunk is written.
        await server.drained()

    return server, write


async def floor_server(assets: Sequence[str], port: int) -> tuple[Server, Writer]:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS)
    root = await server.nodes.objects.add_folder(make_node_id("Predictions", ns), f"{ns}:P")
    ids: list[dict[str, ua.NodeId]] = []
    for a in assets:
        obj = await root.add_object(make_node_id(node_string(a, MODEL), ns), f"{ns}:{a}")
        per: dict[str, ua.NodeId] = {}
        for field, vtype in FIELDS.items():
            nodeid = make_node_id(node_string(a, MODEL, field), ns)
            await obj.add_variable(nodeid, f"{ns}:{field}", _initial(vtype), vtype)
            per[field] = nodeid
        ids.append(per)
    await server.start()
    double, text, date = ua.VariantType.Double, ua.VariantType.String, ua.VariantType.DateTime

    async def write(stamp: float, k: int) -> None:
        when: Any = datetime.fromtimestamp(stamp, UTC)
        now: Any = datetime.now(UTC)
        quality = QUALITIES[k % 2].label
        put = server.write_attribute_value
        for i, per in enumerate(ids):
            values = (
                ("Value", float(k + i), double),
                ("Score", (k % 100) / 100, double),
                ("Quality", quality, text),
                ("Timestamp", when, date),
                ("InputAge", 0.001 * k, double),
                ("PredictionId", f"{assets[i]}-{k}", text),
                ("Explanation", f"x high {k}", text),
                ("DriftScore", 0.01 * k, double),
            )
            for field, value, vtype in values:
                dv = ua.DataValue(
                    ua.Variant(value, vtype), SourceTimestamp=when, ServerTimestamp=now
                )
                await put(per[field], dv)

    return server, write


def _initial(vtype: ua.VariantType) -> Any:
    if vtype == ua.VariantType.String:
        return ""
    if vtype == ua.VariantType.DateTime:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return 0.0


# --- one side: server in this process, HMI in its own ------------------------------------


async def run_side(
    name: str, args: argparse.Namespace, idents_file: Path, assets: Sequence[str]
) -> dict[str, Any]:
    port = free_port()
    started = time.perf_counter()
    server: PredictionServer | Server
    if name == "bridge":
        server, write = await bridge_server(assets, port)
    else:
        server, write = await floor_server(assets, port)
    build_s = time.perf_counter() - started
    command = [sys.executable, "-m", "bench.opcua_server", "--hmi", f"opc.tcp://127.0.0.1:{port}"]
    command += ["--idents", str(idents_file), "--hmi-ms", str(args.hmi_ms)]
    hmi = subprocess.Popen(  # noqa: ASYNC220
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert hmi.stdin is not None and hmi.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(hmi.stdout.readline), 600)
        if not line.startswith("ready"):
            raise SystemExit(f"{name}: the HMI client did not subscribe: {line!r}")
        revised = float(line.split()[1])
        await write(round(time.time(), 3), 0)  # warm-up: every node resolved once
        await asyncio.sleep(1.0)
        gc.collect()
        gc.freeze()  # as the gateway does after start-up
        hmi.stdin.write("go\n")
        hmi.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(hmi.stdout.readline), 60)
        assert line.startswith("going"), line
        writes_ms: list[float] = []
        ends: dict[float, float] = {}
        cpu0, t0 = _cpu(), time.perf_counter()
        for k in range(1, args.seconds + 1):
            tick = t0 + k - 1
            await asyncio.sleep(max(0.0, tick - time.perf_counter()))
            stamp = round(time.time(), 3)  # the SourceTimestamp: matched by the HMI to ms
            w0 = time.perf_counter()
            await write(stamp, k)
            writes_ms.append((time.perf_counter() - w0) * 1000)
            ends[stamp] = time.time()
        await asyncio.sleep(max(0.0, t0 + args.seconds - time.perf_counter()))
        span = time.perf_counter() - t0
        cpu = _cpu() - cpu0
        await asyncio.sleep(0.5)  # the last batch's notifications arrive
        hmi.stdin.write("stop\n")
        hmi.stdin.flush()
        report = json.loads(await asyncio.wait_for(asyncio.to_thread(hmi.stdout.readline), 120))
        await asyncio.to_thread(hmi.wait, 30)  # it disconnects its session itself
    finally:
        stop(hmi, 10)
        gc.unfreeze()
        if isinstance(server, PredictionServer):
            await server.close()
        else:
            await server.stop()
    total = [(at - src) * 1000 for src, at in report["pairs"]]
    publish = [(at - ends[src]) * 1000 for src, at in report["pairs"] if src in ends]
    expected = len(assets) * (len(CHANGING) if args.fields == "all" else 1) * args.seconds
    return {
        "build_s": round(build_s, 1),
        "cpu_percent": round(100 * cpu / span, 1),
        # Independent of the window's length: a side whose writes take longer than a second
        # stretches its window, and on a loaded machine its CPU % is the scheduler's share.
        "cpu_ms_per_batch": round(1000 * cpu / args.seconds, 1),
        "span_s": round(span, 2),
        "write_ms": {
            "p50": round(percentile(writes_ms, 50), 1),
            "max": round(max(writes_ms), 1),
        },
        "hmi_notifications": len(total),
        "hmi_expected": expected,
        "hmi_revised_publishing_interval_ms": revised,
        "write_start_to_hmi_ms": _pcts(total),
        "write_end_to_hmi_ms": _pcts(publish),
    }


def _pcts(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values, default=float("nan")), 1),
    }


# --- the HMI client process ----------------------------------------------------------------


async def hmi(endpoint: str, idents: list[str], hmi_ms: float) -> None:
    """Subscribe to every listed node; on "go" start recording (SourceTimestamp, arrival);
    on "stop" print them as one JSON line and leave."""
    pairs: list[tuple[float, float]] = []
    recording = False

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            if recording:
                source = data.monitored_item.Value.SourceTimestamp
                if source is not None:
                    pairs.append((round(source.timestamp(), 3), time.time()))

    # asyncua's client probes the server every second with a 1 s timeout and gives the session
    # up for good on the first miss: on a loaded 2-core box (load 8-10 with other benchmarks)
    # a miss is the machine's, not the server's, and would end the measurement.
    async with Client(endpoint, timeout=60, watchdog_intervall=30) as client:
        ns = await client.get_namespace_index(NS)
        sub = await client.create_subscription(hmi_ms, Handler())
        nodes = [client.get_node(make_node_id(i, ns)) for i in idents]
        for at in range(0, len(nodes), 1000):
            handles = await sub.subscribe_data_change(nodes[at : at + 1000])
            bad = [h for h in handles if not isinstance(h, int)]
            if bad:
                raise SystemExit(f"subscribe failed: {bad[:3]}")
        print("ready", sub.parameters.RequestedPublishingInterval, flush=True)
        loop = asyncio.get_running_loop()
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command == "go":
                recording = True
                print("going", flush=True)
            elif command in ("stop", ""):
                break
        # A client that lags behind still gets what is queued for it: until 1 s of silence
        # (at most 60 s), so a backlog shows as latency, not as lost notifications.
        for _ in range(300):
            if not pairs or time.time() - pairs[-1][1] >= 1.0:
                break
            await asyncio.sleep(0.2)
        print(json.dumps({"pairs": pairs}), flush=True)


# --- main ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    assets = _assets(args.assets)
    idents_file = Path(f"/tmp/bench-opcua-server-{os.getpid()}.txt")
    await asyncio.to_thread(idents_file.write_text, "\n".join(_idents(assets, args.fields)))
    try:
        load0 = os.getloadavg()[0]
        sides = {name: await run_side(name, args, idents_file, assets) for name in args.sides}
    finally:
        await asyncio.to_thread(idents_file.unlink, missing_ok=True)
    return {
        "assets": args.assets,
        "nodes_written_per_s": args.assets * len(CHANGING),
        "hmi_fields": args.fields,
        "hmi_publishing_interval_ms": args.hmi_ms,
        "seconds": args.seconds,
        "load_average_1m_start": round(load0, 2),
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        **sides,
    }


def rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    b, f = figures["bridge"], figures.get("floor")
    n = figures["assets"]
    met = b["cpu_percent"] <= TARGET_CPU_PERCENT and b["hmi_notifications"] >= b["hmi_expected"]
    hmi = f"HMI on {figures['hmi_fields']} at {figures['hmi_publishing_interval_ms']:g} ms"
    return [
        row(
            f"HMI server, {n:,} assets x 8 nodes/s, {hmi} (CPU % of a core)",
            b["cpu_percent"],
            f["cpu_percent"] if f else None,
            "%",
            f"<= {TARGET_CPU_PERCENT:g} % of a core",
            met,
            f"CPU per batch {b['cpu_ms_per_batch']} ms"
            + (f" vs floor {f['cpu_ms_per_batch']} ms" if f else "")
            + f" (floor: bare asyncua, write_attribute_value per node); HMI got "
            f"{b['hmi_notifications']:,}/{b['hmi_expected']:,} notifications",
        ),
        row(
            f"HMI server write() of {n:,} predictions (ms, p50)",
            b["write_ms"]["p50"],
            f["write_ms"]["p50"] if f else None,
            "ms",
            "report",
            None,
            f"max {b['write_ms']['max']} ms",
        ),
        row(
            f"HMI server write start -> HMI notification, {hmi} (ms, p99)",
            b["write_start_to_hmi_ms"]["p99"],
            f["write_start_to_hmi_ms"]["p99"] if f else None,
            "ms",
            "report",
            None,
            f"p50 {b['write_start_to_hmi_ms']['p50']} ms; write end -> HMI p50 "
            f"{b['write_end_to_hmi_ms']['p50']} / p99 {b['write_end_to_hmi_ms']['p99']} ms",
        ),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--hmi-ms", type=float, default=10.0)
    parser.add_argument("--fields", choices=("value", "all"), default="value")
    parser.add_argument("--sides", default="bridge,floor", help="bridge,floor or one of them")
    parser.add_argument("--quick", action="store_true", help="100 assets, 2 s: a smoke run")
    parser.add_argument("--hmi", help=argparse.SUPPRESS)
    parser.add_argument("--idents", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hmi:
        await hmi(args.hmi, args.idents.read_text().split(), args.hmi_ms)
        return
    if args.quick:
        args.assets, args.seconds = min(args.assets, 100), min(args.seconds, 2)
    args.sides = [s for s in args.sides.split(",") if s]
    configure_logging("warning")
    figures = await measure(args)
    figures["machine"] = machine()
    if "bridge" in figures:
        figures["rows"] = rows(figures)
    for name in args.sides:
        side = figures[name]
        print(
            f"{name:6}: CPU {side['cpu_percent']} % of a core ({side['cpu_ms_per_batch']} ms per "
            f"batch, window {side['span_s']} s), write() p50 "
            f"{side['write_ms']['p50']} ms (max {side['write_ms']['max']}), HMI "
            f"{side['hmi_notifications']:,}/{side['hmi_expected']:,} notifications, write start "
            f"-> HMI {side['write_start_to_hmi_ms']}, write end -> HMI "
            f"{side['write_end_to_hmi_ms']} ms (revised publishing "
            f"{side['hmi_revised_publishing_interval_ms']} ms; built in {side['build_s']} s)"
        )
    print(
        f"{figures['assets']:,} assets, {figures['nodes_written_per_s']:,} node writes/s, load "
        f"average {figures['load_average_1m_start']} -> {figures['load_average_1m_end']}"
    )
    for r in figures.get("rows", []):
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(f"  {r['measure']}: {r['bridge']} vs {r['floor']} {r['unit']} ({ratio}) {met}")
    print(f"written {write_result('opcua_server', figures)}")


if __name__ == "__main__":
    asyncio.run(main())
