"""Start-up of the gateway's OPC UA server at many assets, and what one ``PredictionType``
instance costs built the server's way against asyncua's ``instantiate``.

start: ``PredictionServer.start()`` (None policy, anonymous) with ``--slots`` classifier slots
(one asset each, one model), feedback methods on a real SQLite store as under ``bridge run``
(``--full``: also the alarms and the history on that store); wall time and this process's CPU
time from ``start()`` to its return (CPU time is steadier on a shared machine: the build is
one thread's work), medians of ``--runs`` servers built one after the other in this process.

instances (same run): a bare asyncua ``Server`` with ``PredictionType``, then ``--sample``
prediction objects, each in its own asset folder: built as the server builds them (the AddNodes
items of ``predictiontype.instance_nodes``, one call per object) and with asyncua's
``instantiate`` of the type (which reads the type back node by node); CPU ms per object.

    python -m bench.opcua_start [--slots 2000 --runs 3 --sample 200 --full] [--part start]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, write_result
from bridge.logging import configure_logging
from bridge.types import PredictionSlot, SinkContext

NS = "urn:bench:start"
MODEL = "m"


def _slots(n: int) -> tuple[PredictionSlot, ...]:
    return tuple(
        PredictionSlot(f"a{i:05d}", MODEL, "1.0.0", "a" * 64, labels=("ok", "fault"))
        for i in range(n)
    )


def _context(store: Any, slots: tuple[PredictionSlot, ...], full: bool) -> SinkContext:
    from bridge.runtime.insight_wiring import StoreFeedback
    from bridge.store.labels import LabelRepository
    from bridge.store.lineage import LineageRepository

    feedback = StoreFeedback(LabelRepository(store, "bench"), LineageRepository(store))
    if not full:
        return SinkContext("bench", slots, feedback=feedback)
    from bridge.runtime.alarms import StoreAlarms
    from bridge.store.alerts import AlertRepository
    from bridge.store.hmihistory import StoreHmiHistory
    from bridge.store.outbox import OutboxRepository

    alerts = AlertRepository(store, 5.0, gateway="bench")
    return SinkContext(
        "bench",
        slots,
        feedback=feedback,
        history=StoreHmiHistory(store, 5.0),
        alarms=StoreAlarms(alerts, OutboxRepository(store)),
    )


async def measure_start(slots: int, runs: int, full: bool) -> dict[str, Any]:
    from bench.common import free_port
    from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
    from bridge.store.db import open_store

    times: list[float] = []
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            for _ in range(runs):
                settings = OpcUaServerSettings(
                    endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
                    namespace=NS,
                    allow_anonymous=True,
                    security_policies=["None"],
                )
                sink = PredictionServer("hmi", settings, _context(store, _slots(slots), full))
                began, began_cpu = time.perf_counter(), time.process_time()
                await sink.start()
                times.append(time.perf_counter() - began)
                cpu.append(time.process_time() - began_cpu)
                await sink.close()
        finally:
            store.dispose()
    return {
        "slots": slots,
        "services": "feedback, history, alarms" if full else "feedback",
        "start_s": [round(t, 2) for t in times],
        "start_s_median": round(statistics.median(times), 2),
        "start_cpu_s": [round(t, 2) for t in cpu],
        "start_cpu_s_median": round(statistics.median(cpu), 2),
    }


async def measure_instances(sample: int) -> dict[str, Any]:
    from asyncua import ua
    from asyncua.common.instantiate_util import instantiate
    from asyncua.server.server import Server

    from bridge.connectors.opcua.convert import make_node_id
    from bridge.connectors.opcua.predictiontype import (
        TYPE_ID,
        add_nodes,
        add_prediction_type,
        folder_node,
        instance_nodes,
    )

    server = Server()
    await server.init()
    try:
        ns = await server.register_namespace(NS)
        await add_prediction_type(server, ns, NS)
        root = make_node_id("Predictions", ns, ua.NodeIdType.String)
        await server.nodes.objects.add_folder(root, f"{ns}:Predictions")
        type_node = server.get_node(make_node_id(TYPE_ID, ns, ua.NodeIdType.String))

        async def direct(i: int) -> None:
            asset = f"d{i:05d}"
            folder = make_node_id(f"Predictions.{asset}", ns, ua.NodeIdType.String)
            items = [folder_node(root, folder, asset)]
            ident = f"Predictions.{asset}.{MODEL}"
            items += instance_nodes(folder, ident, ns, MODEL, ua.VariantType.String, "", NS)
            await add_nodes(server, items)

        async def instantiated(i: int) -> None:
            asset = f"i{i:05d}"
            folder = make_node_id(f"Predictions.{asset}", ns, ua.NodeIdType.String)
            await add_nodes(server, [folder_node(root, folder, asset)])
            await instantiate(
                server.get_node(folder),
                type_node,
                nodeid=make_node_id(f"Predictions.{asset}.{MODEL}", ns, ua.NodeIdType.String),
                bname=ua.QualifiedName(MODEL, ns),
                instantiate_optional=False,
            )

        figures: dict[str, Any] = {"sample": sample}
        # One of each in turn, so both meet a Predictions folder of the same sizes. CPU time:
        # the build is this thread's work, and a shared machine's wall time is noise.
        spent = {"direct": 0.0, "instantiate": 0.0}
        for i in range(sample):
            for name, build in (("direct", direct), ("instantiate", instantiated)):
                began = time.process_time()
                await build(i)
                spent[name] += time.process_time() - began
        for name, total in spent.items():
            figures[f"{name}_ms_per_object"] = round(total / sample * 1000, 2)
        figures["instantiate_vs_direct"] = round(spent["instantiate"] / spent["direct"], 1)
        return figures
    finally:
        await server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2000, help="asset+model slots at start")
    parser.add_argument("--runs", type=int, default=3, help="servers started, median reported")
    parser.add_argument("--sample", type=int, default=200, help="objects built each way")
    parser.add_argument("--full", action="store_true", help="alarms and history too")
    parser.add_argument("--part", choices=("all", "start", "instances"), default="all")
    parser.add_argument("--quick", action="store_true", help="200 slots, 1 run, 50 objects")
    args = parser.parse_args()
    if args.quick:
        args.slots, args.runs, args.sample = min(args.slots, 200), 1, min(args.sample, 50)
    configure_logging("warning")
    figures: dict[str, Any] = {}
    if args.part in ("all", "start"):
        figures["start"] = start = await measure_start(args.slots, args.runs, args.full)
        print(
            f"start: {start['slots']:,} slots ({start['services']}): "
            f"{start['start_s_median']} s, CPU {start['start_cpu_s_median']} s (runs "
            f"{start['start_s']}, CPU {start['start_cpu_s']})"
        )
    if args.part in ("all", "instances"):
        figures["instances"] = inst = await measure_instances(args.sample)
        print(
            f"one PredictionType object: {inst['direct_ms_per_object']} ms CPU as the server "
            f"builds it, {inst['instantiate_ms_per_object']} ms with asyncua's instantiate "
            f"({inst['instantiate_vs_direct']}x; {inst['sample']} each)"
        )
    figures["machine"] = machine()
    print(f"written {write_result('opcua_start', figures)}")


if __name__ == "__main__":
    asyncio.run(main())
