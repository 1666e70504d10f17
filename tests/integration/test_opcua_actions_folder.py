"""The HMI server's ``Actions`` folder in the whole gateway on real sockets: a PLC simulator read
by a Modbus source, a classifier that says `fault` above 50 degrees, a `confirm` action that
lowers a float32 setpoint on the same PLC, and the gateway's OPC UA server with an operator
and a reader. asyncua clients browse the folder, subscribe to it, and call its methods; a
node-opcua client (an independent stack) browses, reads and calls Confirm too."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from actions_rig import FROZEN, SETPOINT, first_readings, holding, plc_signals, running_gateway
from asyncua import Client, ua
from asyncua.ua.status_codes import StatusCodes
from insight_models import logistic_classifier
from support import LOOPBACK, free_port, wait_until

from bridge.connectors.modbus import ModbusSourceSettings
from bridge.connectors.modbus.write import ModbusWriter
from bridge.runtime.actions import ActionRunner
from bridge.runtime.pipeline import Gateway
from bridge.simulators.plc import PlcSimulator
from bridge.store.actions import ActionEventFilter, ActionRepository

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "peers" / "interop"
MODULES = ROOT / "bench" / "nodeopcua" / "node_modules"
NS = "urn:test:actions"
OPERATOR = ("ops", "0ps-pw")
READER = ("viewer", "v1ew-pw")
DEADLINE_S = 60.0

MAPPING = """
version: 1
gateway: {{id: act, store: "sqlite:///{store}", api: {{enabled: false}}}}
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
    target: {{modbus: {{source: plc, table: holding, address: 1, type: float32}}}}
    trigger: {{model: health, label: fault, min_score: 0.9}}
    value: {{expression: "tags.setpoint - 50"}}
    interlocks: ["running == true"]
    limits: {{min: 800, max: 1500}}
    mode: confirm
    confirm_timeout_s: 120
  watch:
    asset: pump
    target: {{modbus: {{source: plc, table: holding, address: 1, type: float32}}}}
    trigger: {{model: health, label: fault}}
    value: {{constant: 1000}}
    limits: {{min: 800, max: 1500}}
outputs:
  hmi:
    kind: opcua-server
    endpoint: "opc.tcp://127.0.0.1:{hmi}"
    namespace: "{ns}"
    security_policies: ["None"]
    users:
      - {{username: ops, password: "${{ACT_OPS_PW}}", role: operator}}
      - {{username: viewer, password: "${{ACT_VIEWER_PW}}", role: reader}}
"""


@dataclass
class Rig:
    gateway: Gateway
    plc: PlcSimulator
    panel: ModbusWriter  # the plant's own panel: sets the temperature
    url: str

    @property
    def actions(self) -> ActionRunner:
        assert self.gateway.actions is not None
        return self.gateway.actions

    async def setpoint(self) -> float:
        back = await self.panel.read(holding(1, "float32"))
        assert isinstance(back, float)
        return back

    async def set_temp(self, value: int) -> None:
        await self.panel.write(holding(0, "uint16"), value)

    def outcomes(self) -> list[tuple[str, str, str]]:
        repo = ActionRepository(self.gateway.store)
        events = reversed(repo.events(ActionEventFilter(action="slow-down"), limit=1000))
        return [(e.outcome, e.actor, e.reason) for e in events]

    async def pending_id(self) -> str:
        def waiting() -> bool:
            return any(s.pending_id for s in self.actions.statuses() if s.name == "slow-down")

        await wait_until(waiting, 20, what="a request waiting for confirmation")
        [status] = [s for s in self.actions.statuses() if s.name == "slow-down"]
        assert status.pending_id is not None
        return status.pending_id


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv("ACT_OPS_PW", OPERATOR[1])
    monkeypatch.setenv("ACT_VIEWER_PW", READER[1])
    plc = PlcSimulator(port=free_port(), update_interval_s=FROZEN, signals=plc_signals())
    model = logistic_classifier(tmp_path / "health.onnx", [1.0], -50.0)  # fault above 50
    hmi = free_port()
    path = tmp_path / "mapping.yaml"
    path.write_text(
        MAPPING.format(store=tmp_path / "b.db", plc=plc.port, model=model, hmi=hmi, ns=NS)
    )
    settings = ModbusSourceSettings.model_validate(
        {"host": LOOPBACK, "port": plc.port, "unit": 1, "timeout_s": 1.0}
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(plc)
        panel = ModbusWriter("panel", settings)
        stack.push_async_callback(panel.aclose)
        gateway = await stack.enter_async_context(running_gateway(path))
        await first_readings(gateway, ("temp", "running", "setpoint"))
        yield Rig(gateway, plc, panel, f"opc.tcp://127.0.0.1:{hmi}")


@contextlib.asynccontextmanager
async def session(url: str, user: tuple[str, str]) -> AsyncIterator[tuple[Client, int]]:
    client = Client(url, timeout=10)
    client.set_user(user[0])
    client.set_password(user[1])
    async with client:
        yield client, await client.get_namespace_index(NS)


async def call(url: str, user: tuple[str, str], action: str, method: str, *args: str) -> Any:
    async with session(url, user) as (client, ns):
        obj = client.get_node(ua.NodeId(f"Actions.{action}", ns))
        return await obj.call_method(ua.NodeId(f"Actions.{action}.{method}", ns), *args)


async def read(client: Client, ns: int, action: str, field: str) -> Any:
    return await client.get_node(ua.NodeId(f"Actions.{action}.{field}", ns)).read_value()


class Seen:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.append(val)


async def test_the_folder_shows_each_action_and_is_read_only(rig: Rig) -> None:
    async with session(rig.url, OPERATOR) as (client, ns):
        folder = client.get_node(ua.NodeId("Actions", ns))
        names = sorted([(await c.read_browse_name()).Name for c in await folder.get_children()])
        assert names == ["slow-down", "watch"]
        obj = client.get_node(ua.NodeId("Actions.slow-down", ns))
        children = {(await c.read_browse_name()).Name for c in await obj.get_children()}
        assert children >= {"Mode", "State", "Armed", "PendingId", "Arm", "Confirm", "Refuse"}
        assert await read(client, ns, "slow-down", "Mode") == "confirm"
        assert await read(client, ns, "slow-down", "State") == "unarmed"
        assert await read(client, ns, "slow-down", "Armed") is False
        assert await read(client, ns, "watch", "Mode") == "shadow"
        last = await client.get_node(ua.NodeId("Actions.slow-down.LastValue", ns)).read_data_value(
            raise_on_bad_status=False
        )
        assert last.StatusCode.value == StatusCodes.BadNoValue
        # Nobody writes a status: not even an operator.
        node = client.get_node(ua.NodeId("Actions.slow-down.State", ns))
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await node.write_value(ua.DataValue(ua.Variant("armed", ua.VariantType.String)))
        assert refused.value.code == StatusCodes.BadUserAccessDenied


async def test_arm_then_confirm_by_an_operator_writes_and_a_subscription_sees_it(
    rig: Rig,
) -> None:
    async with session(rig.url, READER) as (client, ns):
        seen = Seen()
        sub = await client.create_subscription(50, seen)
        state = client.get_node(ua.NodeId("Actions.slow-down.State", ns))
        pending = client.get_node(ua.NodeId("Actions.slow-down.PendingId", ns))
        await sub.subscribe_data_change([state, pending])
        await wait_until(lambda: "unarmed" in seen.values, 10, what="the initial state")

        # A reader may look, not act.
        with pytest.raises(ua.UaStatusCodeError) as denied:
            await call(rig.url, READER, "slow-down", "Arm", "")
        assert denied.value.code == StatusCodes.BadUserAccessDenied

        assert await call(rig.url, OPERATOR, "slow-down", "Arm", "checked the pump") == "armed"
        await wait_until(lambda: "armed" in seen.values, 10, what="armed seen by the HMI")
        assert await read(client, ns, "slow-down", "ModelVersion") == "1"

        await rig.set_temp(60)
        pending_id = await rig.pending_id()
        await wait_until(lambda: pending_id in seen.values, 10, what="the request seen")
        assert await read(client, ns, "slow-down", "PendingValue") == SETPOINT - 50
        assert isinstance(await read(client, ns, "slow-down", "PendingDeadline"), object)

        with pytest.raises(ua.UaStatusCodeError) as reader_confirm:
            await call(rig.url, READER, "slow-down", "Confirm", pending_id, "")
        assert reader_confirm.value.code == StatusCodes.BadUserAccessDenied
        assert await rig.setpoint() == SETPOINT

        stale = "00000000-0000-0000-0000-000000000000"
        with pytest.raises(ua.UaStatusCodeError) as wrong:
            await call(rig.url, OPERATOR, "slow-down", "Confirm", stale, "")
        assert wrong.value.code == StatusCodes.BadInvalidState
        assert await rig.setpoint() == SETPOINT

        outcome = await call(rig.url, OPERATOR, "slow-down", "Confirm", pending_id, "go")
        assert outcome == "written"
        assert await rig.setpoint() == SETPOINT - 50
        await wait_until(lambda: seen.values[-1] == "", 10, what="the request gone")
        assert await read(client, ns, "slow-down", "LastValue") == SETPOINT - 50
        assert await read(client, ns, "slow-down", "ReadBack") == SETPOINT - 50
        assert await read(client, ns, "slow-down", "LastWriteTime") is not None

        # The id answered is gone: confirming it again changes nothing.
        with pytest.raises(ua.UaStatusCodeError) as again:
            await call(rig.url, OPERATOR, "slow-down", "Confirm", pending_id, "")
        assert again.value.code == StatusCodes.BadInvalidState
    assert ("confirmed", "opcua:ops", "go") in rig.outcomes()
    assert ("written", "opcua:ops", "") in [(o, a, "") for o, a, _ in rig.outcomes()]


async def test_refuse_drops_the_request_and_arm_of_a_shadow_action_is_invalid(rig: Rig) -> None:
    await call(rig.url, OPERATOR, "slow-down", "Arm", "")
    await rig.set_temp(60)
    pending_id = await rig.pending_id()
    state = await call(rig.url, OPERATOR, "slow-down", "Refuse", pending_id, "not now")
    assert state == "armed"
    assert await rig.setpoint() == SETPOINT
    assert ("declined", "opcua:ops", "refused by opcua:ops: not now") in rig.outcomes()
    with pytest.raises(ua.UaStatusCodeError) as nothing:
        await call(rig.url, OPERATOR, "slow-down", "Refuse", pending_id, "")
    assert nothing.value.code == StatusCodes.BadInvalidState
    with pytest.raises(ua.UaStatusCodeError) as shadow:
        await call(rig.url, OPERATOR, "watch", "Arm", "")
    assert shadow.value.code == StatusCodes.BadInvalidState


# --- node-opcua ---------------------------------------------------------------------------


async def run_node(name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every JSON line of ``tests/peers/interop/<name>.js`` (exit code 0 required)."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPTS / f"{name}.js"),
        json.dumps({"timeoutS": DEADLINE_S, **config}),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(DEADLINE_S + 10):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [json.loads(t) for t in out.decode().splitlines() if t.startswith("{")]
    assert proc.returncode == 0, f"{name}.js exited {proc.returncode}: {err.decode()[-2000:]}"
    return lines


@pytest.mark.skipif(
    not (MODULES / "node-opcua-client").is_dir(),
    reason="node-opcua not installed: run bench/setup_nodeopcua.sh (needs npm)",
)
async def test_nodeopcua_browses_reads_and_confirms(rig: Rig) -> None:
    def config(user: tuple[str, str], **scenario: Any) -> dict[str, Any]:
        login = {"username": user[0], "password": user[1]}
        return {"endpoint": rig.url, "security": {}, "user": login, **scenario}

    nodes = await run_node("browse", config(READER, root=f"nsu={NS};s=Actions"))
    by_id = {n["node"]: n for n in nodes if "node" in n}
    state = next(v for k, v in by_id.items() if k.endswith("s=Actions.slow-down.State"))
    assert state["attributes"]["Value"] == "unarmed"
    assert state["attributes"]["AccessLevel"] == 1  # CurrentRead only
    assert any(k.endswith("s=Actions.watch.Mode") for k in by_id)

    await rig.actions.arm("slow-down", "key:op1")
    await rig.set_temp(60)
    pending_id = await rig.pending_id()
    inputs = [{"dataType": "String", "value": v} for v in (pending_id, "from node-opcua")]
    obj, method = f"nsu={NS};s=Actions.slow-down", f"nsu={NS};s=Actions.slow-down.Confirm"
    [refused] = await run_node("call", config(READER, object=obj, method=method, inputs=inputs))
    assert refused["status"] == "BadUserAccessDenied"
    [done] = await run_node("call", config(OPERATOR, object=obj, method=method, inputs=inputs))
    assert (done["status"], done["outputs"]) == ("Good", ["written"])
    assert await rig.setpoint() == SETPOINT - 50


async def test_a_reload_that_rebuilds_the_server_shows_the_actions_at_once(
    rig: Rig, tmp_path: Path
) -> None:
    """The new server shows each action's state as it is, not only from its next change."""
    await rig.actions.arm("slow-down", "key:op1")
    async with session(rig.url, READER) as (client, ns):
        assert await read(client, ns, "slow-down", "State") == "armed"
    mapping = tmp_path / "mapping.yaml"
    port = free_port()
    mapping.write_text(mapping.read_text().replace(rig.url, f"opc.tcp://127.0.0.1:{port}"))
    assert rig.gateway.reloader is not None
    await rig.gateway.reloader.reload()
    url = f"opc.tcp://127.0.0.1:{port}"

    async def shown() -> bool:
        with contextlib.suppress(OSError, TimeoutError, ua.UaError):
            async with session(url, READER) as (client, ns):
                return bool(await read(client, ns, "slow-down", "State") == "armed")
        return False

    await wait_until(shown, 20, 0.2, "the armed action on the rebuilt server")
