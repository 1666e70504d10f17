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
4. per event (``per-event``): the batch contract off (one POST per event), an MES answering
   each request in ``--mes-delay-ms`` (5 ms; its own process), predictions written into the
   store at ``--produced`` events/s over ``--event-assets`` assets while the relay runs:
   events/s the MES recorded, against a floor of bare POSTs of the connector's own HTTP client
   (the same body, settings and concurrency) to the same MES in the same run, measured before
   and after the relay, and bare httpx POSTs for comparison (target >= 500 events/s).
5. flaky MES (``flaky``): the same MES answering one request in three with 500, events
   produced at each of ``--flaky-rates`` (20, 100, 200 events/s; 2 a second per asset, as in
   the field report): delivered / produced over the last two thirds of the window (target
   >= 0.9), and the lag left at the end (events and the age of the oldest).

    python -m bench.outbox [--backend sqlite,postgresql] [--parts drain,per-event,flaky]
                           [--assets 2000] [--backlog-s 600] [--drain-s 30] [--concurrency 8]
                           [--batch-size 500] [--produced 600] [--event-assets 200]
                           [--event-s 10] [--flaky-rates 20,100,200] [--flaky-s 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
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

from bench.common import free_port, row, stop, write_result
from bridge.connectors.mes import MesDestination, MesSettings
from bridge.connectors.mes.http import LeanClient
from bridge.destination import Capabilities, DestinationContext, Envelope, Outcome
from bridge.logging import configure_logging
from bridge.outbox import Relay, RelaySettings
from bridge.outbox.feed import Budget, OutboxFeed
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository
from bridge.store.sink import StoreSink
from bridge.types import ComponentHealth, Prediction, Quality, Trigger

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
def _receiver(delay_ms: float = 0.0, fail_every: int = 0) -> Iterator[str]:
    port = free_port()
    options = ["--delay-ms", str(delay_ms), "--fail-every", str(fail_every)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.simulators.mes", "--port", str(port), *options],
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


# -- per event: one POST per event at the MES's speed ------------------------------------------


def _client(concurrency: int) -> httpx.AsyncClient:
    """The HTTP client ``MesDestination`` builds (pool size, keep-alive, TCP_NODELAY)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30),
        trust_env=False,
        transport=httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        ),
    )


async def floor_posts(
    mes: str, body: str, concurrency: int, seconds: float, client: str = "httpx"
) -> float:
    """Bare POSTs: ``concurrency`` workers POSTing the same body, each with a key of its own,
    for ``seconds``, with httpx or with the MES connector's own HTTP client (``lean``);
    events/s the MES recorded."""
    url = f"{mes}/api/v1/events"
    run = uuid.uuid4().hex[:8]  # keys of their own: a repeated key is not recorded again
    lean = LeanClient(url, timeout_s=30, max_connections=concurrency)
    content = body.encode()
    async with _client(concurrency) as hx:
        before = (await _stats(hx, mes))["unique"]
        t0 = time.perf_counter()
        stop_at = t0 + seconds

        async def worker(w: int) -> None:
            i = 0
            while time.perf_counter() < stop_at:
                key = f"{run}-{w}-{i}"
                if client == "lean":
                    extra = [
                        (b"Content-Type", b"application/json"),
                        (b"Idempotency-Key", key.encode()),
                    ]
                    await lean.post(content, extra)
                else:
                    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
                    await hx.post(url, content=body, headers=headers)
                i += 1

        try:
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
        finally:
            await lean.aclose()
        elapsed = time.perf_counter() - t0
        recorded = (await _stats(hx, mes))["unique"] - before
    return recorded / elapsed


async def relay_at_rate(
    store: Store,
    mes: str,
    *,
    rate: float,
    assets: int,
    seconds: float,
    concurrency: int,
    label: str,
) -> dict[str, Any]:
    """Write ``rate`` predictions/s (round robin over ``assets``) through the real StoreSink for
    ``seconds`` while the relay sends them one POST each, with the gateway's relay settings
    and the MES connector's default backoff. Rates over the last two thirds of the window."""
    settings = MesSettings(url=f"{mes}/api/v1/events", concurrency=concurrency, timeout_s=10)
    sink = MesDestination("mes", settings, DestinationContext(GATEWAY, ()))
    feed = OutboxFeed("mes", lambda p: sink.encode(Trigger(p)), Budget(10_000_000))
    writer = StoreSink(store, outbox=[feed], queue_size=100_000, batch_size=1000)
    repo = OutboxRepository(store)
    relay = Relay(sink, repo, feed, RelaySettings())
    names = [f"{label}{i:04d}" for i in range(assets)]
    await writer.start()
    await sink.start()
    await relay.start()
    produced = 0
    try:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            first = await _stats(client, mes)
            t0 = time.perf_counter()
            mark = t0 + seconds / 3
            marked: tuple[int, int] | None = None  # (produced, recorded) at the mark
            while (now := time.perf_counter()) < t0 + seconds:
                due = int((now - t0) * rate)
                if due > produced:
                    batch = [
                        _prediction(names[n % assets], n // assets) for n in range(produced, due)
                    ]
                    await writer.write(batch)
                    produced = due
                if marked is None and now >= mark:
                    marked = (produced, (await _stats(client, mes))["unique"])
                await asyncio.sleep(0.02)
            end = await _stats(client, mes)
            window = time.perf_counter() - mark
            backlog = await asyncio.to_thread(lambda: repo.stats("mes"))
    finally:
        await relay.close()
        await sink.close()
        await writer.close()
    assert marked is not None
    made = produced - marked[0]
    got = end["unique"] - marked[1]
    oldest = backlog.oldest_created_at
    return {
        "produced_events_per_s": round(made / window, 1),
        "delivered_events_per_s": round(got / window, 1),
        "delivered_to_produced": round(got / made, 3) if made else None,
        "produced": produced,
        "delivered": end["unique"] - first["unique"],
        "lag_events_at_end": backlog.backlog,
        "lag_oldest_age_s_at_end": round(time.time() - oldest, 2) if oldest else 0.0,
        "duplicates_at_mes": end["duplicates"] - first["duplicates"],
        "answered_500": end["failed_on_purpose"] - first["failed_on_purpose"],
        "max_in_flight_at_mes": end["max_in_flight"],
        "relay_retried": relay.retried,
        "dead_lettered": relay.dead_lettered,
        "assets": assets,
        "window_s": round(window, 1),
    }


async def run_per_event(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    body = MesDestination(
        "mes", MesSettings(url="http://x/"), DestinationContext(GATEWAY, ())
    ).encode(Trigger(_prediction("a00000", 0)))
    with (
        tempfile.TemporaryDirectory() as tmp,
        _store(backend, Path(tmp)) as store,
        _receiver(delay_ms=args.mes_delay_ms) as mes,
    ):
        # Floors before and after the relay: the machine's share for this work may change.
        # Two clients: httpx (what the connector used before) and the connector's own.
        half = args.event_s / 2
        hx_a = await floor_posts(mes, body, args.concurrency, half)
        lean_a = await floor_posts(mes, body, args.concurrency, half, "lean")
        r = await relay_at_rate(
            store,
            mes,
            rate=args.produced,
            assets=args.event_assets,
            seconds=args.event_s,
            concurrency=args.concurrency,
            label="e",
        )
        lean_b = await floor_posts(mes, body, args.concurrency, half, "lean")
        hx_b = await floor_posts(mes, body, args.concurrency, half)
    floor = (lean_a + lean_b) / 2
    return {
        "backend": backend,
        "mes_delay_ms": args.mes_delay_ms,
        "concurrency": args.concurrency,
        **r,
        "floor_events_per_s": round(floor, 1),
        "floor_before_after": [round(lean_a, 1), round(lean_b, 1)],
        "httpx_floor_events_per_s": round((hx_a + hx_b) / 2, 1),
        "httpx_floor_before_after": [round(hx_a, 1), round(hx_b, 1)],
        "ratio_to_floor": round(r["delivered_events_per_s"] / floor, 3) if floor else None,
        "target_events_per_s": 500,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def run_flaky(backend: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    with _receiver(delay_ms=args.mes_delay_ms, fail_every=3) as mes:
        for rate in (float(r) for r in args.flaky_rates.split(",")):
            with tempfile.TemporaryDirectory() as tmp, _store(backend, Path(tmp)) as store:
                r = await relay_at_rate(
                    store,
                    mes,
                    rate=rate,
                    # 2 events/s per asset, the field report's (10 assets at 20 events/s).
                    assets=max(1, round(rate / 2)),
                    seconds=args.flaky_s,
                    concurrency=args.concurrency,
                    label=f"r{int(rate)}-",
                )
            out.append(
                {
                    "backend": backend,
                    "rate": rate,
                    "mes_delay_ms": args.mes_delay_ms,
                    "fail_every": 3,
                    **r,
                    "target_ratio": 0.9,
                    "load_average_1m": round(os.getloadavg()[0], 2),
                }
            )
    return out


def _rows(
    drains: list[dict[str, Any]], per_event: list[dict[str, Any]], flaky: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for r in drains:
        rows.append(
            row(
                f"outbox drain, batch POSTs, {r['backend']} (events/s)",
                r["drain_events_per_s"],
                r["drain_without_http_events_per_s"],
                "events/s",
                f">= 3x ingest ({3 * r['ingest_events_per_s']:.0f}/s)",
                r["drain_to_ingest_ratio"] >= 3.0 and r["duplicates_at_mes"] == 0,
                f"floor: the relay without HTTP; duplicates {r['duplicates_at_mes']}",
            )
        )
    for r in per_event:
        rows.append(
            row(
                f"outbox one POST per event, MES {r['mes_delay_ms']:g} ms, {r['backend']} "
                "(events/s)",
                r["delivered_events_per_s"],
                r["floor_events_per_s"],
                "events/s",
                ">= 500/s",
                r["delivered_events_per_s"] >= 500 and r["duplicates_at_mes"] == 0,
                f"floor: bare POSTs of the connector's HTTP client, same concurrency "
                f"{r['concurrency']}, before/after {r['floor_before_after']}; bare httpx "
                f"{r['httpx_floor_events_per_s']}; produced {r['produced_events_per_s']}/s; "
                f"max in flight {r['max_in_flight_at_mes']}; load {r['load_average_1m']}",
            )
        )
    for r in flaky:
        rows.append(
            row(
                f"outbox 1 in 3 answered 500, {r['rate']:g}/s produced, {r['backend']} "
                "(delivered/produced)",
                r["delivered_to_produced"],
                None,
                "ratio",
                ">= 0.9",
                (r["delivered_to_produced"] or 0) >= 0.9 and r["duplicates_at_mes"] == 0,
                f"lag at end {r['lag_events_at_end']} events, oldest "
                f"{r['lag_oldest_age_s_at_end']} s; {r['answered_500']} answered 500; "
                f"load {r['load_average_1m']}",
            )
        )
    return rows


async def main(args: argparse.Namespace) -> None:
    parts = {p.strip() for p in args.parts.split(",")}
    results: list[dict[str, Any]] = []
    per_event: list[dict[str, Any]] = []
    flaky: list[dict[str, Any]] = []
    for backend in (b.strip() for b in args.backend.split(",")):
        if "drain" in parts:
            r = await run_backend(backend, args)
            results.append(r)
            print(
                f"{r['backend']:>10}: persisted {r['persist_events_per_s']:>7} ev/s "
                f"({r['events_persisted']} events) | delivered {r['drain_events_per_s']:>6} "
                f"ev/s = {r['drain_to_ingest_ratio']}x the ingest of {r['assets']} assets at "
                f"1/s (target 3x) | duplicates {r['duplicates_at_mes']} | outbox alone (no "
                f"HTTP) {r['drain_without_http_events_per_s']} ev/s = "
                f"{r['drain_without_http_to_ingest_ratio']}x",
                flush=True,
            )
        if "per-event" in parts:
            e = await run_per_event(backend, args)
            per_event.append(e)
            print(
                f"{backend:>10}: one POST per event, MES {e['mes_delay_ms']:g} ms, "
                f"produced {e['produced_events_per_s']}/s: delivered "
                f"{e['delivered_events_per_s']}/s (target 500/s) vs bare client "
                f"{e['floor_events_per_s']}/s ({e['ratio_to_floor']}x), bare httpx "
                f"{e['httpx_floor_events_per_s']}/s | max in flight "
                f"{e['max_in_flight_at_mes']} | duplicates {e['duplicates_at_mes']} | load "
                f"{e['load_average_1m']}",
                flush=True,
            )
        if "flaky" in parts:
            for f in await run_flaky(backend, args):
                flaky.append(f)
                print(
                    f"{backend:>10}: 1 in 3 answered 500, produced {f['produced_events_per_s']}"
                    f"/s over {f['assets']} assets: delivered {f['delivered_events_per_s']}/s = "
                    f"{f['delivered_to_produced']} (target 0.9) | lag at end "
                    f"{f['lag_events_at_end']} events, oldest {f['lag_oldest_age_s_at_end']} s"
                    f" | duplicates {f['duplicates_at_mes']} | load {f['load_average_1m']}",
                    flush=True,
                )
    rows = _rows(results, per_event, flaky)
    figures = {
        "runs": results,
        "per_event": per_event,
        "flaky": flaky,
        "rows": rows,
        "command": " ".join(sys.argv),
    }
    path = write_result("outbox", figures)
    print(json.dumps([(r["measure"], r["bridge"], r["floor"], r["met"]) for r in rows]))
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.outbox", description=__doc__)
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--parts", default="drain,per-event,flaky")
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--backlog-s", type=int, default=600)
    parser.add_argument("--drain-s", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="events per POST (1: one POST per event)"
    )
    parser.add_argument("--mes-delay-ms", type=float, default=5.0, help="per-event, flaky parts")
    parser.add_argument("--produced", type=float, default=600.0, help="per-event: events/s")
    parser.add_argument("--event-assets", type=int, default=200, help="per-event: assets")
    parser.add_argument("--event-s", type=float, default=10.0, help="per-event: window")
    parser.add_argument("--flaky-rates", default="20,100,200", help="flaky: events/s")
    parser.add_argument("--flaky-s", type=float, default=15.0, help="flaky: window per rate")
    configure_logging("warning", json=False)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: SQLite, 500 assets, 10 s backlog, 3 s drain, 4 s per-event and "
        "flaky windows (not the target's figures)",
    )
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.backend, parsed.assets, parsed.backlog_s, parsed.drain_s = "sqlite", 500, 10, 3.0
        parsed.event_s, parsed.flaky_s = 4.0, 4.0
    asyncio.run(main(parsed))
