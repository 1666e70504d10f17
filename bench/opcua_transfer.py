"""What a 5 s network blackhole costs one counter tag: subscription transferred or re-created.

A server steps one Double counter (+1, source-timestamped) every 100 ms: node-opcua
(bench/nodeopcua_server.js, installed by bench/setup_nodeopcua.sh), which implements
TransferSubscriptions, and asyncua's own server (this module's ``--serve``), which accepts the
transfer but never publishes to the new session. Each in its own process. Between it and the
gateway side a TCP relay whose blackhole swallows every byte both ways without closing anything
(a pulled cable: no RST, no FIN). The ``OpcUaSource`` (defaults: publishing 100 ms, timeout 4 s,
watchdog 10 s) runs under the runtime's ``SourceSupervisor``, which closes and reconnects it.

Per run: 3 s of values, the blackhole for ``--blackhole-s``, then until the source is back and
3 s of live values arrived. The counter says what was produced: every value strictly between
the last one received before the blackhole and the first live one produced after the reconnect
was produced while the source was down. Reported: how many of those reached the source, their
order, duplicates, the source's outage (blackhole start -> connected again), which path the
reconnect took. ``--modes transfer,recreate``: ``recreate`` switches the transfer off (as before
it existed), ``--queue-sizes``: the items' ``server_queue_size``.

    python -m bench.opcua_transfer [--servers node-opcua,asyncua --modes transfer,recreate
                                    --queue-sizes 1,100 --blackhole-s 5]

No ``--quick``: each run takes 15-20 s of real time whatever its size (the blackhole, the
reconnect), so the suite's smoke run leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import free_port, row, stop, table, write_result
from bridge.types import Quality, SourceTag, TagSample

HERE = Path(__file__).resolve().parent
NODE_SERVER = HERE / "nodeopcua_server.js"
NODE_MODULES = HERE / "nodeopcua" / "node_modules" / "node-opcua-server"
NS = "urn:bench:ingest"  # bench/nodeopcua_server.js's namespace; --serve uses the same
PERIOD_S = 0.1
WARMUP_S = 3.0
LIVE_S = 3.0
DEADLINE_S = 90.0


# --- the asyncua counter server (own process) -----------------------------------------------


async def serve(port: int) -> None:
    from asyncua import ua
    from asyncua.server.server import Server

    from bridge.connectors.opcua.convert import make_node_id

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(NS)
    var = await server.nodes.objects.add_variable(make_node_id("v0", ns), "v0", 0.0)
    async with server:
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        value, next_at = 0.0, loop.time()
        while True:
            value += 1.0
            now: Any = datetime.now(UTC)  # asyncua annotates its own DateTime type
            dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=now)
            await server.write_attribute_value(var.nodeid, dv)
            next_at += PERIOD_S
            await asyncio.sleep(max(0.0, next_at - loop.time()))


def start_server(kind: str, port: int) -> subprocess.Popen[str]:
    if kind == "node-opcua":
        command = ["node", str(NODE_SERVER), str(port), "1", str(round(PERIOD_S * 1000))]
    else:
        command = [sys.executable, "-m", "bench.opcua_transfer", "--serve", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "ready" in line:
            return proc
    stop(proc)
    raise SystemExit(f"{kind} server did not start")


# --- a relay that can go dark ---------------------------------------------------------------


class Relay:
    """127.0.0.1 TCP relay to ``port``; ``dark`` swallows bytes both ways, closing nothing."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self.dark = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._link(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _link(self, c_r: asyncio.StreamReader, c_w: asyncio.StreamWriter) -> None:
        self._writers.add(c_w)
        try:
            if self.dark:  # a new connection in the dark: accepted, never answered
                while await c_r.read(65536):
                    pass
                return
            s_r, s_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            c_w.transport.abort()
            self._writers.discard(c_w)
            return
        self._writers.add(s_w)
        pumps = [
            asyncio.ensure_future(self._pump(c_r, s_w)),
            asyncio.ensure_future(self._pump(s_r, c_w)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (s_w, c_w):
                w.close()
                self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not self.dark:
                    writer.write(data)
                    await writer.drain()


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Seen:
    samples: list[tuple[float, TagSample]] = field(default_factory=list)  # (wall received, s)

    async def deliver(self, batch: Sequence[TagSample]) -> None:
        now = time.time()
        self.samples.extend((now, s) for s in batch if s.quality is Quality.GOOD)

    def mark_bad(self, tags: Sequence[str], reason: str) -> None:
        pass

    def live_after(self, t: float) -> bool:
        return any((s.source_time or 0.0) > t for _, s in self.samples)


@contextlib.asynccontextmanager
async def running(kind: str) -> AsyncIterator[Relay]:
    port = free_port()
    proc = await asyncio.to_thread(start_server, kind, port)
    relay = Relay(port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        await asyncio.to_thread(stop, proc)


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def one(kind: str, mode: str, queue: int, blackhole_s: float) -> dict[str, Any]:
    from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings
    from bridge.runtime.sources import SourceSupervisor

    async with running(kind) as relay:
        settings = OpcUaSourceSettings.model_validate(
            {"endpoint": f"opc.tcp://127.0.0.1:{relay.port}", "server_queue_size": queue}
        )
        tag = SourceTag("count", OpcUaAddress.model_validate(f"nsu={NS};s=v0"))
        source = OpcUaSource("plant", settings, [tag])
        for session in source._sessions:  # "recreate": the path taken before transfers existed
            session.try_transfer = mode == "transfer"
        seen = Seen()
        supervisor = SourceSupervisor(source, "opcua", ["count"], seen.deliver, seen.mark_bad)
        task = asyncio.create_task(supervisor.run())
        try:
            begun = time.time()
            await _until(lambda: seen.live_after(begun), "first values")
            await asyncio.sleep(WARMUP_S)
            dark_at = time.time()
            relay.dark = True
            await asyncio.sleep(blackhole_s)
            relay.dark = False
            light_at = time.time()
            await _until(lambda: supervisor.connects >= 2, "the reconnect")
            back_at = time.time()
            await _until(lambda: seen.live_after(back_at + LIVE_S), "live values")
            counters = dict(source.counters)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
    return _figures(seen, dark_at, light_at, back_at, counters) | {
        "server": kind,
        "mode": mode,
        "server_queue_size": queue,
        "blackhole_s": round(light_at - dark_at, 2),
    }


def _figures(
    seen: Seen, dark_at: float, light_at: float, back_at: float, counters: dict[str, int]
) -> dict[str, Any]:
    values = [(at, int(s.value), s.source_time or 0.0) for at, s in seen.samples]  # type: ignore[arg-type]
    before = max(v for at, v, _ in values if at < dark_at)
    first_live = min(v for _, v, st in values if st > back_at)
    down = [v for _, v, _ in values if before < v < first_live]
    arrived = [v for at, v, _ in values if at >= dark_at]
    first_after = min((at for at, _, _ in values if at >= light_at), default=None)
    return {
        "produced_while_down": first_live - before - 1,
        "received_while_down": len(set(down)),
        "in_blackhole_received": len({v for _, v, st in values if dark_at <= st <= light_at}),
        "duplicates": len(down) - len(set(down)),
        "in_order": arrived == sorted(arrived),
        "source_down_s": round(back_at - dark_at, 2),
        "first_value_after_blackhole_s": (
            round(first_after - light_at, 2) if first_after is not None else None
        ),
        "transferred": counters.get("subscriptions_transferred", 0),
        "recreated": counters.get("subscriptions_recreated", 0),
        "republished": counters.get("republished_notifications", 0),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="node-opcua,asyncua", help="node-opcua, asyncua")
    parser.add_argument("--modes", default="transfer,recreate", help="transfer, recreate")
    parser.add_argument("--queue-sizes", default="1,100", help="server_queue_size values")
    parser.add_argument("--blackhole-s", type=float, default=5.0, help="blackhole length (s)")
    args = parser.parse_args()
    from bridge.logging import configure_logging

    configure_logging("warning")
    servers = [s for s in args.servers.split(",") if s]
    if "node-opcua" in servers and not (NODE_MODULES.exists() and shutil.which("node")):
        print("node-opcua missing (bench/setup_nodeopcua.sh): asyncua only", file=sys.stderr)
        servers = [s for s in servers if s != "node-opcua"] or ["asyncua"]
    queues = [int(q) for q in args.queue_sizes.split(",") if q]
    runs = []
    for kind in servers:
        for queue in queues:
            for mode in [m for m in args.modes.split(",") if m]:
                print(f"[{kind} queue {queue} {mode}] ...", file=sys.stderr, flush=True)
                runs.append(await one(kind, mode, queue, args.blackhole_s))
    rows = [
        row(
            f"{r['server']}, queue {r['server_queue_size']}, {r['mode']}: values produced "
            f"while down that arrived",
            r["received_while_down"],
            r["produced_while_down"],
            "values",
            "report",
            None,
            f"{r['blackhole_s']} s blackhole, source down {r['source_down_s']} s; "
            f"transferred {r['transferred']}, re-created {r['recreated']}, republished "
            f"{r['republished']}; in order {r['in_order']}, duplicates {r['duplicates']}",
        )
        for r in runs
    ]
    figures = {"blackhole_s": args.blackhole_s, "period_s": PERIOD_S, "runs": runs, "rows": rows}
    path = write_result("opcua_transfer", figures)
    print(table(rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        asyncio.run(main())
