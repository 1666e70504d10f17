"""OPC UA ingest over several sessions and worker processes, against a node-opcua server.

One node-opcua server (bench/nodeopcua_server.js, installed by bench/setup_nodeopcua.sh; an
asyncua load server from bench.opcua_ingest when node-opcua is missing) changes ``--items``
Double variables every ``--period`` s. In the same run, one after the other on that server:

- one bare asyncua session (a Subscription with a counting handler, asyncua's fastest public
  path) in its own process;
- N bare sessions (N = the gateway's ``--sessions``) laid out like the gateway: spread over
  ``--workers`` processes (one process when workers is 0);
- the gateway's source (``OpcUaSource``/``OpcUaWorkerSource`` with those sessions/workers)
  under the runtime's ``SourceSupervisor``, its batches applied to a ``TagTable`` of a real
  mapping by a normalize task as in the gateway: updates/s counted in the tag table.

Rows: gateway vs one bare session (target >= 1.5x) and vs N bare sessions (target >= 90 %).
CPU seconds per second of the server and of the client processes are in the JSON.

    .venv/bin/python -m bench.opcua_sessions [--items 10000 --period 0.1 --seconds 15]
        [--sessions 4 --workers 2 --rounds 2] [--quick] [--transport]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import free_port, machine, proc_cpu_s, row, write_result

NS = "urn:bench:ingest"
HERE = Path(__file__).resolve().parent
NODE_SERVER = HERE / "nodeopcua_server.js"
NODE_MODULES = HERE / "nodeopcua" / "node_modules" / "node-opcua-server"
WARM_S = 3.0


# --- bare asyncua sessions (run in their own processes: ``--bare``) --------------------------


async def bare(endpoint: str, shares: Sequence[tuple[int, int]], seconds: float) -> dict[str, Any]:
    """One asyncua session per (start, stop) share, all in this process; notifications/s."""
    from asyncua import ua
    from asyncua.client.client import Client

    from bridge.connectors.opcua.convert import make_node_id

    count = 0

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            nonlocal count
            count += 1

    clients = []
    for start, stop in shares:
        # asyncua's liveness probe reads the server state with a watchdog_intervall timeout
        # (1 s by default); on a loaded box a flooded server answers later and the session
        # drops before any figure. 10 s here, and for the gateway (watchdog_s: 100).
        client = Client(endpoint, timeout=60, watchdog_intervall=10.0)
        await client.connect()
        clients.append(client)
        ns = await client.get_namespace_index(NS)
        nodes = [client.get_node(make_node_id(f"v{i}", ns)) for i in range(start, stop)]
        sub = await client.create_subscription(100, Handler())
        for at in range(0, len(nodes), 1000):
            # sampling 0 as the gateway's default: asyncua's own default (50 ms) makes a
            # node-opcua server sample every item on a timer, work the gateway's items do not
            # cost it (measured: the bare clients got half the gateway's rate from it)
            await sub.subscribe_data_change(
                nodes[at : at + 1000], queuesize=1, sampling_interval=ua.Double(0.0)
            )
    await asyncio.sleep(WARM_S)  # let the initial burst pass
    cpu0 = proc_cpu_s(os.getpid())
    count, t0 = 0, time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - t0
    result = {"rate": count / elapsed, "cpu": (proc_cpu_s(os.getpid()) - cpu0) / elapsed}
    for client in clients:
        try:
            await asyncio.wait_for(client.disconnect(), 10)
        except Exception:
            client.disconnect_socket()
    return result


def run_bare(
    endpoint: str, layout: Sequence[Sequence[tuple[int, int]]], seconds: float
) -> dict[str, Any]:
    """Bare sessions in ``len(layout)`` processes side by side; their rates and CPU summed."""
    command = [sys.executable, "-m", "bench.opcua_sessions", "--bare", endpoint]
    procs = [
        subprocess.Popen(
            [*command, json.dumps(shares), "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for shares in layout
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 300)
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "rate": sum(r["rate"] for r in results),
        "cpu": sum(r["cpu"] for r in results),
        "per_process": [round(r["rate"]) for r in results],
    }


# --- the gateway's source --------------------------------------------------------------------


def mapping_text(endpoint: str, items: int, sessions: int, workers: int, store: str) -> str:
    lines = [
        "version: 1",
        f'gateway: {{id: bench, store: "{store}", api: {{enabled: false}}}}',
        "sources:",
        f'  plant: {{kind: opcua, endpoint: "{endpoint}", publishing_interval_ms: 100, '
        f"timeout_s: 60, watchdog_s: 100, sessions: {sessions}, workers: {workers}}}",
        "assets:",
    ]
    per_asset = 10
    for a in range(-(-items // per_asset)):
        tags = ", ".join(
            f't{k}: {{source: plant, address: "nsu={NS};s=v{a * per_asset + k}"}}'
            for k in range(per_asset)
            if a * per_asset + k < items
        )
        lines.append(f"  a{a}: {{tags: {{{tags}}}}}")
    return "\n".join(lines) + "\n"


async def gateway(
    endpoint: str, items: int, sessions: int, workers: int, seconds: float
) -> dict[str, Any]:
    from bridge import plugins
    from bridge.config.loader import load_mapping
    from bridge.runtime.sources import SourceSupervisor
    from bridge.runtime.tagtable import TagTable
    from bridge.types import SourceTag, TagSample

    plugins.load_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mapping.yaml"
        store = f"sqlite:///{tmp}/b.db"
        path.write_text(mapping_text(endpoint, items, sessions, workers, store))
        mapping = load_mapping(path)
    table = TagTable(mapping)
    src = mapping.sources["plant"]
    tags = mapping.tags_of_source("plant")
    source = plugins.source_kinds()["opcua"].factory(
        "plant", src.settings, [SourceTag(t.id, t.address) for t in tags]
    )
    queue: asyncio.Queue[Sequence[TagSample]] = asyncio.Queue(1024)  # as the gateway's
    supervisor = SourceSupervisor(source, "opcua", [t.id for t in tags], queue.put, table.mark_bad)

    async def normalize() -> None:
        while True:
            table.apply(await queue.get())

    tasks = [asyncio.create_task(supervisor.run()), asyncio.create_task(normalize())]
    try:
        for _ in range(3000):  # connected and every item seen once, within 300 s
            if supervisor.state == "connected" and table.updates >= items:
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit(f"gateway: no full first read in 300 s ({supervisor.detail})")
        await asyncio.sleep(WARM_S)
        pids = [os.getpid(), *getattr(source, "pids", [])]
        cpu0 = sum(cpu_s(p) for p in pids)
        u0, t0 = table.updates, time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        rate = (table.updates - u0) / elapsed
        cpu = (sum(cpu_s(p) for p in pids) - cpu0) / elapsed
        health = supervisor.health()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "rate": rate,
        "cpu": cpu,
        "state": health.state,
        "counters": dict(health.counters),
        "dropped": getattr(source, "dropped", None),
    }


def cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``; 0 once it is gone (a worker the supervisor replaced)."""
    try:
        return proc_cpu_s(pid)
    except FileNotFoundError:
        return 0.0


# --- the plant server ------------------------------------------------------------------------


def start_server(port: int, items: int, period: float) -> tuple[subprocess.Popen[str], str]:
    if NODE_MODULES.exists() and shutil.which("node"):
        command = ["node", str(NODE_SERVER), str(port), str(items), str(round(period * 1000))]
        kind = "node-opcua"
    else:
        print("node-opcua missing (bench/setup_nodeopcua.sh): asyncua load server", file=sys.stderr)
        command = [sys.executable, "-m", "bench.opcua_ingest", "--serve", str(port)]
        command += [str(items), str(period)]
        kind = "asyncua"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "ready" in line:
            return proc, kind
    proc.kill()
    raise SystemExit(f"{kind} server did not start")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def split(items: int, parts: int) -> list[tuple[int, int]]:
    from bridge.connectors.opcua.source import shares

    return [(r.start, r.stop) for r in shares(items, parts)]


def layout_of(items: int, sessions: int, workers: int) -> list[list[tuple[int, int]]]:
    """The gateway's sessions grouped by process, as OpcUaWorkerSource plans them."""
    share = split(items, sessions)
    groups = split(sessions, max(1, workers))
    return [share[a:b] for a, b in groups]


# --- pipe vs shared memory -------------------------------------------------------------------


def transport(samples: int = 5000, rounds: int = 200) -> dict[str, Any]:
    """CPU ms of this process per frame of ``samples`` (CPU, not wall time: the box is shared
    and wall times swing 3x): pack, unpack, a pipe crossing, a shared-memory copy."""
    import socket
    import threading
    from multiprocessing import shared_memory
    from multiprocessing.connection import Connection

    from bridge.connectors.opcua._packed import pack, unpack
    from bridge.types import Quality, TagSample

    now = time.time()
    names = [f"a{i // 10}.t{i % 10}" for i in range(samples)]
    position = {n: i for i, n in enumerate(names)}
    batch = [TagSample(n, float(i), Quality.GOOD, now, now, now) for i, n in enumerate(names)]

    def per(fn: Any) -> float:
        t0 = time.process_time()
        for _ in range(rounds):
            fn()
        return (time.process_time() - t0) / rounds * 1000

    frame = pack(batch, position)
    a, b = socket.socketpair()
    left, right = Connection(a.detach()), Connection(b.detach())

    def echo() -> None:
        for _ in range(rounds):
            right.send_bytes(right.recv_bytes())

    thread = threading.Thread(target=echo)
    thread.start()

    def there_and_back() -> None:
        left.send_bytes(frame)
        left.recv_bytes()

    pipe_round = per(there_and_back)
    thread.join()
    left.close()
    right.close()
    shm = shared_memory.SharedMemory(create=True, size=len(frame))
    try:
        view = shm.buf
        assert view is not None

        def copy() -> None:
            view[: len(frame)] = frame
            bytes(view[: len(frame)])

        shm_copy = per(copy)
    finally:
        shm.close()
        shm.unlink()
    return {
        "samples_per_frame": samples,
        "frame_bytes": len(frame),
        "pack_ms": round(per(lambda: pack(batch, position)), 3),
        "unpack_ms": round(per(lambda: unpack(frame, names)), 3),
        # a round trip crosses the pipe twice; both ends are threads of this process, so
        # their CPU is counted (send and receive), as a worker and the gateway would spend it
        "pipe_one_way_ms": round(pipe_round / 2, 3),
        "shared_memory_write_read_ms": round(shm_copy, 3),
    }


# --- main ------------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--period", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="turns per side (medians)")
    parser.add_argument("--quick", action="store_true", help="2,000 items, 4 s, 1 round")
    parser.add_argument("--transport", action="store_true", help="pipe vs shared memory only")
    args = parser.parse_args()
    if args.transport:
        moves = transport()
        print(json.dumps(moves, indent=2))
        write_result("opcua_transport", moves)
        return
    if args.quick:
        args.items, args.seconds, args.rounds = 2000, 4.0, 1
    port = free_port()
    load0 = os.getloadavg()[0]
    server, kind = start_server(port, args.items, args.period)
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    turns: dict[str, list[dict[str, Any]]] = {"bare_1": [], "bare_n": [], "gateway": []}
    layout = layout_of(args.items, args.sessions, args.workers)
    try:

        def server_cpu() -> float:
            return proc_cpu_s(server.pid)

        async def turn(name: str, job: Any) -> None:
            c0 = server_cpu()
            t0 = time.perf_counter()
            result = await job
            result["server_cpu_avg"] = round((server_cpu() - c0) / (time.perf_counter() - t0), 2)
            result["load_average_1m"] = round(os.getloadavg()[0], 2)
            turns[name].append(result)
            print(f"{name}: {result['rate']:,.0f}/s ({result})", file=sys.stderr)

        def job(name: str) -> Any:
            if name == "bare_1":
                return asyncio.to_thread(run_bare, endpoint, [split(args.items, 1)], args.seconds)
            if name == "bare_n":
                return asyncio.to_thread(run_bare, endpoint, layout, args.seconds)
            return gateway(endpoint, args.items, args.sessions, args.workers, args.seconds)

        # Round 2 runs the turns in reverse, so neither side always meets a fresher server.
        order = ["bare_1", "bare_n", "gateway"]
        for r in range(args.rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                await turn(name, job(name))
    finally:
        stop_server(server)
    one, many, ours = (statistics.median(t["rate"] for t in turns[k]) for k in turns)
    shape = f"sessions {args.sessions}, workers {args.workers}"
    period_ms = args.period * 1000
    figures: dict[str, Any] = {
        "server": kind,
        "items": args.items,
        "period_s": args.period,
        "offered_updates_per_s": round(args.items / args.period),
        "seconds_per_turn": args.seconds,
        "sessions": args.sessions,
        "workers": args.workers,
        "rounds": args.rounds,
        "turns": {
            k: [{**v, "rate": round(v["rate"]), "cpu": round(v["cpu"], 2)} for v in runs]
            for k, runs in turns.items()
        },
        "medians": {"bare_1": round(one), "bare_n": round(many), "gateway": round(ours)},
        "load_average_1m_before": round(load0, 2),
        "machine": machine(),
        "rows": [
            row(
                f"{kind} {args.items:,} items @{period_ms:g} ms: gateway ({shape}) "
                "vs 1 bare session",
                round(ours),
                round(one),
                "updates/s",
                ">= 1.5x one bare asyncua session",
                bool(one) and ours / one >= 1.5,
                f"tag-table updates/s vs notifications/s, medians of {args.rounds} turns",
            ),
            row(
                f"{kind} {args.items:,} items @{period_ms:g} ms: gateway "
                f"vs {args.sessions} bare sessions",
                round(ours),
                round(many),
                "updates/s",
                f">= 90 % of {args.sessions} bare sessions",
                bool(many) and ours / many >= 0.9,
                f"bare sessions in {len(layout)} process(es), as the gateway's",
            ),
        ],
    }
    path = write_result("opcua_sessions", figures)
    print(f"{'measure':<75} {'bridge':>9} {'floor':>9} {'ratio':>6}  met")
    for r in figures["rows"]:
        print(f"{r['measure']:<75} {r['bridge']:>9,} {r['floor']:>9,} {r['ratio']:>6}  {r['met']}")
    print(f"load average before {load0:.2f}, after {os.getloadavg()[0]:.2f}; wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--bare":
        seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
        shares = [(int(a), int(b)) for a, b in json.loads(sys.argv[3])]
        result = asyncio.run(bare(sys.argv[2], shares, seconds))
        print(json.dumps(result), flush=True)
    else:
        asyncio.run(main())
