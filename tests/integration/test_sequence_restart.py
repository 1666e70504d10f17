"""Sequence numbers survive restarts: ``bridge run`` stopped and started again on the same store
goes on numbering each asset's predictions where the last committed one left off, so an MES can
order and deduplicate by (gateway, asset, model, seq). The store layer is checked on SQLite and
PostgreSQL: the high-water mark only rises, per gateway, and a store from before it existed
starts from the highest stored seq."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pump_mapping import pump_mapping
from stores import temp_store
from support import free_port

from bridge.simulators.plant.model_variants import write_variants
from bridge.store.db import Store
from bridge.store.repository import PredictionRepository
from bridge.store.sequences import SequenceRepository
from bridge.types import Prediction, Quality

pytestmark = pytest.mark.timeout(180)


def _run(cwd: Path) -> None:
    # No plant answers on the port: every tick stores a Bad prediction ("inputs missing").
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "mapping.yaml", "--duration", "2"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _stored(db: Path) -> dict[str, list[tuple[int, str]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT asset, seq, prediction_id FROM predictions ORDER BY timestamp, id"
        ).fetchall()
    out: dict[str, list[tuple[int, str]]] = {}
    for asset, seq, pid in rows:
        out.setdefault(asset, []).append((seq, pid))
    return out


def test_bridge_run_goes_on_numbering_after_a_restart(tmp_path: Path) -> None:
    write_variants(tmp_path / "models")
    (tmp_path / "mapping.yaml").write_text(
        pump_mapping(
            store=tmp_path / "bridge.db",
            model="models/pump_health_v1.onnx",
            assets=("pump-a", "pump-b"),
            gateway_id="seq-gw",
            gateway=("api: {enabled: false}",),
            port=free_port(),
            timing={"period_s": 0.2, "window_s": 10},
        )
    )
    _run(tmp_path)
    first = {asset: len(rows) for asset, rows in _stored(tmp_path / "bridge.db").items()}
    assert set(first) == {"pump-a", "pump-b"} and min(first.values()) >= 2, first
    _run(tmp_path)
    for asset, rows in _stored(tmp_path / "bridge.db").items():
        seqs = [seq for seq, _ in rows]
        # One run after the other, no number twice, none going back, none skipped.
        assert seqs == list(range(1, len(seqs) + 1)), (asset, seqs)
        assert len(seqs) > first[asset], (asset, seqs)
        assert len({pid for _, pid in rows}) == len(rows)


def _p(asset: str, seq: int) -> Prediction:
    return Prediction(
        id=str(uuid.uuid4()),
        seq=seq,
        asset=asset,
        model="m",
        version="1",
        sha256="ab" * 32,
        value="ok",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=time.time(),
        input_age_s=0.1,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path) as s:
        yield s


def test_high_water_marks_rise_per_gateway_and_fall_back_to_stored_predictions(
    store: Store,
) -> None:
    PredictionRepository(store, gateway_id="gw-a").add_many(
        [_p("A", s) for s in range(1, 6)] + [_p("B", s) for s in range(1, 4)]
    )
    PredictionRepository(store, gateway_id="gw-b").add_many([_p("A", 1), _p("A", 2)])
    # A late batch with lower numbers (a retry) never lowers the mark.
    PredictionRepository(store, gateway_id="gw-a").add_many([_p("A", 4)])
    sequences = SequenceRepository(store)
    assert sequences.last("gw-a", "m") == {"A": 5, "B": 3}
    assert sequences.last("gw-b", "m") == {"A": 2}
    # A gateway with no marks yet (a store from before they were kept): the stored maximum.
    assert sequences.last("gw-new", "m") == {"A": 5, "B": 3}
    assert sequences.last("gw-a", "other-model") == {}
