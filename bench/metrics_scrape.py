"""Cost of one /metrics scrape of a gateway of N pumps (5 tags each, the pump-health model on
every pump): the collector reading the parts' counters and rendering the exposition, on the
event loop, as the endpoint does. The gateway is built, its tag table filled and its model run
a few times; no sockets (the HTTP round trip is the API's, measured in bench.api_server).

floor: rendering the same number of series from a static registry (prometheus_client alone).

    python -m bench.metrics_scrape [--pumps 2000] [--scrapes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.common import PUMP_TAGS, percentile, pump_mapping, write_result
from bridge.prepare import prepare
from bridge.runtime.pipeline import build_gateway
from bridge.types import Quality, TagSample


def _floor(series: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge("floor_series", "static", ["n"], registry=registry)
    for i in range(series):
        gauge.labels(str(i)).set(i)
    return registry


def _timed(registry: CollectorRegistry) -> tuple[float, bytes]:
    started = time.perf_counter()
    body = generate_latest(registry)
    return time.perf_counter() - started, body


async def measure(pumps: int, scrapes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        mapping = Path(tmp) / "mapping.yaml"
        mapping.write_text(pump_mapping(pumps, f"sqlite:///{tmp}/bench.db"))
        gateway = await build_gateway(prepare(mapping))
        try:
            now = time.time()
            for round_ in range(20):
                gateway.table.apply(
                    [
                        TagSample(f"pump-{i:05d}.{tag}", float(round_ + i % 7), Quality.GOOD, now)
                        for i in range(1, pumps + 1)
                        for tag in PUMP_TAGS
                    ]
                )
                await asyncio.sleep(0.03)
            for runner in gateway.runners:
                for _ in range(3):
                    await runner.tick()
            ops = gateway.ops
            assert ops is not None
            await ops.refresh()
            _, body = _timed(ops.registry)
            series = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
            floor_registry = _floor(series)
            # Interleaved, so a loaded machine slows both alike.
            times, floor = [], []
            for _ in range(scrapes):
                times.append(_timed(ops.registry)[0])
                floor.append(_timed(floor_registry)[0])
        finally:
            await asyncio.to_thread(gateway.store.dispose)
    return {
        "pumps": pumps,
        "tags": pumps * len(PUMP_TAGS),
        "series": series,
        "bytes": len(body),
        "scrape_ms_p50": round(percentile(times, 50) * 1000, 2),
        "scrape_ms_p99": round(percentile(times, 99) * 1000, 2),
        "floor_ms_p50": round(percentile(floor, 50) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pumps", type=int, default=2000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.pumps, args.scrapes))
    for key, value in figures.items():
        print(f"{key:>15}: {value}")
    print(f"written to {write_result('metrics_scrape', figures)}")


if __name__ == "__main__":
    main()
