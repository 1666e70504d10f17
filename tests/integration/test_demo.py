"""The README's promise about the demo, with the demo's own mapping, simulators and model, on
free ports: within 30 s of start the faulty pump shows the fault label, the others stay healthy,
and the MES receiver and the API have the predictions. The demo's audit ledger verifies clean."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from support import free_port, wait_until

from bridge.audit.verify import verify_chain
from bridge.ed25519 import load_private_key, public_key_text
from bridge.runtime.pipeline import Gateway
from bridge.simulators.demo import FAULTY_PUMP, PUMPS, DemoPorts, run_demo
from bridge.simulators.mes.server import MesReceiver
from bridge.store import open_store
from bridge.store.audit import AuditRepository
from bridge.types import Quality


@pytest.mark.serial
async def test_demo_flags_the_faulty_pump_within_30_seconds(tmp_path: Path) -> None:
    ports = DemoPorts(
        plant=free_port(), plc=free_port(), mes=free_port(), api=free_port(), hmi=free_port()
    )
    stop = asyncio.Event()
    started: asyncio.Queue[tuple[Gateway, MesReceiver]] = asyncio.Queue(1)
    t0 = time.monotonic()
    demo = asyncio.create_task(run_demo(None, None, ports, tmp_path, stop, started))
    try:
        gateway, mes = await asyncio.wait_for(started.get(), 30)
        faulty = f"pump-{FAULTY_PUMP:02d}"

        def labels() -> dict[str, object]:
            return {
                p.asset: p.value
                for p in gateway.fanout.latest.values()
                if p.quality is Quality.GOOD
            }

        await wait_until(
            lambda: labels().get(faulty) == "bearing_fault",
            30 - (time.monotonic() - t0),
            what="fault label within 30 s of start",
        )
        current = labels()
        assert len(current) == PUMPS
        assert all(v == "healthy" for a, v in current.items() if a != faulty), current

        # The demo's read key, as its banner shows it; it also sees the alert the fault raised.
        key = (tmp_path / "api-key").read_text().strip()
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports.api}", headers={"Authorization": f"Bearer {key}"}
        ) as http:
            latest = (await http.get("/api/v1/predictions/latest")).json()
            assert {p["asset"]: p["value"] for p in latest}[faulty] == "bearing_fault"

            async def fault_alert() -> bool:
                alerts = (await http.get("/api/v1/alerts", params={"asset": faulty})).json()
                return any(a["label"] == "bearing_fault" for a in alerts["items"])

            await wait_until(fault_alert, 10, what="an alert for the faulty pump")
            assert (await http.get("/api/v1/alerts")).json()["items"][-1]["previous"] == "healthy"
            no_key = await http.get("/api/v1/tags", headers={"Authorization": ""})
            assert no_key.status_code == 401
        await wait_until(
            lambda: any(
                c.body["asset"] == faulty and c.body["value"] == "bearing_fault" for c in mes.calls
            ),
            10,
            what="the MES receiver got the fault",
        )
        assert mes.duplicate_count == 0
        assert (tmp_path / "mes-calls.jsonl").stat().st_size > 0
    finally:
        stop.set()
        await asyncio.wait_for(demo, 30)

    # The demo's day is in its audit ledger, whole, and signed to its last entry by the key the
    # demo made in its working directory.
    ledger = AuditRepository(open_store(f"sqlite:///{tmp_path / 'bridge.db'}"), "test")
    actions = [e.action for e in ledger.iter_entries()]
    # The demo's read key made, the bundled model registered, the fault's alert raised.
    expected = {"apikey.created", "model.registered", "gateway.started", "mapping.loaded"}
    assert expected | {"alert.raised"} <= set(actions), actions
    assert actions[-1] == "gateway.stopped", actions
    public = load_private_key(tmp_path / "audit-ed25519.pem").public_key()
    result = verify_chain(ledger.iter_entries(), ledger.checkpoints(), [public_key_text(public)])
    assert result.ok and result.unsigned_tail == 0, result.to_json()
