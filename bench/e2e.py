"""End-to-end figures of the spine, on loopback:

1. latency: a value written on a plant OPC UA server -> the gateway (subscription, normalize,
   window, model, prediction server) -> a client subscribed to the gateway's prediction node sees
   the new value. The model is an "echo" regressor (value = last input) so each step is visible.
2. ingest: tag updates/s the gateway normalizes from the plant simulator (the demo's 8 pumps at
   10 Hz, and a larger plant), with the gateway process's CPU time.

    python -m bench.e2e [--samples 200] [--pumps 8,200] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import onnx
from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server
from onnx import TensorProto, helper

from bench.common import free_port, percentile, write_result
from bridge.connectors.opcua.convert import make_node_id
from bridge.logging import configure_logging
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.plant.server import PlantSimulator

SOURCE_PUBLISH_MS = 10
MODEL_PERIOD_S = 0.02
HMI_PUBLISH_MS = 10

ECHO_MAPPING = """
version: 1
gateway: {{store: "sqlite:///{store}", api: {{enabled: false}}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}",
          publishing_interval_ms: {pub}}}
assets:
  a1:
    tags:
      x: {{source: plant, address: "nsu=urn:bench:plant;s=X"}}
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

PLANT_MAPPING = """
version: 1
gateway: {{store: "sqlite:///{store}", api: {{enabled: false}}}}
sources:
  plant: {{kind: opcua, endpoint: "opc.tcp://127.0.0.1:{plant}", publishing_interval_ms: 100}}
templates:
  pump:
    tags:
      vibration: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Vibration"}}
      bearing_temperature:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.BearingTemperature"
      discharge_pressure:
        source: plant
        address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.DischargePressure"
      speed: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Speed"}}
      running: {{source: plant, address: "nsu=urn:bridge:sim:plant;s=Pump{{n}}.Running"}}
assets:
{assets}
"""


def echo_model(path: Path) -> None:
    """value[i] = features[i, 0]: the smallest model that makes every input change visible."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 1])
    y = helper.make_tensor_value_info("value", TensorProto.FLOAT, ["batch"])
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [-1])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["features", "shape"], ["value"])], "echo", [x], [y], [shape]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@contextlib.asynccontextmanager
async def gateway(
    mapping: Path, start_timeout_s: float = 30, stop_timeout_s: float = 30
) -> AsyncIterator[Gateway]:
    """The gateway in this process, started and stopped within the given times."""
    stop = asyncio.Event()
    built = await build_gateway(prepare(mapping))
    task = asyncio.create_task(built.run(stop))
    try:
        await asyncio.wait_for(built.started.wait(), start_timeout_s)
        yield built
    finally:
        stop.set()
        await asyncio.wait_for(task, stop_timeout_s)


async def latency(samples: int, work: Path) -> dict[str, Any]:
    plant_port, hmi_port = free_port(), free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{plant_port}")
    ns = await server.register_namespace("urn:bench:plant")
    var = await server.nodes.objects.add_variable(make_node_id("X", ns), "X", 0.0)
    echo_model(work / "echo.onnx")
    mapping = work / "echo.yaml"
    mapping.write_text(
        ECHO_MAPPING.format(
            store=work / "echo.db",
            plant=plant_port,
            pub=SOURCE_PUBLISH_MS,
            model=work / "echo.onnx",
            period=MODEL_PERIOD_S,
            hmi=hmi_port,
        )
    )
    seen: asyncio.Queue[tuple[float, float]] = asyncio.Queue()

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            if isinstance(val, float):
                seen.put_nowait((time.perf_counter(), val))

    lat_ms: list[float] = []
    async with (
        server,
        gateway(mapping),
        Client(f"opc.tcp://127.0.0.1:{hmi_port}", timeout=5) as client,
    ):
        pns = await client.get_namespace_index("urn:bridge:predictions")
        node = client.get_node(make_node_id("Predictions.a1.echo.Value", pns))
        sub = await client.create_subscription(HMI_PUBLISH_MS, Handler())
        await sub.subscribe_data_change(node)
        await asyncio.sleep(1.0)
        for k in range(1, samples + 1):
            latency = await probe_change(server, var, seen, float(k))
            if latency is None:
                print(f"  sample {k}: not seen within 5 s")
            else:
                lat_ms.append(latency)
            await asyncio.sleep(0.05)
        await sub.delete()
    return {
        "samples": len(lat_ms),
        "lost": samples - len(lat_ms),
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p95_ms": round(percentile(lat_ms, 95), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "max_ms": round(max(lat_ms), 2),
        "source_publishing_interval_ms": SOURCE_PUBLISH_MS,
        "model_period_ms": MODEL_PERIOD_S * 1000,
        "hmi_publishing_interval_ms": HMI_PUBLISH_MS,
    }


async def ingest(pumps: int, seconds: float, work: Path) -> dict[str, Any]:
    port = free_port()
    assets = "\n".join(
        f'  pump-{i:03d}: {{template: pump, vars: {{n: "{i:02d}"}}}}' for i in range(1, pumps + 1)
    )
    mapping = work / f"plant{pumps}.yaml"
    mapping.write_text(PLANT_MAPPING.format(store=work / "p.db", plant=port, assets=assets))
    async with (
        PlantSimulator(port=port, pumps=pumps, faulty=(), update_interval_s=0.1),
        gateway(mapping) as g,
    ):
        await asyncio.sleep(3)  # subscriptions settle
        u0, c0, t0 = g.table.updates, _cpu(), time.perf_counter()
        await asyncio.sleep(seconds)
        u1, c1, t1 = g.table.updates, _cpu(), time.perf_counter()
    rate = (u1 - u0) / (t1 - t0)
    return {
        "pumps": pumps,
        "tags": pumps * 5,
        "offered_per_s": pumps * 5 * 10,
        "tag_updates_per_s": round(rate),
        "process_cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 1),
        "note": "simulator and gateway share one process and core; 'offered' counts every "
        "signal at 10 Hz, though Running rarely changes and is not re-sent",
    }


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def probe_change(
    server: Server, var: Any, seen: asyncio.Queue[tuple[float, float]], value: float
) -> float | None:
    """Write ``value`` on the plant and wait for an HMI notification carrying it: the latency
    in ms, or None when it was not seen within 5 s. ``seen`` holds (arrival time, value)."""
    while not seen.empty():
        seen.get_nowait()
    t0 = time.perf_counter()
    await server.write_attribute_value(var.nodeid, ua.DataValue(ua.Variant(value)))
    try:
        async with asyncio.timeout(5):
            while True:
                t1, got = await seen.get()
                if got == value:
                    return (t1 - t0) * 1000
    except TimeoutError:
        return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pumps", default="8,200")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    configure_logging("warning")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        figures["latency"] = await latency(args.samples, work)
        lat = figures["latency"]
        print(
            f"input change -> HMI prediction node: p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']}"
            f" ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms ({lat['samples']} samples;"
            f" source publish {SOURCE_PUBLISH_MS} ms, model period "
            f"{MODEL_PERIOD_S * 1000:g} ms, HMI publish {HMI_PUBLISH_MS} ms)"
        )
        figures["ingest"] = []
        for pumps in (int(p) for p in args.pumps.split(",")):
            row = await ingest(pumps, args.seconds, work)
            figures["ingest"].append(row)
            print(
                f"ingest, {row['tags']} tags @10 Hz: {row['tag_updates_per_s']} tag updates/s "
                f"(offered {row['offered_per_s']}/s), process CPU {row['process_cpu_percent']}%"
            )
    print(f"written {write_result('e2e', figures)}")


if __name__ == "__main__":
    asyncio.run(main())
