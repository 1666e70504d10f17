"""A gateway's lakehouse path as its own process, for the kill -9 test.

    python tests/lakehouse_child.py ROOT STORE_URL produce|drain FIRST_SEQ

``produce`` stores one prediction per asset every 10 ms from sequence FIRST_SEQ on (the store
writer puts them in the outbox, the relay delivers them to the lakehouse destination) and
publishes two tag readings per asset with them; ``drain`` only relays and commits what is
left. The spool seals and commits every 50 ms, so a kill lands in commits. Prints "ready" once
running; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import structlog
from lakehouse_support import Feed, LakeGateway, lake_settings, prediction, reading

from bridge.store.db import open_store

ASSETS = [f"p{i}" for i in range(5)]


async def main(root: Path, store_url: str, mode: str, first: int) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    store = await asyncio.to_thread(open_store, store_url)
    feed = Feed()
    settings = lake_settings(root, flush={"max_age_s": 0.05})
    g = LakeGateway(store, settings, samples=feed)
    await g.start()
    print("ready", flush=True)
    seq = first
    try:
        while not stop.is_set():
            if mode == "produce":
                await g.write([prediction(a, seq) for a in ASSETS])
                at = time.time()
                feed.publish([reading(a, t, float(seq), at) for a in ASSETS for t in ("x", "y")])
                seq += 1
            await asyncio.sleep(0.01)
    finally:
        await g.close()
        store.dispose()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])))
