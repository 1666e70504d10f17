"""Write-back actions in the whole gateway on real sockets: a PLC simulator read by a Modbus
source (a temperature, a running coil, a float32 setpoint), a classifier that says `fault`
above 50 degrees, and one action per test writing the setpoint back to the same PLC.

Each test asserts on the simulator's registers (read by an independent client) and on the
stored action events: a fault lowers the setpoint within limits and the read-back matches; a
false interlock blocks it; the writes-per-hour limit caps a flapping model; an exception reply
or another value read back puts the action in `fault` (which lasts across a restart); a
`confirm` request expires without a write; `shadow` writes nothing; an input going Bad drops
an armed action to shadow."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from actions_rig import FROZEN, SETPOINT, first_readings, holding, plc_signals, running_gateway
from insight_models import logistic_classifier
from pymodbus.pdu import ModbusPDU
from support import LOOPBACK, free_port, wait_until

from bridge.config.actions import ModbusTarget
from bridge.connectors.modbus import ModbusSourceSettings
from bridge.connectors.modbus.write import ModbusWriter
from bridge.runtime.actions import FAULT_LABEL, ActionRunner
from bridge.runtime.pipeline import Gateway
from bridge.simulators.plc import PlcSimulator
from bridge.store.actions import ActionEvent, ActionEventFilter, ActionRepository
from bridge.store.alerts import AlertFilter, AlertRepository
from bridge.store.audit import AuditFilter, AuditRepository

CLAMPED = 900.0  # what the clamping PLC keeps instead of any setpoint written


class ClampingPlc(PlcSimulator):
    """A PLC whose program keeps its own setpoint: a write to holding 1-2 is stored as
    ``CLAMPED`` whatever was sent (the reply still says the write took)."""

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        pdu = super()._trace_pdu(sending, pdu)
        if not sending and pdu.function_code == 16 and pdu.address == 1:
            hi, lo = struct.unpack(">HH", struct.pack(">f", CLAMPED))
            pdu.registers = [hi, lo]
        return pdu


class MutePlc(PlcSimulator):
    """A PLC that takes a write of registers (FC16) and never answers it."""

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        packet = super()._trace_packet(sending, packet)
        if sending and len(packet) > 7 and packet[7] == 16:
            return b""
        return packet


MAPPING = """
version: 1
gateway: {{id: act, store: "sqlite:///{store}", api: {{enabled: false}}}}
sources:
  plc: {{kind: modbus, host: 127.0.0.1, port: {plc}, poll_interval_ms: 50, timeout_s: 0.5}}
  aux: {{kind: modbus, host: 127.0.0.1, port: {aux}, poll_interval_ms: 50, timeout_s: 0.5}}
assets:
  pump:
    tags:
      temp: {{source: plc, address: {{table: holding, address: 0, type: uint16}}, deadband: 0.5}}
      running: {{source: plc, address: {{table: coil, address: 0}}}}
      setpoint:
        source: plc
        address: {{table: holding, address: 1, type: float32}}
        writable: true
      load: {{source: aux, address: {{table: holding, address: 0, type: uint16}}, max_age_s: 1}}
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
{action}
"""

LOWER = """    target: {modbus: {source: plc, table: holding, address: 1, type: float32}}
    trigger: {model: health, label: fault, min_score: 0.9}
    value: {expression: "tags.setpoint - 50"}
    interlocks: ["running == true"]
"""


def lower(mode: str = "auto", limits: str = "{min: 800, max: 1500, max_writes_per_hour: 1}",
          **more: str) -> str:  # fmt: skip
    lines = [LOWER, f"    limits: {limits}\n", f"    mode: {mode}\n"]
    lines += [f"    {k}: {v}\n" for k, v in more.items()]
    return "".join(lines)


@dataclass
class Rig:
    gateway: Gateway
    plc: PlcSimulator
    aux: PlcSimulator
    panel: ModbusWriter  # the plant's own panel: sets the temperature, the running coil
    store_path: Path

    @property
    def actions(self) -> ActionRunner:
        assert self.gateway.actions is not None
        return self.gateway.actions

    def events(self, outcome: str | None = None) -> list[ActionEvent]:
        repo = ActionRepository(self.gateway.store)
        return list(reversed(repo.events(ActionEventFilter(outcome=outcome), limit=1000)))

    async def setpoint(self) -> float:
        back = await self.panel.read(holding(1, "float32"))
        assert isinstance(back, float)
        return back

    async def set_temp(self, value: int) -> None:
        await self.panel.write(holding(0, "uint16"), value)

    async def set_running(self, value: bool) -> None:
        await self.panel.write(
            ModbusTarget.model_validate({"source": "plc", "table": "coil", "address": 0}), value
        )

    def writes_seen(self) -> int:
        """FC16 requests (only the gateway writes float32 registers; the panel writes FC6/5)."""
        return sum(1 for r in self.plc.requests if r.function_code == 16)

    async def outcome(self, outcome: str, count: int = 1, timeout: float = 10) -> None:  # noqa: ASYNC109
        def seen() -> bool:
            return len(self.events(outcome)) >= count

        await wait_until(seen, timeout, what=f"{count} {outcome} event(s)")


Make = Callable[..., contextlib.AbstractAsyncContextManager[Rig]]


@pytest.fixture
def make_rig(tmp_path: Path) -> Make:
    @contextlib.asynccontextmanager
    async def make(action: str, plc_class: type[PlcSimulator] = PlcSimulator) -> AsyncIterator[Rig]:
        plc = plc_class(port=free_port(), update_interval_s=FROZEN, signals=plc_signals())
        aux = PlcSimulator(port=free_port(), update_interval_s=FROZEN, signals=plc_signals())
        model = logistic_classifier(tmp_path / "health.onnx", [1.0], -50.0)  # fault above 50
        path = tmp_path / "mapping.yaml"
        path.write_text(
            MAPPING.format(
                store=tmp_path / "b.db", plc=plc.port, aux=aux.port, model=model, action=action
            )
        )
        settings = ModbusSourceSettings.model_validate(
            {"host": LOOPBACK, "port": plc.port, "unit": 1, "timeout_s": 1.0}
        )
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(plc)
            await stack.enter_async_context(aux)
            panel = ModbusWriter("panel", settings)
            stack.push_async_callback(panel.aclose)
            gateway = await stack.enter_async_context(running_gateway(path))
            rig = Rig(gateway, plc, aux, panel, tmp_path / "b.db")
            await first_readings(gateway, ("temp", "running", "setpoint", "load"))
            yield rig

    return make


async def test_a_fault_prediction_lowers_the_setpoint_and_the_read_back_matches(
    make_rig: Make,
) -> None:
    async with make_rig(lower()) as rig:
        await rig.actions.arm("slow-down", "key:op1")
        await rig.set_temp(60)
        await rig.outcome("written")
        assert await rig.setpoint() == SETPOINT - 50
        [attempted] = rig.events("attempted")
        [written] = rig.events("written")
        assert (written.value, written.read_back, written.requested) == (1150.0, 1150.0, 1150.0)
        assert written.prediction_id is not None and written.model_version == "1"
        assert written.interlocks[0]["condition"] == "running == true"
        assert written.interlocks[0]["ok"] is True and written.interlocks[0]["value"] is True
        assert {c["name"] for c in written.checks} >= {"range", "per_hour", "value"}
        assert attempted.at <= written.at and attempted.prediction_id == written.prediction_id
        # The limit of one write an hour holds the next fault prediction back.
        await rig.set_temp(70)
        await rig.outcome("refused")
        assert await rig.setpoint() == SETPOINT - 50
        assert rig.writes_seen() == 1
        [status] = rig.actions.statuses()
        assert (status.applied, status.last_value, status.armed_by) == ("auto", 1150.0, "key:op1")


async def test_a_false_interlock_blocks_the_write(make_rig: Make) -> None:
    async with make_rig(lower()) as rig:
        await rig.actions.arm("slow-down", "key:op1")
        await rig.set_running(False)
        await wait_until(lambda: rig.gateway.table.get("pump.running").value is False, 5)
        await rig.set_temp(60)
        await rig.outcome("refused")
        [refused] = rig.events("refused")[:1]
        assert "interlock `running == true`" in refused.reason
        assert refused.interlocks[0]["ok"] is False
        assert await rig.setpoint() == SETPOINT
        assert rig.writes_seen() == 0 and rig.events("attempted") == []


async def test_the_writes_per_hour_limit_caps_a_flapping_model(make_rig: Make) -> None:
    async with make_rig(lower(limits="{min: 800, max: 1500, max_writes_per_hour: 2}")) as rig:
        await rig.actions.arm("slow-down", "key:op1")
        for k in range(5):  # fault, normal, fault, ... : five fault predictions
            await rig.set_temp(60 + k)
            await wait_until(
                lambda k=k: any(  # type: ignore[misc]
                    p.value == "fault" and p.inputs and p.inputs[0].value == 60 + k
                    for p in rig.gateway.fanout.latest.values()
                ),
                5,
                what=f"fault prediction {k}",
            )
            await rig.set_temp(30)
        await rig.outcome("refused", 3)
        assert len(rig.events("written")) == 2
        assert await rig.setpoint() == SETPOINT - 100
        assert rig.writes_seen() == 2
        refused = rig.events("refused")
        assert all("writes in the last hour (max 2)" in e.reason for e in refused)


async def test_an_exception_reply_faults_the_action_and_the_fault_lasts_across_a_restart(
    make_rig: Make, tmp_path: Path
) -> None:
    action = lower().replace("address: 1,", "address: 500,")  # outside the PLC's map
    async with make_rig(action) as rig:
        await rig.actions.arm("slow-down", "key:op1")
        await rig.set_temp(60)
        await rig.outcome("fault")
        [fault] = rig.events("fault")
        assert "IllegalDataAddress" in fault.reason and fault.read_back is None
        [status] = rig.actions.statuses()
        assert (status.applied, status.enabled) == ("fault", False)
        repo = AlertRepository(rig.gateway.store)
        # The alert is stored right after the fault's event.
        await wait_until(lambda: bool(repo.page(AlertFilter(label=FAULT_LABEL), 10)), 10)
        alerts = repo.page(AlertFilter(label=FAULT_LABEL), 10)
        assert [(a.asset, a.previous) for a in alerts] == [("pump", "slow-down")]
        assert rig.gateway.actions is not None
        assert rig.gateway.actions.health().state == "degraded"
        # Not retried: later fault predictions are refused without an attempt.
        await rig.set_temp(70)
        await wait_until(lambda: rig.actions.counters["refused_faulted"] >= 1, 5)
        assert len(rig.events("attempted")) == 1
    # A restart on the same store: still faulted, still refusing, until reset.
    async with running_gateway(tmp_path / "mapping.yaml") as again:
        assert again.actions is not None
        [status] = again.actions.statuses()
        assert status.fault == fault.reason and status.enabled is False
        await again.actions.reset("slow-down", "key:op2")
        [status] = again.actions.statuses()
        assert (status.fault, status.applied) == (None, "shadow")  # armed again by a person


async def test_another_value_read_back_faults_the_action(make_rig: Make) -> None:
    async with make_rig(lower(), ClampingPlc) as rig:
        await rig.actions.arm("slow-down", "key:op1")
        await rig.set_temp(60)
        await rig.outcome("fault")
        [fault] = rig.events("fault")
        assert (fault.value, fault.read_back) == (1150.0, CLAMPED)
        assert "read back 900.0 after writing 1150.0" in fault.reason
        assert rig.events("written") == []


async def test_confirm_expires_without_writing_and_a_confirmation_writes(make_rig: Make) -> None:
    # 3 s: the first request runs out while the test waits; the second is confirmed well inside.
    async with make_rig(
        lower("confirm", limits="{min: 800, max: 1500}", confirm_timeout_s="3")
    ) as rig:
        await rig.actions.arm("slow-down", "key:op1")
        await rig.set_temp(60)
        await rig.outcome("await_confirm")
        await rig.outcome("expired")
        assert await rig.setpoint() == SETPOINT and rig.writes_seen() == 0
        # The next request, confirmed in time, is written.
        await rig.set_temp(70)
        await rig.outcome("await_confirm", 2)
        assert await rig.actions.confirm("slow-down", "key:op2") == "written"
        assert await rig.setpoint() == SETPOINT - 50
        [confirmed] = rig.events("confirmed")
        [written] = rig.events("written")
        assert confirmed.actor == written.actor == "key:op2"
        # A third request, declined by a person.
        await rig.set_temp(20)
        await rig.set_temp(80)
        await rig.outcome("await_confirm", 3)
        await rig.actions.refuse("slow-down", "key:op3", comment="not now")
        assert await rig.setpoint() == SETPOINT - 50 and rig.writes_seen() == 1
        # The people's decisions and the write are ledger entries, in order, with who and why.
        ledger = AuditRepository(rig.gateway.store, "act").page(AuditFilter(action="action."), 100)
        assert [(e.action, e.actor, e.subject) for e in ledger] == [
            ("action.armed", "key:op1", "action:slow-down"),
            ("action.confirmed", "key:op2", "action:slow-down"),
            ("action.written", "key:op2", "action:slow-down"),
            ("action.declined", "key:op3", "action:slow-down"),
        ]
        assert isinstance(ledger[2].after, dict) and ledger[2].after["read_back"] == SETPOINT - 50
        assert "not now" in ledger[3].reason


async def test_shadow_writes_nothing(make_rig: Make) -> None:
    async with make_rig(lower("shadow", limits="{min: 800, max: 1500}")) as rig:
        await rig.set_temp(60)
        await rig.outcome("shadow")
        [shadow] = rig.events("shadow")[:1]
        assert shadow.value == SETPOINT - 50
        await asyncio.sleep(0.3)
        assert await rig.setpoint() == SETPOINT
        assert rig.writes_seen() == 0 and rig.events("attempted") == []


TAG_TRIGGERED = """    target: {modbus: {source: plc, table: holding, address: 1, type: float32}}
    trigger: {tag: "temp > 50"}
    value: {expression: "tags.load + 1000"}
    limits: {min: 800, max: 1500, deadband: 1}
    mode: auto
"""


async def test_an_input_going_bad_drops_an_armed_action_to_shadow(make_rig: Make) -> None:
    async with make_rig(TAG_TRIGGERED) as rig:
        await rig.actions.arm("slow-down", "key:op1")
        await rig.set_temp(60)
        await rig.outcome("written")
        assert await rig.setpoint() == 1020.0  # load is 20 on the aux PLC
        await rig.aux.stop()  # the input's source goes away: `load` turns Bad
        await wait_until(lambda: rig.gateway.table.get("pump.load").quality.label != "Good", 10)
        await rig.set_temp(61)  # the trigger fires again
        await wait_until(lambda: rig.actions.statuses()[0].fallback is not None, 10)
        [status] = rig.actions.statuses()
        assert status.applied == "shadow" and "pump.load" in (status.fallback or "")
        stored = ActionRepository(rig.gateway.store).states()["slow-down"]
        assert stored.fallback == status.fallback
        # Latched: the input back does not write again until a person re-arms.
        writes = rig.writes_seen()
        await rig.aux.start()
        await asyncio.sleep(0.5)
        assert rig.writes_seen() == writes and len(rig.events("written")) == 1


async def test_a_write_unanswered_within_its_timeout_faults_the_action(make_rig: Make) -> None:
    """The mapping's read_back_timeout_s bounds the wait (below the source's own 0.5 s)."""
    async with make_rig(lower(read_back_timeout_s="0.2"), MutePlc) as rig:
        await rig.actions.arm("slow-down", "key:op1")
        await rig.set_temp(60)
        await rig.outcome("fault")
        [fault] = rig.events("fault")
        assert fault.reason == ("no answer to the write within 0.2 s; it may have taken effect"), (
            fault.reason
        )
        assert rig.writes_seen() == 1 and rig.events("written") == []


async def test_a_reload_that_changes_an_action_says_it_applies_at_the_next_start(
    make_rig: Make, tmp_path: Path
) -> None:
    async with make_rig(lower()) as rig:
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text(mapping.read_text().replace("max: 1500", "max: 1400"))
        assert rig.gateway.reloader is not None
        summary = await rig.gateway.reloader.reload()
        assert "actions.slow-down" in summary.restart_needed, summary
        # The running action keeps the limits it started with.
        assert rig.actions.actions["slow-down"].limits.max == 1500
