"""Outbox throughput: predictions + outbox rows persisted, and events delivered to the MES.

For each backend (SQLite file, PostgreSQL at 127.0.0.1):
1. persist: the plant of ``--assets`` assets at 1 prediction/s each, ``--backlog-s`` seconds of
   it written through the real StoreSink (prediction row + outbox row, one transaction per
   batch) as fast as it goes, the relay stopped (an MES outage): events/s persisted.
2. drain: the relay starts against the MES receiver (its own process, so it does not share this
   event loop) and sends the backlog for ``--drain-s`` seconds (or until it is all delivered):
   events/s delivered, and the ratio to the plant's ingest rate (target >= 3x). The MES
   destination uses batch mode (``--batch-size`` events per POST; 1 = one POST per event).
3. drain without HTTP: the same, with a destination that accepts every event at once, to
   separate the outbox's own cost (claim, delete, transactions) from the HTTP client/server.

    python -m bench.outbox [--backend sqlite,postgresql] [--assets 2000] [--backlog-s 600]
                           [--drain-s 30] [--concurrency 8] [--batch-size 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench.common import free_port, stop, write_result
from bridge.destination import Capabilities, DestinationContext, Envelope, Outcome
from bridge.logging import configure_logging
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink
from bridge.types import ComponentHealth, Prediction, Quality, Trigger
from connectors.mes import MesDestination, MesSettings

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
GATEWAY = "bench"


def _prediction(asset: str, seq: int) -> Prediction:
    pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/health/{seq}"))
    return Prediction(
        id=pid,
        seq=seq,
        asset=asset,
        model="health",
        version="1.0.0",
        sha256="ab" * 32,
        value="healthy",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=1.7e9 + seq,
        input_age_s=0.1,
    )


@contextlib.contextmanager
def _store(backend: str, workdir: Path) -> Iterator[Store]:
    if backend == "sqlite":
        s = open_store(f"sqlite:///{workdir / 'bench.db'}")
        try:
            yield s
        finally:
            s.dispose()
        return
    schema = f"bench_outbox_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        s = open_store(PG_URL, schema=schema)
        try:
            yield s
        finally:
            s.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def _receiver() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.mes", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/stats", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("MES receiver did not start")
            time.sleep(0.1)
        yield url
    finally:
        stop(proc)


async def _until(condition: Callable[[], bool]) -> None:
    """Poll a counter of another component (it has no event to wait on)."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.005)


async def _stats(client: httpx.AsyncClient, url: str) -> dict[str, int]:
    return dict((await client.get(f"{url}/stats")).json())


class NullDestination:
    """Accepts every event at once: the relay's own cost, without HTTP."""

    name = "null"
    capabilities = Capabilities(concurrency=64)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def health(self) -> ComponentHealth:
        return ComponentHealth(self.name, "ok")

    def encode(self, event: Trigger) -> str | None:
        return event.prediction.id

    async def deliver(self, batch: Sequence[Envelope]) -> list[Outcome]:
        return [None] * len(batch)


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    assets = [f"a{i:05d}" for i in range(args.assets)]
    ingest_rate = float(args.assets)  # 1 prediction/s per asset
    with (
        tempfile.TemporaryDirectory() as tmp,
        _store(backend, Path(tmp)) as store,
        _receiver() as mes,
    ):
        settings = MesSettings(
            url=f"{mes}/api/v1/events",
            concurrency=args.concurrency,
            timeout_s=30,
            batch_size=args.batch_size,
        )
        sink = MesDestination("mes", settings, DestinationContext(GATEWAY, ()))
        null = NullDestination()
        # Every prediction an event, without the rule selector (as measured before rules).
        feed = OutboxFeed("mes", lambda p: sink.encode(Trigger(p)), Budget(10_000_000))
        null_feed = OutboxFeed("null", lambda p: null.encode(Trigger(p)), Budget(10_000_000))
        writer = StoreSink(
            store, outbox=[feed, null_feed], queue_size=10 * args.assets, batch_size=1000
        )
        repo = OutboxRepository(store)
        relay = Relay(sink, repo, feed, RelaySettings(batch_size=args.assets))
        null_relay = Relay(null, repo, null_feed, RelaySettings(batch_size=args.assets))
        await writer.start()
        await sink.start()

        # 1. persist a backlog of backlog_s seconds of the plant (the MES is "down").
        total = args.assets * args.backlog_s
        t0 = time.perf_counter()
        for second in range(args.backlog_s):
            await writer.write([_prediction(a, second) for a in assets])
            # Keep the writer's in-memory queue bounded instead of letting it drop.
            await _until(lambda: writer.health().counters["queue_depth"] <= 5 * args.assets)
        await _until(lambda: writer.health().counters["written"] >= total)
        persist_s = time.perf_counter() - t0
        backlog = await asyncio.to_thread(lambda: repo.stats("mes").backlog)

        # 2. drain for drain_s seconds against the receiver process.
        async with httpx.AsyncClient(timeout=10) as client:
            before = (await _stats(client, mes))["count"]
            await relay.start()
            t1 = time.perf_counter()
            # Until drain_s, or until the whole backlog is delivered: a drained backlog must
            # not cap the figure (the time is that of the last event seen).
            after = await _stats(client, mes)
            drain_s = time.perf_counter() - t1
            while drain_s < args.drain_s and after["count"] - before < backlog:
                await asyncio.sleep(0.1)
                after = await _stats(client, mes)
                drain_s = time.perf_counter() - t1
        await relay.close()
        await null_relay.start()
        t2 = time.perf_counter()
        await _until(
            lambda: null_relay.delivered >= backlog or time.perf_counter() - t2 >= args.drain_s
        )
        null_s = time.perf_counter() - t2
        await null_relay.close()
        null_rate = null_relay.delivered / null_s
        await sink.close()
        await writer.close()
        delivered = after["count"] - before
        drained = delivered / drain_s
        return {
            "backend": backend,
            "assets": args.assets,
            "backlog_equivalent_s": args.backlog_s,
            "events_persisted": total,
            "outbox_backlog_after_persist": backlog,
            "persist_events_per_s": round(total / persist_s),
            "drain_seconds": round(drain_s, 1),
            "events_delivered": delivered,
            "duplicates_at_mes": after["duplicates"],
            "drain_events_per_s": round(drained),
            "ingest_events_per_s": ingest_rate,
            "drain_to_ingest_ratio": round(drained / ingest_rate, 2),
            "target_ratio": 3.0,
            "relay_concurrency": args.concurrency,
            "mes_batch_size": args.batch_size,
            "outbox_rows_per_prediction": 2,
            "drain_without_http_events_per_s": round(null_rate),
            "drain_without_http_to_ingest_ratio": round(null_rate / ingest_rate, 2),
        }


async def main(args: argparse.Namespace) -> None:
    results = []
    for backend in args.backend.split(","):
        r = await run_backend(backend.strip(), args)
        results.append(r)
        print(
            f"{r['backend']:>10}: persisted {r['persist_events_per_s']:>7} ev/s "
            f"({r['events_persisted']} events) | delivered {r['drain_events_per_s']:>6} ev/s "
            f"= {r['drain_to_ingest_ratio']}x the ingest of {r['assets']} assets at 1/s "
            f"(target 3x) | duplicates {r['duplicates_at_mes']} | outbox alone (no HTTP) "
            f"{r['drain_without_http_events_per_s']} ev/s = "
            f"{r['drain_without_http_to_ingest_ratio']}x",
            flush=True,
        )
    path = write_result("outbox", {"runs": results, "command": " ".join(sys.argv)})
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.outbox", description=__doc__)
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--backlog-s", type=int, default=600)
    parser.add_argument("--drain-s", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="events per POST (1: one POST per event)"
    )
    configure_logging("warning", json=False)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: SQLite, 500 assets, 10 s backlog, 3 s drain (not the target's figures)",
    )
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.backend, parsed.assets, parsed.backlog_s, parsed.drain_s = "sqlite", 500, 10, 3.0
    asyncio.run(main(parsed))
