"""Alarm event latency on the gateway's HMI server: from a prediction batch handed to
``PredictionServer.write`` to an event-subscribed HMI client receiving the alarm's event.

bridge: the real ``PredictionServer`` (None policy, anonymous) with the gateway's alarm service
(``StoreAlarms`` over a SQLite file) and the gateway's alert writer (``AlertSink``) handed the
same predictions first, as the fan-out does; ``--assets`` classifiers (labels healthy/fault,
hold 1). Every ``--period-s`` one batch with a prediction of every asset is written; in each
a ``--fault-share`` of the assets turns to the fault (an alarm raised) and the previous
batch's ones back to normal (the alarm inactive), a different share each time.

floor (same run, same process, one after the other): a bare asyncua ``Server`` whose
``EventGenerator`` (OffNormalAlarmType, on the Server object) triggers the same number of events
per batch with ``await trigger()``, asyncua's documented way to raise an event.

Both sides: one HMI client in its own process, one subscription (``--hmi-ms``) with an event item
on the Server object selecting EventId and Time. Latency: arrival on the client's wall clock
minus the batch's write start (the events' Time is the predictions' timestamp, taken at the
write start; this machine's one clock). Also the time ``write()`` holds its caller per batch
and this process's CPU (user + system; 100 % = one core).

    python -m bench.opcua_alarms [--assets 2000 --batches 20 --fault-share 0.05] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from bench.common import free_port, machine, percentile, row, stop, write_result
from bridge.connectors.opcua import OpcUaServerSettings, PredictionServer
from bridge.connectors.opcua.convert import make_node_id
from bridge.logging import configure_logging
from bridge.runtime.alarms import StoreAlarms
from bridge.runtime.alertsink import AlertSink
from bridge.store.alerts import AlertRepository
from bridge.store.db import open_store
from bridge.store.outbox import OutboxRepository
from bridge.types import AlarmPolicy, Explanation, Prediction, PredictionSlot, Quality, SinkContext

NS = "urn:bench:alarms"
MODEL = "health"
LABELS = ("healthy", "fault")
OFF_NORMAL = ObjectIds.OffNormalAlarmType
# A batch: (write start as epoch seconds, batch number) -> the alarm events it raised/cleared.
Writer = Callable[[float, int], Awaitable[int]]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _assets(n: int) -> list[str]:
    return [f"a{i:05d}" for i in range(n)]


def _faulty(k: int, n: int, stride: int) -> set[int]:
    """The assets in the fault in batch ``k`` (none before the first)."""
    return set() if k <= 0 else {i for i in range(n) if i % stride == k % stride}


# --- the two servers -----------------------------------------------------------------------


async def bridge_server(
    assets: Sequence[str], port: int, db: Path, stride: int
) -> tuple[PredictionServer, Writer, Callable[[], Awaitable[None]]]:
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{port}",
        namespace=NS,
        allow_anonymous=True,
        security_policies=["None"],
    )
    slots = tuple(
        PredictionSlot(a, MODEL, "1.0.0", "a" * 64, LABELS, alarm=AlarmPolicy(700, 1, 1))
        for a in assets
    )
    store = open_store(f"sqlite:///{db}")
    repo = AlertRepository(store, gateway="bench")
    sink = AlertSink(repo, slots)
    alarms = StoreAlarms(repo, OutboxRepository(store))
    server = PredictionServer("hmi", settings, SinkContext("bench", slots, alarms=alarms))
    await sink.start()
    await server.start()

    async def write(stamp: float, k: int) -> int:
        now, before = _faulty(k, len(assets), stride), _faulty(k - 1, len(assets), stride)
        batch = [
            Prediction(
                id=f"{a}-{k}",
                seq=k,
                asset=a,
                model=MODEL,
                version="1.0.0",
                sha256="a" * 64,
                value=LABELS[1] if i in now else LABELS[0],
                score=0.9,
                quality=Quality.GOOD,
                timestamp=stamp,
                input_age_s=0.01,
                explanation=Explanation("vibration high", ()) if i in now else None,
            )
            for i, a in enumerate(assets)
        ]
        await sink.write(batch)
        await server.write(batch)
        return len(now) + len(before - now)

    async def close() -> None:
        await server.close()
        await sink.close()
        store.dispose()

    return server, write, close


async def floor_server(
    assets: Sequence[str], port: int, stride: int
) -> tuple[Server, Writer, Callable[[], Awaitable[None]]]:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    await server.register_namespace(NS)
    generator = await server.get_event_generator(OFF_NORMAL, ObjectIds.Server)
    await server.start()
    n = len(assets)

    async def write(stamp: float, k: int) -> int:
        now, before = _faulty(k, n, stride), _faulty(k - 1, n, stride)
        when = datetime.fromtimestamp(stamp, UTC)
        count = 0
        for i in sorted(now | before):
            generator.event.Message = ua.LocalizedText(f"{assets[i]}: {k}")
            generator.event.Severity = 700
            await generator.trigger(when)
            count += 1
        return count

    async def close() -> None:
        await server.stop()

    return server, write, close


# --- one side: server in this process, HMI in its own ------------------------------------


async def run_side(name: str, args: argparse.Namespace, assets: Sequence[str]) -> dict[str, Any]:
    port = free_port()
    stride = max(1, round(1 / args.fault_share))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-alarms-") as tmp:
        if name == "bridge":
            _, write, close = await bridge_server(assets, port, Path(tmp) / "bench.db", stride)
        else:
            _, write, close = await floor_server(assets, port, stride)
        build_s = time.perf_counter() - started
        command = [sys.executable, "-m", "bench.opcua_alarms", "--hmi"]
        command += [f"opc.tcp://127.0.0.1:{port}", "--hmi-ms", str(args.hmi_ms)]
        hmi = subprocess.Popen(  # noqa: ASYNC220
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert hmi.stdin is not None and hmi.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(hmi.stdout.readline), 120)
            if not line.startswith("ready"):
                raise SystemExit(f"{name}: the HMI client did not subscribe: {line!r}")
            await write(round(time.time(), 3), 0)  # warm-up: all normal, nothing raised
            await asyncio.sleep(1.0)
            gc.collect()
            gc.freeze()  # as the gateway does after start-up
            hmi.stdin.write("go\n")
            hmi.stdin.flush()
            line = await asyncio.wait_for(asyncio.to_thread(hmi.stdout.readline), 60)
            assert line.startswith("going"), line
            writes_ms: list[float] = []
            expected = 0
            cpu0, t0 = _cpu(), time.perf_counter()
            for k in range(1, args.batches + 1):
                await asyncio.sleep(max(0.0, t0 + (k - 1) * args.period_s - time.perf_counter()))
                stamp = round(time.time(), 3)  # the events' Time: matched by the HMI to ms
                w0 = time.perf_counter()
                expected += await write(stamp, k)
                writes_ms.append((time.perf_counter() - w0) * 1000)
            await asyncio.sleep(max(0.0, t0 + args.batches * args.period_s - time.perf_counter()))
            span = time.perf_counter() - t0
            cpu = _cpu() - cpu0
            hmi.stdin.write("stop\n")
            hmi.stdin.flush()
            report = json.loads(await asyncio.wait_for(asyncio.to_thread(hmi.stdout.readline), 120))
            await asyncio.to_thread(hmi.wait, 30)  # it disconnects its session itself
        finally:
            stop(hmi, 10)
            gc.unfreeze()
            await close()
    raised = [(at - src) * 1000 for kind, src, at in report["events"] if kind == "raised"]
    every = [(at - src) * 1000 for _, src, at in report["events"]]
    return {
        "build_s": round(build_s, 1),
        "cpu_percent": round(100 * cpu / span, 1),
        "cpu_ms_per_batch": round(1000 * cpu / args.batches, 1),
        "span_s": round(span, 2),
        "write_ms": {"p50": round(percentile(writes_ms, 50), 1), "max": round(max(writes_ms), 1)},
        "events": len(every),
        "events_expected": expected,
        "raised_events": len(raised),
        "write_start_to_event_ms": _pcts(every),
        "write_start_to_raised_event_ms": _pcts(raised) if name == "bridge" else None,
    }


def _pcts(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values, default=float("nan")), 1),
    }


# --- the HMI client process ----------------------------------------------------------------


async def hmi(endpoint: str, hmi_ms: float) -> None:
    """An event item on the Server object; on "go" record (kind, event Time, arrival) of
    every OffNormalAlarm event; on "stop" print them as one JSON line and leave."""
    events: list[tuple[str, float, float]] = []
    recording = False

    class Handler:
        def event_notification(self, event: Any) -> None:
            if recording and event.Time is not None:
                raw = event.EventId or b""
                kind = raw.rsplit(b":", 1)[-1].decode(errors="replace") if b":" in raw else "-"
                events.append((kind, round(event.Time.timestamp(), 3), time.time()))

    # As bench.opcua_server: a generous watchdog, so a loaded box does not end the session.
    async with Client(endpoint, timeout=60, watchdog_intervall=30) as client:
        sub = await client.create_subscription(hmi_ms, Handler())
        evfilter = ua.EventFilter()
        for name in ("EventId", "Time"):
            op = ua.SimpleAttributeOperand()
            op.TypeDefinitionId = make_node_id(ObjectIds.BaseEventType, 0)
            op.BrowsePath = [ua.QualifiedName(name, 0)]
            op.AttributeId = AttributeIds.Value
            evfilter.SelectClauses.append(op)
        await sub.subscribe_events(client.nodes.server, evfilter=evfilter, queuesize=100_000)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command == "go":
                recording = True
                print("going", flush=True)
            elif command in ("stop", ""):
                break
        # Until 1 s of silence (at most 60 s): a backlog shows as latency, not as loss.
        for _ in range(300):
            if not events or time.time() - events[-1][2] >= 1.0:
                break
            await asyncio.sleep(0.2)
        print(json.dumps({"events": events}), flush=True)


# --- main ----------------------------------------------------------------------------------


def rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    b, f = figures["bridge"], figures.get("floor")
    n = figures["assets"]
    share = figures["fault_share"]
    return [
        row(
            f"HMI alarm event latency, {n:,} assets, {share:.0%} turning to a fault per batch "
            "(write start -> HMI event, ms, p99)",
            b["write_start_to_raised_event_ms"]["p99"],
            f["write_start_to_event_ms"]["p99"] if f else None,
            "ms",
            "report",
            None,
            f"p50 {b['write_start_to_raised_event_ms']['p50']} ms; HMI got "
            f"{b['events']:,}/{b['events_expected']:,} events (raised and inactive); floor: "
            "asyncua EventGenerator.trigger per event",
        ),
        row(
            f"HMI server write() of {n:,} predictions with alarms (ms, p50)",
            b["write_ms"]["p50"],
            None,
            "ms",
            "report",
            None,
            f"max {b['write_ms']['max']} ms; CPU {b['cpu_percent']} % of a core",
        ),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--period-s", type=float, default=1.0)
    parser.add_argument("--fault-share", type=float, default=0.05)
    parser.add_argument("--hmi-ms", type=float, default=10.0)
    parser.add_argument("--sides", default="bridge,floor", help="bridge,floor or one of them")
    parser.add_argument("--quick", action="store_true", help="100 assets, 3 batches: a smoke run")
    parser.add_argument("--hmi", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hmi:
        await hmi(args.hmi, args.hmi_ms)
        return
    if args.quick:
        args.assets, args.batches = min(args.assets, 100), min(args.batches, 3)
    configure_logging("error")  # not one "alert_raised" line per alarm
    assets = _assets(args.assets)
    figures: dict[str, Any] = {
        "assets": args.assets,
        "batches": args.batches,
        "period_s": args.period_s,
        "fault_share": args.fault_share,
        "hmi_publishing_interval_ms": args.hmi_ms,
    }
    for name in [s for s in args.sides.split(",") if s]:
        figures[name] = await run_side(name, args, assets)
        side = figures[name]
        print(
            f"{name:6}: events {side['events']:,}/{side['events_expected']:,}, write start -> "
            f"HMI event {side['write_start_to_event_ms']} ms"
            + (
                f" (raised: {side['write_start_to_raised_event_ms']})"
                if side["write_start_to_raised_event_ms"]
                else ""
            )
            + f", write() p50 {side['write_ms']['p50']} ms (max {side['write_ms']['max']}), CPU "
            f"{side['cpu_percent']} % of a core, built in {side['build_s']} s"
        )
    figures["machine"] = machine()
    if "bridge" in figures:
        figures["rows"] = rows(figures)
    print(f"written {write_result('opcua_alarms', figures)}")


if __name__ == "__main__":
    asyncio.run(main())
