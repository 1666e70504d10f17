"""Write-back through an OPC UA source's settings: against asyncua's server (writable and
read-only variables; what the server holds is read on its side, not through the writer), a
silent link (tests/faultproxy.py) followed by a call that reconnects, and against node-opcua's
server (tests/peers/write_plant.js; skipped when node-opcua is not installed), a stack
independent of asyncua that also answers BadNotWritable."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
from asyncua import Server, ua
from faultproxy import FaultProxy, Mode
from support import LOOPBACK, free_port

from bridge.config.actions import OpcUaTarget
from bridge.connectors.opcua import OpcUaSourceSettings
from bridge.connectors.opcua.write import OpcUaWriter
from bridge.errors import NotRepresentable, WriteRefused, WriteTimedOut
from bridge.plugins import source_kinds

T = TypeVar("T")
NS = "urn:test:write"
TIMEOUT_S = 1.0
BOUND_S = 3 * TIMEOUT_S + 5  # a call opens a session and sends once: it ends well before
ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "bench" / "nodeopcua" / "node_modules"
NODE_DEADLINE_S = 60.0  # the first node start reads ~70 MB of modules from a cold cache

VARIABLES = {
    "w.bool": ua.VariantType.Boolean,
    "w.int16": ua.VariantType.Int16,
    "w.int32": ua.VariantType.Int32,
    "w.float32": ua.VariantType.Float,
    "w.float64": ua.VariantType.Double,
}
CASES: dict[str, list[bool | int | float]] = {
    "bool": [True, False],
    "int16": [-32768, 32767, 1234],
    "int32": [-(2**31), 2**31 - 1, 70000],
    "float32": [struct.unpack(">f", struct.pack(">f", v))[0] for v in (1.5, -0.1, 3.0e38)],
    "float64": [0.1, -1e300, 1234.5678],
}


def target(node: str, type_: str) -> OpcUaTarget:
    return OpcUaTarget.model_validate({"source": "plant", "node": node, "type": type_})


def settings(endpoint: str) -> OpcUaSourceSettings:
    return OpcUaSourceSettings.model_validate({"endpoint": endpoint, "timeout_s": TIMEOUT_S})


async def bounded(call: Awaitable[T]) -> T:
    async with asyncio.timeout(BOUND_S):
        return await call


class Plant:
    def __init__(self, server: Server, index: int, endpoint: str) -> None:
        self.server, self.index, self.endpoint = server, index, endpoint

    async def held(self, name: str) -> ua.Variant:
        """The variable's value as the server holds it (its own address space)."""
        node = self.server.get_node(ua.NodeId(name, self.index))
        dv = await node.read_data_value()
        assert dv.Value is not None
        return dv.Value


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    port = free_port()
    endpoint = f"opc.tcp://{LOOPBACK}:{port}"
    server = Server()
    await server.init()
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    index = await server.register_namespace(NS)
    folder = await server.nodes.objects.add_object(index, "Plant")
    for name, vtype in VARIABLES.items():
        initial: bool | int | float = False if vtype == ua.VariantType.Boolean else 0
        if vtype in (ua.VariantType.Float, ua.VariantType.Double):
            initial = 0.0
        var = await folder.add_variable(
            ua.NodeId(name, index), name, ua.Variant(initial, vtype), datatype=None
        )
        await var.set_writable()
    await folder.add_variable(ua.NodeId("ro", index), "ro", ua.Variant(5.0, ua.VariantType.Double))
    await server.start()
    try:
        yield Plant(server, index, endpoint)
    finally:
        await server.stop()


async def test_every_type_is_written_with_its_variant_type_and_read_back(plant: Plant) -> None:
    factory = source_kinds()["opcua"].writer
    assert factory is not None
    writer = factory("plant", settings(plant.endpoint))
    try:
        for type_, values in CASES.items():
            name = f"w.{type_}"
            for value in values:
                await writer.write(target(f"nsu={NS};s={name}", type_), value)
                held = await plant.held(name)
                assert held.VariantType == VARIABLES[name]
                assert held.Value == value
                back = await writer.read(target(f"nsu={NS};s={name}", type_))
                assert back == value and type(back) is type(value), (type_, value, back)
    finally:
        await writer.aclose()


async def test_a_value_the_server_changed_after_the_write_is_read_back_as_it_is(
    plant: Plant,
) -> None:
    writer = OpcUaWriter("plant", settings(plant.endpoint))
    node = target(f"nsu={NS};s=w.float64", "float64")
    try:
        await writer.write(node, 42.0)
        assert await writer.read(node) == 42.0
        await plant.server.get_node(ua.NodeId("w.float64", plant.index)).write_value(
            ua.Variant(17.0, ua.VariantType.Double)
        )
        assert await writer.read(node) == 17.0
    finally:
        await writer.aclose()


async def test_refusals_name_the_servers_status(plant: Plant) -> None:
    writer = OpcUaWriter("plant", settings(plant.endpoint))
    try:
        # asyncua answers a non-admin's write of a read-only variable with BadUserAccessDenied
        # (node-opcua says BadNotWritable: below).
        with pytest.raises(WriteRefused) as refused:
            await writer.write(target(f"nsu={NS};s=ro", "float64"), 1.0)
        assert refused.value.status == "BadUserAccessDenied"
        assert "BadUserAccessDenied" in str(refused.value)
        assert (await plant.held("ro")).Value == 5.0
        with pytest.raises(WriteRefused) as refused:
            await writer.write(target(f"nsu={NS};s=w.float64", "int32"), 3)
        assert refused.value.status == "BadTypeMismatch"
        with pytest.raises(WriteRefused) as refused:
            await writer.write(target(f"nsu={NS};s=nothing", "float64"), 3.0)
        # asyncua checks a non-admin's rights first, and a node that is not there has none.
        assert refused.value.status in ("BadNodeIdUnknown", "BadUserAccessDenied")
        with pytest.raises(WriteRefused) as refused:
            await writer.read(target(f"nsu={NS};s=nothing", "float64"))
        assert refused.value.status == "BadNodeIdUnknown"
        with pytest.raises(WriteRefused) as refused:
            await writer.write(target("nsu=urn:nowhere;s=w.float64", "float64"), 3.0)
        assert "urn:nowhere" in str(refused.value)
        # Refusals of a node say nothing against the session: it is kept.
        await writer.write(target(f"nsu={NS};s=w.int16", "int16"), 9)
        assert (await plant.held("w.int16")).Value == 9
        assert writer.connects == 1
    finally:
        await writer.aclose()


async def test_values_the_type_cannot_hold_are_refused_before_sending(plant: Plant) -> None:
    writer = OpcUaWriter("plant", settings(plant.endpoint))
    cases: list[tuple[str, bool | int | float]] = [
        ("int16", 40000),
        ("int32", 1.5),
        ("float32", 1e39),
        ("float64", float("inf")),
        ("int16", True),
        ("bool", 1),
    ]
    try:
        for type_, value in cases:
            with pytest.raises(NotRepresentable):
                await writer.write(target(f"nsu={NS};s=w.{type_}", type_), value)
    finally:
        await writer.aclose()
    assert writer.connects == 0  # nothing was sent, not even a session opened


async def test_a_silent_link_times_out_within_the_bound_and_the_next_call_reconnects(
    plant: Plant,
) -> None:
    port = int(plant.endpoint.rsplit(":", 1)[1])
    async with FaultProxy(LOOPBACK, port) as proxy:
        writer = OpcUaWriter("plant", settings(f"opc.tcp://{proxy.url_host_port}"))
        node = target(f"nsu={NS};s=w.int32", "int32")
        try:
            await bounded(writer.write(node, 1))
            proxy.set_mode(Mode.DEAF)  # the request reaches the server, its answer is lost
            with pytest.raises(WriteTimedOut) as timed_out:
                await bounded(writer.write(node, 2))
            assert timed_out.value.maybe_written is True
            assert "may have taken effect" in str(timed_out.value)
            proxy.set_mode(Mode.PASS)
            before = writer.connects
            assert await bounded(writer.read(node)) == 2  # the lost-answer write took
            assert writer.connects == before + 1
        finally:
            await writer.aclose()


# --- node-opcua -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def node_plant(port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        "tests/peers/write_plant.js",
        str(port),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(NODE_DEADLINE_S):
            while (raw := await proc.stdout.readline()).strip() != b"ready":
                if not raw:
                    assert proc.stderr is not None
                    err = (await proc.stderr.read()).decode(errors="replace")
                    raise AssertionError(f"node exited {await proc.wait()}: {err[-2000:]}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.mark.skipif(
    not (MODULES / "node-opcua-server").is_dir(),
    reason="node-opcua not installed: run bench/setup_nodeopcua.sh (needs npm)",
)
async def test_against_a_nodeopcua_server() -> None:
    port = free_port()
    async with node_plant(port):
        writer = OpcUaWriter("nodeplant", settings(f"opc.tcp://{LOOPBACK}:{port}"))
        try:
            for type_, values in CASES.items():
                node = target(f"nsu={NS};s=w.{type_}", type_)
                for value in values:
                    await bounded(writer.write(node, value))
                    back = await bounded(writer.read(node))
                    assert back == value and type(back) is type(value), (type_, value, back)
            with pytest.raises(WriteRefused) as refused:
                await bounded(writer.write(target(f"nsu={NS};s=ro", "float64"), 1.0))
            assert refused.value.status == "BadNotWritable"
            assert await bounded(writer.read(target(f"nsu={NS};s=ro", "float64"))) == 5.0
            with pytest.raises(WriteRefused) as refused:
                await bounded(writer.write(target(f"nsu={NS};s=w.float64", "int32"), 3))
            assert refused.value.status == "BadTypeMismatch"
        finally:
            await writer.aclose()
