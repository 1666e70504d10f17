"""A gateway's durable MES path as its own process, for the kill -9 test.

    python tests/outbox_child.py STORE_URL MES_URL produce|drain [SCHEMA [LEASE_S]]

``produce`` writes one prediction per asset every 10 ms (and relays); ``drain`` only relays
what the outbox holds. ``SCHEMA``: the PostgreSQL schema of the store ("" for none);
``LEASE_S``: the relay's lease. Prints "ready" once running; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
from outbox_harness import Durable, prediction

from bridge.store.db import open_store

ASSETS = [f"p{i}" for i in range(5)]


async def main(store_url: str, mes_url: str, mode: str, schema: str, lease_s: float) -> None:
    # stdout carries only "ready" for the parent; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    store = await asyncio.to_thread(open_store, store_url, schema=schema or None)
    g = Durable(store, mes_url, batch_size=20, lease_s=lease_s)
    await g.start()
    print("ready", flush=True)
    seq = 0
    try:
        while not stop.is_set():
            if mode == "produce":
                await g.write([prediction(a, seq) for a in ASSETS])
                seq += 1
            await asyncio.sleep(0.01)
    finally:
        await g.close()
        store.dispose()


if __name__ == "__main__":
    schema = sys.argv[4] if len(sys.argv) > 4 else ""
    lease_s = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], schema, lease_s))
