"""Input change -> HMI latency while the gateway ingests 10,000 tag updates/s.

Processes as deployed: ``--load-procs`` load servers (``bench.opcua_ingest --serve``, each
serving its share of the 1,100 variables, each variable written 10 times a second = 11,000
updates/s offered, so that more than 10,000/s reach the gateway: a variable written every
100 ms and sampled every 100 ms is now and then written twice between two samples, and ~2 %
of the writes never become notifications; one asyncua server process tops out near 5,000
writes/s on a 2-core machine, and the plant simulator, with its physics per pump, offers only
~1,000/s), the gateway
(``bridge run``, one OPC UA source per load server, as for several PLCs) and this one, which
hosts the probe OPC UA server (one variable, X) and the HMI client. The gateway
subscribes to the 1,100 load tags and to X; an "echo" model (value = last X) writes X to the
gateway's OPC UA server, where the HMI client sees it. The latency is write of X -> HMI
notification, on this process's monotonic clock; the gateway's ingest rate over the same window
comes from its /api/v1/health counters (the rate delivered, next to the rate offered), its CPU
and the load servers' from /proc.

    python -m bench.e2e_loaded [--samples 300] [--items 1100] [--period 0.1] [--load-procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from asyncua.client.client import Client
from asyncua.server.server import Server

from bench.common import (
    free_port,
    health,
    percentile,
    proc_cpu_s,
    process,
    read_key,
    write_result,
)
from bench.e2e import (
    HMI_PUBLISH_MS,
    MODEL_PERIOD_S,
    SOURCE_PUBLISH_MS,
    echo_model,
    probe_change,
)
from bridge.connectors.opcua.convert import make_node_id

PLANT_PUBLISH_MS = 100  # the load tags: a normal SCADA rate; the probe uses 10 ms
LOAD_NS = "urn:bench:ingest"
TAGS_PER_ASSET = 5
MAX_LOST = 5  # then the path is down, not slow: stop instead of waiting 5 s per sample

MAPPING = """
version: 1
gateway: {{store: "sqlite:///{store}", api: {{host: 127.0.0.1, port: {api}}}}}
sources:
  probe: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{probe}", publishing_interval_ms: {pub}}}
{plants}
assets:
  a1:
    tags:
      x: {{source: probe, address: "nsu=urn:bench:plant;s=X"}}
{assets}
models:
  echo:
    file: {model}
    version: "1"
    assets: [a1]
    period_s: {period}
    window_s: 5
    features: [{{tag: x, stat: last}}]
    outputs: {{value: value}}
outputs:
  hmi: {{kind: opcua-server, endpoint: "opc.tcp://127.0.0.1:{hmi}", allow_anonymous: true,
        security_policies: ["None"]}}
"""


def split_assets(items: int, procs: int) -> list[list[int]]:
    """Whole assets of ``TAGS_PER_ASSET`` load tags per load server; server k serves v0.. of
    its own share."""
    return [list(range(items // TAGS_PER_ASSET))[k::procs] for k in range(procs)]


def load_servers(
    stack: contextlib.ExitStack,
    ports: list[int],
    assets_of: list[list[int]],
    period: float,
    nice: int,
    work: Path,
) -> list[subprocess.Popen[bytes]]:
    """One ``bench.opcua_ingest --serve`` process per port, each writing its share of the load
    tags once per ``period``."""
    # Niced: on a 2-core box the load generator stands for another machine (the plant); at
    # normal priority it takes the core the gateway and the measuring process need.
    serve = ["nice", "-n", str(nice), sys.executable, "-m", "bench.opcua_ingest", "--serve"]
    return [
        stack.enter_context(
            process(
                [*serve, str(port), str(len(mine) * TAGS_PER_ASSET), str(period)],
                work / f"load{k}.log",
            )
        )
        for k, (port, mine) in enumerate(zip(ports, assets_of, strict=True))
    ]


def _updates(api_port: int, key: str) -> int | None:
    """The gateway's normalize counter (component details need a read key)."""
    try:
        body = health(api_port, key)
    except OSError:
        return None
    for component in body.get("components", []):
        if component.get("name") == "normalize":
            return int(component["counters"]["updates"])
    return None


async def _wait_for(probe: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await asyncio.to_thread(probe) is not None:
                return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"not up within {within_s} s")


async def measure(
    samples: int, items: int, period: float, nice: int, procs: int, work: Path
) -> dict[str, Any]:
    probe_port, hmi_port, api_port = (free_port() for _ in range(3))
    assets_of = split_assets(items, procs)
    plant_ports = [free_port() for _ in range(procs)]
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{probe_port}")
    ns = await server.register_namespace("urn:bench:plant")
    var = await server.nodes.objects.add_variable(make_node_id("X", ns), "X", 0.0)
    echo_model(work / "echo.onnx")
    plants = "\n".join(
        f'  plant{k}: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{port}", '
        f"publishing_interval_ms: {PLANT_PUBLISH_MS}}}"
        for k, port in enumerate(plant_ports)
    )
    assets = "\n".join(
        f"  load-{a:04d}:\n    tags:\n"
        + "\n".join(
            f"      s{j}: {{source: plant{k}, "
            f'address: "nsu={LOAD_NS};s=v{i * TAGS_PER_ASSET + j}"}}'
            for j in range(TAGS_PER_ASSET)
        )
        for k, mine in enumerate(assets_of)
        for i, a in enumerate(mine)
    )
    mapping = work / "loaded.yaml"
    mapping.write_text(
        MAPPING.format(
            store=work / "loaded.db",
            api=api_port,
            probe=probe_port,
            pub=SOURCE_PUBLISH_MS,
            plants=plants,
            assets=assets,
            model=work / "echo.onnx",
            period=MODEL_PERIOD_S,
            hmi=hmi_port,
        )
    )
    key = read_key(mapping)
    seen: asyncio.Queue[tuple[float, float]] = asyncio.Queue()

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            if isinstance(val, float):
                seen.put_nowait((time.perf_counter(), val))

    py = sys.executable
    lat_ms: list[float] = []
    async with server:
        with contextlib.ExitStack() as stack:
            loads = load_servers(stack, plant_ports, assets_of, period, nice, work)
            gw = stack.enter_context(
                process([py, "-m", "bridge", "run", str(mapping)], work / "gateway.log")
            )
            await _wait_for(lambda: _updates(api_port, key), 90)
            async with Client(f"opc.tcp://127.0.0.1:{hmi_port}", timeout=10) as client:
                pns = await client.get_namespace_index("urn:bridge:predictions")
                node = client.get_node(make_node_id("Predictions.a1.echo.Value", pns))
                sub = await client.create_subscription(HMI_PUBLISH_MS, Handler())
                await sub.subscribe_data_change(node)
                await asyncio.sleep(5.0)  # the plant subscription settles
                u0, c0, t0 = _updates(api_port, key), proc_cpu_s(gw.pid), time.perf_counter()
                l0 = [proc_cpu_s(p.pid) for p in loads]
                for k in range(1, samples + 1):
                    latency = await probe_change(server, var, seen, float(k))
                    if latency is not None:
                        lat_ms.append(latency)
                    else:
                        print(f"  sample {k}: not seen within 5 s")
                        if k - len(lat_ms) >= MAX_LOST:
                            log = (work / "gateway.log").read_text(errors="replace")
                            print("gateway log, last lines:\n" + "\n".join(log.splitlines()[-15:]))
                            raise RuntimeError(
                                f"{MAX_LOST} samples lost, the path is down"
                            ) from None
                    await asyncio.sleep(0.05)
                u1, c1, t1 = _updates(api_port, key), proc_cpu_s(gw.pid), time.perf_counter()
                l1 = [proc_cpu_s(p.pid) for p in loads]
                await sub.delete()
    rate = (u1 - u0) / (t1 - t0) if u0 is not None and u1 is not None else None
    return {
        "samples": len(lat_ms),
        "lost": samples - len(lat_ms),
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p95_ms": round(percentile(lat_ms, 95), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "max_ms": round(max(lat_ms), 2),
        "load_items": items,
        "load_server_nice": nice,
        "load_servers": procs,
        "load_servers_cpu_percent": [
            round(100 * (b - a) / (t1 - t0), 1) for a, b in zip(l0, l1, strict=True)
        ],
        "offered_updates_per_s": round(items // TAGS_PER_ASSET * TAGS_PER_ASSET / period),
        "gateway_updates_per_s": None if rate is None else round(rate),
        "gateway_cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 1),
        "probe_publishing_interval_ms": SOURCE_PUBLISH_MS,
        "plant_publishing_interval_ms": PLANT_PUBLISH_MS,
        "model_period_ms": MODEL_PERIOD_S * 1000,
        "hmi_publishing_interval_ms": HMI_PUBLISH_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--items", type=int, default=1100)
    parser.add_argument("--period", type=float, default=0.1, help="each item written per period")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the load servers")
    parser.add_argument("--load-procs", type=int, default=2, help="load server processes")
    args = parser.parse_args()
    from bridge.logging import configure_logging

    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(
            measure(args.samples, args.items, args.period, args.nice, args.load_procs, Path(tmp))
        )
    print(
        f"offered {figures['offered_updates_per_s']} updates/s by {args.load_procs} load "
        f"server(s) (CPU {figures['load_servers_cpu_percent']}%), delivered to the gateway "
        f"{figures['gateway_updates_per_s']}/s"
    )
    print(
        f"input change -> HMI node at {figures['gateway_updates_per_s']} updates/s: "
        f"p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, p99 {figures['p99_ms']} ms, "
        f"max {figures['max_ms']} ms ({figures['samples']} samples, gateway CPU "
        f"{figures['gateway_cpu_percent']}%)"
    )
    print(f"written {write_result('e2e_loaded', figures)}")


if __name__ == "__main__":
    main()
