"""The anonymised insights (``GET /api/v1/insights``) on a large store: how long one request's
aggregates take, per period and with or without the per-asset breakdown.

A store per backend (SQLite file; PostgreSQL schema at 127.0.0.1) holds ``--rows``
predictions of 200 assets and 2 classifiers spread over 30 days (every 17th Bad, all with a
drift score) and 20,000 alerts, written through ``PredictionRepository.add_many``. Each
request is ``bridge.api.insights.compute_insights`` over the 30 days (what the API runs on its
query threads, without HTTP), k = 5. The floor is one plain ``count(*)`` of the same range (a
single scan; the insights group the rows four times). Reported, never asserted: the target is
each request well under the API's query timeout (10 s) at 1,000,000 rows.

    python -m bench.insights                      # 1,000,000 rows per backend (minutes)
    python -m bench.insights --rows 200000 --backend sqlite
    python -m bench.insights --quick              # 50,000 rows

Writes bench/results/insights.json.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from sqlalchemy import func, select

from bench.common import bench_store, row, write_result
from bridge.api.anonymity import AssetKeys
from bridge.api.insights import compute_insights
from bridge.logging import configure_logging
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.store.db import Store
from bridge.store.insights import InsightRepository, InsightWindow
from bridge.store.repository import PredictionRepository
from bridge.store.tables import PredictionRow
from bridge.types import Prediction, Quality

T0 = 1_793_577_600.0  # Monday 2026-11-02 00:00 UTC
DAYS = 30
ASSETS = [f"asset-{i}" for i in range(200)]
LABELS = ("healthy", "healthy", "healthy", "cavitation", "seal_leak")


def _fill(store: Store, rows: int) -> float:
    rnd = random.Random(1)
    repo = PredictionRepository(store)
    started = time.perf_counter()
    batch: list[Prediction] = []
    for j in range(rows):
        batch.append(
            Prediction(
                id=str(uuid.uuid4()),
                seq=j,
                asset=ASSETS[j % len(ASSETS)],
                model=f"m{j % 2}",
                version="1",
                sha256="ab" * 32,
                value=rnd.choice(LABELS),
                score=0.5,
                quality=Quality.GOOD if j % 17 else Quality.BAD,
                timestamp=T0 + j / rows * DAYS * 86400,
                input_age_s=0.1,
                drift_score=0.1,
            )
        )
        if len(batch) == 5000:
            repo.add_many(batch)
            batch = []
    repo.add_many(batch)
    AlertRepository(store).add_many(
        [
            NewAlert(str(uuid.uuid4()), ASSETS[i % 200], "m0", "cavitation", "healthy", 0.9, t)
            for i, t in enumerate(T0 + n * DAYS * 86400 / 20000 for n in range(20000))
        ]
    )
    return time.perf_counter() - started


def _floor(store: Store) -> float:
    stmt = select(func.count(PredictionRow.id)).where(
        PredictionRow.timestamp >= T0, PredictionRow.timestamp < T0 + DAYS * 86400
    )
    started = time.perf_counter()
    with store.sessions() as session:
        session.execute(stmt).scalar_one()
    return time.perf_counter() - started


def _measure(backend: str, rows: int) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp, bench_store(backend, Path(tmp), "insights") as store:
        filled = _fill(store, rows)
        print(f"{backend}: {rows} predictions + 20,000 alerts written in {filled:.1f} s")
        repo = InsightRepository(store)
        floor = _floor(store)
        for period in ("day", "hour", "week"):
            window = InsightWindow.of(period, T0, T0 + DAYS * 86400)
            for keys in (None, AssetKeys("bench-salt-0123456789")):
                started = time.perf_counter()
                try:
                    answer = compute_insights(repo, window, period, 5, keys)
                    note = (
                        f"rows: {len(answer.models.rows)} models, {len(answer.labels.rows)} "
                        f"labels, {len(answer.alerts.rows)} alerts; {answer.suppressed} suppressed"
                    )
                except HTTPException as exc:  # more than 100,000 rows a series: refused
                    note = f"refused ({exc.status_code}): {exc.detail}"
                took = time.perf_counter() - started
                what = f"{backend}, {rows:,} rows, 30 days by {period}" + (
                    ", per asset" if keys else ""
                )
                print(f"  {what}: {took:.2f} s ({note})")
                out.append(row(what, took, floor, "s", "< 10 s (query timeout)", took < 10, note))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--quick", action="store_true", help="50,000 rows")
    args = parser.parse_args()
    configure_logging("warning")
    rows = 50_000 if args.quick else args.rows
    figures: dict[str, Any] = {"rows": []}
    for backend in args.backend.split(","):
        figures["rows"] += _measure(backend, rows)
    print(f"wrote {write_result('insights', figures)}")


if __name__ == "__main__":
    main()
