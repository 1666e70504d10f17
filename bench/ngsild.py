"""NGSI-LD batch upsert throughput: the NGSI-LD destination's ``deliver`` against a bare httpx
client posting the same bodies to the same broker, in the same run.

The broker is in this process (uvicorn + Starlette on a free 127.0.0.1 port) and does what a
broker's upsert with ``options=update`` does to its state: parses the array, creates each
entity it does not have and replaces the attributes of each one it has; it answers 201 or 204.
It shares the event loop with the side measured, equally for both sides.

- bridge: ``--entities`` (20,000) predictions of ``--assets`` (500) assets, each with 5 tag
  Properties, encoded by ``NgsiLdDestination.encode`` beforehand (what the outbox stores),
  then ``deliver`` in batches of ``--batch-size`` (50) entities of different assets, one
  after the other, as the outbox relay calls it (``concurrency: 1``);
- floor: one ``httpx.AsyncClient`` POSTing the same batches, joined into the same JSON array,
  with the same headers, one after the other.

Both warmed up with one round (the ISA-95 level entities go with the destination's first
batch), then ``--rounds`` (3) alternating rounds each (the side going first alternates too).
Figures: entities/s upserted (target: at least 80 % of the floor) and the encode time per
entity (not in either side's figure).

    python -m bench.ngsild [--entities 20000] [--assets 500] [--batch-size 50] [--rounds 3]
                           [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.common import row, write_result
from bridge.connectors.ngsild import NgsiLdDestination, NgsiLdSettings
from bridge.destination import DestinationContext, Envelope
from bridge.logging import configure_logging
from bridge.types import Prediction, Quality, TagReading, Trigger

UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
TAGS = (("vibration", "mm/s"), ("bearing_temperature", "degC"), ("discharge_pressure", "bar"),
        ("speed", "rpm"), ("running", None))  # fmt: skip
TARGET = 0.8


class Broker:
    """Entity state and the upsert of ``options=update``, nothing else."""

    def __init__(self) -> None:
        self.entities: dict[str, dict[str, Any]] = {}
        self.upserted = 0
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.port = 0

    async def upsert(self, request: Request) -> Response:
        created = []
        for entity in json.loads(await request.body()):
            entity.pop("@context", None)
            old = self.entities.get(entity["id"])
            if old is None:
                self.entities[entity["id"]] = entity
                created.append(entity["id"])
            else:
                old.update(entity)
        self.upserted += 1
        return JSONResponse(created, status_code=201) if created else Response(status_code=204)

    async def start(self) -> None:
        app = Starlette(routes=[Route(UPSERT, self.upsert, methods=["POST"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self.server.started:
                if self.task.done():
                    await self.task  # raises what went wrong
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await asyncio.wait_for(self.task, 10)


def _readings(assets: int, at: float) -> list[TagReading]:
    out = []
    for a in range(assets):
        for n, (tag, unit) in enumerate(TAGS):
            value: float | bool = True if unit is None else 10.0 * n + a % 7
            asset = f"pump-{a:04d}"
            out.append(TagReading(f"{asset}.{tag}", asset, tag, value, unit, Quality.GOOD, at, at))
    return out


def _prediction(asset: int, seq: int, t0: float) -> Prediction:
    name = f"pump-{asset:04d}"
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{name}/{seq}")),
        seq=seq,
        asset=name,
        model="pump-health",
        version="1.0.0",
        sha256="ab" * 32,
        value="healthy" if seq % 5 else "bearing_fault",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=t0 + seq,
        input_age_s=0.1,
    )


def _batches(
    dest: NgsiLdDestination, entities: int, assets: int, batch_size: int, t0: float
) -> tuple[list[list[Envelope]], float]:
    """Envelopes in batches of different assets, and the encode time per entity (s)."""
    predictions = [_prediction(i % assets, i // assets, t0) for i in range(entities)]
    started = time.perf_counter()
    envelopes = [Envelope(p.id, dest.encode(Trigger(p))) for p in predictions]
    encode_s = (time.perf_counter() - started) / max(1, len(envelopes))
    step = min(batch_size, assets)  # consecutive envelopes are of consecutive assets
    return [envelopes[i : i + step] for i in range(0, len(envelopes), step)], encode_s


async def _bridge(dest: NgsiLdDestination, batches: Sequence[list[Envelope]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        outcomes = await dest.deliver(batch)
        if any(o is not None for o in outcomes):
            raise RuntimeError(f"the broker did not take a batch: {outcomes[:3]}")
    return sum(map(len, batches)) / (time.perf_counter() - started)


async def _floor(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], batches: Sequence[list[Envelope]]
) -> float:
    started = time.perf_counter()
    for batch in batches:
        body = "[" + ",".join(b for _, b in batch) + "]"
        response = await client.post(url, content=body.encode(), headers=headers)
        if response.status_code not in (201, 204):
            raise RuntimeError(f"the broker answered {response.status_code}")
    return sum(map(len, batches)) / (time.perf_counter() - started)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one run (``--entities``, ``--assets``, ``--batch-size``, ``--rounds``);
    printed, not written (``main`` and ``bench.lakehouse`` write them)."""
    broker = Broker()
    await broker.start()
    t0 = time.time()
    readings = _readings(args.assets, t0)
    settings = NgsiLdSettings(
        url=f"http://127.0.0.1:{broker.port}",
        enterprise="acme",
        site="dallas",
        area="pumping",
        line="line-1",
        tenant="bench",
        batch_size=args.batch_size,
    )
    dest = NgsiLdDestination(
        "bench", settings, DestinationContext("bench", tags=lambda s: readings)
    )
    await dest.start()
    headers = {"Content-Type": "application/ld+json", "Accept": "application/json",
               "NGSILD-Tenant": "bench"}  # fmt: skip
    client = httpx.AsyncClient(timeout=10, trust_env=False)
    bridge: list[float] = []
    floor: list[float] = []
    try:
        warm, _ = _batches(dest, args.assets, args.assets, args.batch_size, t0)
        await _bridge(dest, warm)
        await _floor(client, settings.upsert_url, headers, warm)
        # Each round's predictions are newer than the round before's, as a live plant's: an
        # older one would not be a current value (it goes to the temporal API, or nowhere).
        span = args.entities // args.assets + 1
        for n in range(args.rounds):
            start = t0 + (n + 1) * span
            batches, encode_s = _batches(dest, args.entities, args.assets, args.batch_size, start)
            sides = [
                ("bridge", lambda b=batches: _bridge(dest, b)),
                ("floor", lambda b=batches: _floor(client, settings.upsert_url, headers, b)),
            ]
            for side, run in sides if n % 2 == 0 else reversed(sides):
                (bridge if side == "bridge" else floor).append(await run())
    finally:
        await client.aclose()
        await dest.close()
        await broker.stop()
    best_bridge, best_floor = max(bridge), max(floor)
    ratio = best_bridge / best_floor
    body_bytes = len(warm[0][0].body.encode())
    print(
        f"NGSI-LD upsert, {args.batch_size} entities per request, {args.assets} assets: "
        f"destination {best_bridge:,.0f} entities/s vs bare httpx {best_floor:,.0f} entities/s "
        f"= {ratio:.2f}x (target {TARGET}) | encode {encode_s * 1e6:.0f} us/entity, "
        f"{body_bytes} bytes/entity | rounds bridge {[round(x) for x in bridge]} floor "
        f"{[round(x) for x in floor]}",
        flush=True,
    )
    figures = {
        "entities_per_round": args.entities,
        "assets": args.assets,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "bridge_entities_per_s": [round(x, 1) for x in bridge],
        "floor_entities_per_s": [round(x, 1) for x in floor],
        "encode_us_per_entity": round(encode_s * 1e6, 1),
        "bytes_per_entity": body_bytes,
        "broker_requests": broker.upserted,
        "broker_entities": len(broker.entities),
        "rows": [
            row(
                "NGSI-LD batch upsert (entities/s)",
                round(best_bridge, 1),
                round(best_floor, 1),
                "entities/s",
                f">= {TARGET} x bare httpx",
                ratio >= TARGET,
                "same bodies, same in-process broker",
            )
        ],
    }
    return figures


async def main(args: argparse.Namespace) -> None:
    figures = await measure(args)
    figures["command"] = " ".join(["python -m bench.ngsild", *sys.argv[1:]])
    print(f"wrote {write_result('ngsild', figures)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ngsild", description=__doc__)
    parser.add_argument("--entities", type=int, default=20_000, help="entities per round")
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=50, help="entities per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1,000 entities of 100 assets, 1 round"
    )
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.entities, parsed.assets, parsed.rounds = 1_000, 100, 1
    configure_logging("warning", json=False)
    asyncio.run(main(parsed))
