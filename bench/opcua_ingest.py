"""OPC UA ingest: notifications/s at 10,000 monitored items, OpcUaSource vs a bare asyncua client.

One asyncua server in a child process updates all items as fast as it can. In the same run the
bare client (a Subscription with a handler that only counts, asyncua's fastest public path) and
OpcUaSource (counting samples out of ``samples()``) take turns on that server, ``--rounds`` times
each, ``--seconds`` per turn; medians are compared (target: bridge >= 80% of bare).

    .venv/bin/python -m bench.opcua_ingest [--items 10000] [--seconds 8] [--rounds 2] [--period 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

from bench.common import free_port, machine, row, write_result

NS = "urn:bench:ingest"


async def serve(port: int, items: int, period: float) -> None:
    from asyncua import ua
    from asyncua.server.server import Server
    from asyncua.ua.object_ids import ObjectIds

    from bridge.connectors.opcua.convert import make_node_id

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS)
    folder = await server.nodes.objects.add_folder(make_node_id("Bench", ns), f"{ns}:Bench")
    ids = [make_node_id(f"v{i}", ns) for i in range(items)]
    # One AddNodes call per 1,000 nodes: add_variable() one by one takes minutes for 10k.
    requests = []
    for i, nid in enumerate(ids):
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(f"v{i}")
        attrs.Value = ua.Variant(0.0, ua.VariantType.Double)
        attrs.DataType = make_node_id(ObjectIds.Double, 0)
        attrs.AccessLevel = attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nid
        item.BrowseName = ua.QualifiedName(f"v{i}", ns)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = folder.nodeid
        item.ReferenceTypeId = make_node_id(ObjectIds.HasComponent, 0)
        item.TypeDefinition = make_node_id(ObjectIds.BaseDataVariableType, 0)
        item.NodeAttributes = attrs
        requests.append(item)
    for start in range(0, items, 1000):
        await server.iserver.isession.add_nodes(requests[start : start + 1000])
    async with server:
        print("ready", flush=True)
        value = 0.0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            value += 1.0
            dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double))
            for start in range(0, items, 500):
                for nid in ids[start : start + 500]:
                    await server.write_attribute_value(nid, dv)
                # yield between chunks so the server still answers Publish requests
                await asyncio.sleep(0)
            # A fixed offered load: an asyncua server writing flat out starves its own
            # publishing and session handling, which would measure the server, not the clients.
            await asyncio.sleep(max(0.0, period - (loop.time() - started)))


async def bare(endpoint: str, items: int, seconds: float) -> float:
    from asyncua.client.client import Client

    from bridge.connectors.opcua.convert import make_node_id

    count = 0

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            nonlocal count
            count += 1

    t_start = time.perf_counter()
    async with Client(endpoint, timeout=60) as client:
        ns = await client.get_namespace_index(NS)
        nodes = [client.get_node(make_node_id(f"v{i}", ns)) for i in range(items)]
        sub = await client.create_subscription(100, Handler())
        for start in range(0, items, 1000):
            await sub.subscribe_data_change(nodes[start : start + 1000], queuesize=1)
        print(f"bare subscribed in {time.perf_counter() - t_start:.1f}s", file=sys.stderr)
        await asyncio.sleep(1.0)  # let the initial burst pass
        count, t0 = 0, time.perf_counter()
        await asyncio.sleep(seconds)
        rate = count / (time.perf_counter() - t0)
        await sub.delete()
    return rate


async def ours(endpoint: str, items: int, seconds: float) -> tuple[float, int]:
    from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
    from bridge.types import SourceTag, TagSample

    tags = [
        SourceTag(f"v{i}", OpcUaAddress.model_validate(f"nsu={NS};s=v{i}")) for i in range(items)
    ]
    settings = OpcUaSourceSettings.model_validate(
        {"endpoint": endpoint, "timeout_s": 60, "publishing_interval_ms": 100}
    )
    source = OpcUaSource("bench", settings, tags)
    await source.connect()
    count = 0
    try:
        warm_until = time.perf_counter() + 1.0
        # An async generator (closed below, before the source); the protocol says iterator.
        stream = cast(AsyncGenerator[Sequence[TagSample], None], source.samples())
        async for _ in stream:
            if time.perf_counter() >= warm_until:
                break
        t0 = time.perf_counter()
        end = t0 + seconds
        async for batch in stream:
            count += len(batch)
            if time.perf_counter() >= end:
                break
        rate = count / (time.perf_counter() - t0)
        await stream.aclose()
    finally:
        await source.close()
    return rate, source.dropped


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--period", type=float, default=0.5, help="Server updates every item once per period."
    )
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "bench.opcua_ingest", "--serve", str(port)]
    command += [str(args.items), str(args.period)]
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        command,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 900)
        print(f"server ready: {line.strip()!r}", file=sys.stderr)
        if "ready" not in line:
            raise SystemExit("server did not start")
        endpoint = f"opc.tcp://127.0.0.1:{port}"
        bare_rates: list[float] = []
        our_rates: list[float] = []
        dropped = 0
        for _ in range(args.rounds):
            bare_rates.append(await bare(endpoint, args.items, args.seconds))
            rate, drops = await ours(endpoint, args.items, args.seconds)
            our_rates.append(rate)
            dropped += drops
    finally:
        proc.terminate()
        proc.wait(10)
    b, o = statistics.median(bare_rates), statistics.median(our_rates)
    figures = {
        "items": args.items,
        "seconds_per_turn": args.seconds,
        "rounds": args.rounds,
        "offered_notifications_per_s": round(args.items / args.period),
        "bare_asyncua_notifications_per_s": [round(r) for r in bare_rates],
        "bridge_samples_per_s": [round(r) for r in our_rates],
        "bare_median": round(b),
        "bridge_median": round(o),
        "bridge_vs_bare": round(o / b, 3) if b else None,
        "bridge_dropped_notifications": dropped,
        "machine": machine(),
        "rows": [
            row(
                f"OPC UA ingest, {args.items:,} monitored items (notifications/s)",
                round(o),
                round(b),
                "notifications/s",
                ">= 80 % of bare asyncua",
                bool(b) and o / b >= 0.8,
                f"medians of {args.rounds} alternating turns of {args.seconds:g} s; "
                f"{dropped} dropped",
            )
        ],
    }
    path = write_result("opcua_ingest", figures)
    print(f"items {args.items}: bare asyncua {b:,.0f}/s, bridge OpcUaSource {o:,.0f}/s")
    print(f"bridge / bare = {o / b:.1%} (target >= 80%), dropped {dropped}; wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        asyncio.run(serve(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    else:
        asyncio.run(main())
