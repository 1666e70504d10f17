"""The write-back actions over REST.

On a whole gateway serving its API on a real socket (a PLC simulator read by a Modbus source,
a classifier that says `fault` above 50 degrees, one action writing the setpoint back): the
list shows the action's state; arming through REST lets a prediction write; a confirmation
through REST writes and the register shows it, a refusal writes nothing, a stale request id
is 409; a `read` key cannot act. On a store alone (SQLite and PostgreSQL): the decision
coverage of a known sequence of events, exactly; the actions' routes answer 409; retention
removes old action events with the predictions."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from actions_rig import FROZEN, SETPOINT, first_readings, holding, plc_signals, running_gateway
from emptyview import EmptyView
from insight_models import logistic_classifier
from stores import BACKENDS, temp_store
from support import LOOPBACK, free_port, wait_until

from bridge.api import ApiServices, create_app
from bridge.api.app import close_app
from bridge.auth import Scope
from bridge.config.spec import RetentionSettings
from bridge.connectors.modbus import ModbusSourceSettings
from bridge.connectors.modbus.write import ModbusWriter
from bridge.runtime.pipeline import Gateway
from bridge.runtime.retention import RetentionJob
from bridge.simulators.plc import PlcSimulator
from bridge.store import PredictionRepository
from bridge.store.actions import ActionEventFilter, ActionRepository, NewActionEvent
from bridge.store.alerts import AlertRepository
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import Store
from bridge.store.labels import LabelRepository
from bridge.store.retention import RetentionStore
from bridge.types import Feedback, Prediction, Quality

MAPPING = """
version: 1
gateway: {{id: act-api, store: "sqlite:///{store}", api: {{host: 127.0.0.1, port: {api}}}}}
sources:
  plc: {{kind: modbus, host: 127.0.0.1, port: {plc}, poll_interval_ms: 50, timeout_s: 0.5}}
assets:
  pump:
    tags:
      temp: {{source: plc, address: {{table: holding, address: 0, type: uint16}}, deadband: 0.5}}
      running: {{source: plc, address: {{table: coil, address: 0}}}}
      setpoint:
        source: plc
        address: {{table: holding, address: 1, type: float32}}
        writable: true
models:
  health:
    file: {model}
    version: "1"
    assets: [pump]
    trigger: change
    min_interval_ms: 50
    window_s: 5
    min_window_s: 0
    features: [{{tag: temp, stat: last}}]
actions:
  slow-down:
    asset: pump
    description: Lower the setpoint while the pump runs hot
    target: {{modbus: {{source: plc, table: holding, address: {address}, type: float32}}}}
    trigger: {{model: health, label: fault, min_score: 0.9}}
    value: {{expression: "tags.setpoint - 50"}}
    interlocks: ["running == true"]
    limits: {{min: 800, max: 1500}}
    mode: {mode}
{more}"""

ACTION = "/api/v1/actions/slow-down"


@dataclass
class Rig:
    gateway: Gateway
    plc: PlcSimulator
    panel: ModbusWriter
    http: httpx.AsyncClient
    read: dict[str, str]
    operate: dict[str, str]
    operator: str  # the operate key's id

    async def setpoint(self) -> float:
        back = await self.panel.read(holding(1, "float32"))
        assert isinstance(back, float)
        return back

    async def set_temp(self, value: int) -> None:
        await self.panel.write(holding(0, "uint16"), value)

    def count(self, outcome: str) -> int:
        repo = ActionRepository(self.gateway.store)
        return len(repo.events(ActionEventFilter(outcome=outcome), limit=1000))

    async def outcome(self, outcome: str, count: int = 1) -> None:
        await wait_until(lambda: self.count(outcome) >= count, 10, what=f"{count} {outcome}")

    def writes_seen(self) -> int:
        return sum(1 for r in self.plc.requests if r.function_code == 16)

    async def action(self) -> dict[str, Any]:
        r = await self.http.get("/api/v1/actions", headers=self.read)
        assert r.status_code == 200, r.text
        [found] = r.json()
        assert isinstance(found, dict)
        return found


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, mode: str, more: str = "", address: int = 1) -> AsyncIterator[Rig]:
    plc = PlcSimulator(port=free_port(), update_interval_s=FROZEN, signals=plc_signals())
    model = logistic_classifier(tmp_path / "health.onnx", [1.0], -50.0)  # fault above 50
    port = free_port()
    path = tmp_path / "mapping.yaml"
    path.write_text(
        MAPPING.format(
            store=tmp_path / "b.db",
            api=port,
            plc=plc.port,
            model=model,
            mode=mode,
            more=more,
            address=address,
        )
    )
    settings = ModbusSourceSettings.model_validate(
        {"host": LOOPBACK, "port": plc.port, "unit": 1, "timeout_s": 1.0}
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(plc)
        panel = ModbusWriter("panel", settings)
        stack.push_async_callback(panel.aclose)
        gateway = await stack.enter_async_context(running_gateway(path))
        keys = ApiKeyRepository(gateway.store)
        _, read = keys.create("viewer", Scope.READ)
        operator, operate = keys.create("operator", Scope.OPERATE)
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}", timeout=10)
        )
        await first_readings(gateway, ("temp", "running", "setpoint"))
        yield Rig(
            gateway,
            plc,
            panel,
            http,
            {"X-API-Key": read},
            {"X-API-Key": operate},
            operator.key_id,
        )


async def test_the_list_shows_the_state_and_arming_through_rest_lets_a_prediction_write(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, "auto") as r:
        shown = await r.action()
        assert shown["applied"] == "shadow" and shown["mode"] == "auto"
        assert shown["armed"] is None and shown["fault"] is None and shown["pending"] is None
        assert shown["last_write"] is None and shown["served"] is True
        assert shown["asset"] == "pump" and shown["description"].startswith("Lower")
        target = shown["target"]
        assert (target["kind"], target["source"]) == ("modbus", "plc")
        assert target["address"]["address"] == 1 and target["address"]["type"] == "float32"
        # A read key cannot act; an unknown action is 404.
        denied = await r.http.post(f"{ACTION}/arm", json={}, headers=r.read)
        assert denied.status_code == 403, denied.text
        unknown = await r.http.post("/api/v1/actions/nope/arm", json={}, headers=r.operate)
        assert unknown.status_code == 404 and "slow-down" in unknown.json()["detail"]

        armed = await r.http.post(f"{ACTION}/arm", json={"comment": "tested"}, headers=r.operate)
        assert armed.status_code == 200, armed.text
        body = armed.json()
        assert body["applied"] == "auto"
        assert body["armed"]["version"] == "1" and body["armed"]["by"] == f"key:{r.operator}"
        assert body["armed"]["at"] is not None

        await r.set_temp(60)
        await r.outcome("written")
        assert await r.setpoint() == SETPOINT - 50
        last = (await r.action())["last_write"]
        assert isinstance(last, dict)
        assert (last["value"], last["read_back"], last["by"]) == (1150.0, 1150.0, "system")

        # The events, newest first, one page at a time; filtered by outcome.
        page = await r.http.get(f"{ACTION}/events", params={"limit": 1}, headers=r.read)
        assert page.status_code == 200, page.text
        [newest] = page.json()["items"]
        assert newest["outcome"] == "written" and newest["read_back"] == 1150.0
        cursor = page.json()["next_cursor"]
        assert cursor is not None
        rest = await r.http.get(
            f"{ACTION}/events", params={"limit": 1000, "cursor": cursor}, headers=r.read
        )
        assert rest.json()["items"][0]["outcome"] == "attempted", rest.text
        assert rest.json()["next_cursor"] is None
        only = await r.http.get(f"{ACTION}/events", params={"outcome": "attempted"}, headers=r.read)
        assert [e["outcome"] for e in only.json()["items"]] == ["attempted"], only.text
        wrong = await r.http.get(f"{ACTION}/events", params={"outcome": "x"}, headers=r.read)
        assert wrong.status_code == 422, wrong.text

        # The coverage counts the write as automatic.
        metrics = await r.http.get("/api/v1/feedback/metrics", headers=r.read)
        coverage = metrics.json()["actions"]
        assert (coverage["auto"], coverage["confirmed"], coverage["shadow"]) == (1, 0, 0)


async def test_a_confirmation_through_rest_writes_a_refusal_writes_nothing(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, "confirm", "    confirm_timeout_s: 60\n") as r:
        armed = await r.http.post(f"{ACTION}/arm", json={}, headers=r.operate)
        assert armed.status_code == 200, armed.text
        nothing = await r.http.post(
            f"{ACTION}/confirm", json={"pending_id": "x"}, headers=r.operate
        )
        assert nothing.status_code == 409, nothing.text

        await r.set_temp(60)
        await r.outcome("await_confirm")
        first = (await r.action())["pending"]
        assert isinstance(first, dict)
        assert first["value"] == SETPOINT - 50 and first["prediction_id"] is not None
        assert first["deadline"] is not None

        # A read key cannot refuse; a stale id is 409; the right one refuses: nothing written.
        denied = await r.http.post(
            f"{ACTION}/refuse", json={"pending_id": first["id"]}, headers=r.read
        )
        assert denied.status_code == 403, denied.text
        stale = await r.http.post(
            f"{ACTION}/refuse", json={"pending_id": str(uuid.uuid4())}, headers=r.operate
        )
        assert stale.status_code == 409 and first["id"] in stale.json()["detail"], stale.text
        refused = await r.http.post(
            f"{ACTION}/refuse",
            json={"pending_id": first["id"], "comment": "not now"},
            headers=r.operate,
        )
        assert refused.status_code == 200 and refused.json()["pending"] is None, refused.text
        await r.outcome("declined")
        assert await r.setpoint() == SETPOINT and r.writes_seen() == 0

        # The next request: the first one's id cannot confirm it; its own does, and writes.
        await r.set_temp(70)
        await r.outcome("await_confirm", 2)
        second = (await r.action())["pending"]
        assert isinstance(second, dict) and second["id"] != first["id"]
        stale = await r.http.post(
            f"{ACTION}/confirm", json={"pending_id": first["id"]}, headers=r.operate
        )
        assert stale.status_code == 409, stale.text
        assert await r.setpoint() == SETPOINT and r.writes_seen() == 0
        done = await r.http.post(
            f"{ACTION}/confirm", json={"pending_id": second["id"]}, headers=r.operate
        )
        assert done.status_code == 200, done.text
        assert done.json()["outcome"] == "written"
        assert done.json()["action"]["last_write"]["by"] == f"key:{r.operator}"
        assert await r.setpoint() == SETPOINT - 50 and r.writes_seen() == 1
        again = await r.http.post(
            f"{ACTION}/confirm", json={"pending_id": second["id"]}, headers=r.operate
        )
        assert again.status_code == 409 and "nothing waiting" in again.text, again.text

        events = await r.http.get(f"{ACTION}/events", params={"limit": 1000}, headers=r.read)
        by_outcome = {e["outcome"]: e for e in reversed(events.json()["items"])}
        assert by_outcome["declined"]["actor"] == f"key:{r.operator}"
        assert "not now" in by_outcome["declined"]["reason"]
        assert "refused" not in by_outcome
        assert by_outcome["confirmed"]["actor"] == f"key:{r.operator}"

        coverage = (await r.http.get("/api/v1/feedback/metrics", headers=r.read)).json()
        c = coverage["actions"]
        assert (c["auto"], c["confirmed"], c["refused_by_person"], c["refused_by_rules"]) == (
            0,
            1,
            1,
            0,
        )
        assert (c["await_confirm"], c["answered"]) == (2, 2)
        assert c["mean_time_to_acknowledge_s"] is not None and c["mean_time_to_acknowledge_s"] > 0


async def test_a_faulted_action_is_shown_with_its_reason_and_is_reset_before_arming(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, "auto", address=500) as r:  # outside the PLC's register map
        armed = await r.http.post(f"{ACTION}/arm", json={}, headers=r.operate)
        assert armed.status_code == 200, armed.text
        await r.set_temp(60)
        await r.outcome("fault")
        shown = await r.action()
        assert shown["applied"] == "fault" and shown["last_write"] is None
        assert "IllegalDataAddress" in shown["fault"]["reason"] and shown["fault"]["at"]
        again = await r.http.post(f"{ACTION}/arm", json={}, headers=r.operate)
        assert again.status_code == 409 and "reset it" in again.json()["detail"], again.text
        reset = await r.http.post(
            f"{ACTION}/reset", json={"comment": "map fixed"}, headers=r.operate
        )
        assert reset.status_code == 200, reset.text
        body = reset.json()
        assert (body["applied"], body["fault"], body["armed"]) == ("shadow", None, None)


# --- on a store alone ------------------------------------------------------------------------

T0 = time.time() - 3600.0


def _prediction(n: int) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"act/pump/health/{n}")),
        seq=n,
        asset="pump",
        model="health",
        version="1",
        sha256="12" * 32,
        value="fault",
        score=0.95,
        quality=Quality.GOOD,
        timestamp=T0 + n,
        input_age_s=0.1,
    )


def _event(
    at: float,
    outcome: str,
    actor: str = "system",
    action: str = "slow-down",
    reason: str = "",
    prediction: Prediction | None = None,
) -> NewActionEvent:
    return NewActionEvent(
        event_id=str(uuid.uuid4()),
        at=T0 + at,
        action=action,
        asset="pump",
        outcome=outcome,
        mode="auto",
        actor=actor,
        value=1150.0,
        prediction_id=prediction.id if prediction is not None else None,
        reason=reason,
    )


@contextlib.asynccontextmanager
async def store_api(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    _, key = ApiKeyRepository(store).create("operator", Scope.OPERATE)
    app = create_app(ApiServices.from_store(EmptyView(), store))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bridge.test",
            headers={"X-API-Key": key},
        ) as http:
            yield http
    finally:
        close_app(app)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_coverage_of_a_known_sequence_is_exact(backend: str, tmp_path: Path) -> None:
    with temp_store(backend, tmp_path, prefix="bridge_actions_api") as store:
        p = [_prediction(n) for n in range(3)]
        PredictionRepository(store).add_many(p)
        person = "key:op"
        ActionRepository(store, "act-api").save(
            None,
            [
                # Two automatic writes; an operator rejects the prediction of the first.
                _event(10, "attempted", prediction=p[0]),
                _event(11, "written", prediction=p[0]),
                _event(20, "written", prediction=p[1]),
                # A request confirmed after 10 s, one refused by a person after 30 s, one
                # confirmed after 4 s but refused by the rules judged again then.
                _event(100, "await_confirm", action="b"),
                _event(110, "confirmed", person, action="b"),
                _event(110, "written", person, action="b"),
                _event(200, "await_confirm", action="b"),
                _event(230, "declined", person, action="b", reason=f"refused by {person}"),
                _event(300, "await_confirm", action="b"),
                _event(304, "confirmed", person, action="b"),
                _event(
                    304,
                    "refused",
                    person,
                    action="b",
                    reason="confirmed, but refused at confirmation: running is false",
                ),
                # One expired, one refused by the interlocks, two shadow, one fault.
                _event(400, "await_confirm", action="b"),
                _event(460, "expired", action="b", reason="not confirmed in time"),
                _event(500, "refused", reason="interlock running == true is false"),
                _event(600, "shadow", action="c"),
                _event(601, "shadow", action="c"),
                _event(700, "fault", reason="read back 900.0 after writing 1150.0"),
                # Outside the period asked for.
                _event(5000, "written"),
            ],
        )
        LabelRepository(store).add(
            Feedback(p[0].id, "pump", "health", "reject", "op", "rest", p[0].timestamp, "fault")
        )
        async with store_api(store) as http:
            r = await http.get("/api/v1/feedback/metrics", params={"since": T0, "until": T0 + 1000})
            assert r.status_code == 200, r.text
            assert r.json()["actions"] == {
                "auto": 2,
                "confirmed": 2,
                "refused_by_person": 1,
                "refused_by_rules": 2,
                "expired": 1,
                "overridden": 1,
                "shadow": 2,
                "faults": 1,
                "await_confirm": 4,
                "answered": 3,
                "mean_time_to_acknowledge_s": pytest.approx((10 + 30 + 4) / 3),
            }
            # The rest of the metrics is what it was.
            assert r.json()["rejected"] == 1 and r.json()["predictions"] == 3

            # Apart from a gateway: the events are read from the store, the rest is 409.
            events = await http.get("/api/v1/actions/b/events", params={"limit": 2})
            assert [e["outcome"] for e in events.json()["items"]] == ["expired", "await_confirm"]
            assert events.json()["next_cursor"] is not None
            listed = await http.get("/api/v1/actions")
            assert listed.status_code == 409, listed.text
            assert listed.headers["content-type"] == "application/problem+json"
            arm = await http.post("/api/v1/actions/b/arm", json={})
            assert arm.status_code == 409 and "apart from a gateway" in arm.text, arm.text


@pytest.mark.parametrize("backend", BACKENDS)
async def test_retention_removes_old_action_events_with_the_predictions(
    backend: str, tmp_path: Path
) -> None:
    with temp_store(backend, tmp_path, prefix="bridge_actions_api") as store:
        now = time.time()
        day = 86400.0
        repo = ActionRepository(store, "act-api")
        old, kept = _event(0, "written"), _event(0, "shadow")
        repo.save(
            None,
            [
                replace(old, at=now - 3 * day),
                replace(kept, at=now - 0.5 * day),
            ],
        )
        job = RetentionJob(
            RetentionStore(store, "drift"),
            RetentionSettings(predictions_days=1),
            AlertRepository(store),
            "act-api",
        )
        deleted = await job.run_once()
        assert deleted["action_events"] == 1
        left = repo.events(ActionEventFilter(), limit=10)
        assert [e.event_id for e in left] == [kept.event_id]
