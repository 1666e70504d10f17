"""Fields of server-defined structures (``address: {node, field}``) against a real asyncua server
that defines its structures at run time, in a child process of its own.

The server runs in a child so that this process knows nothing of its types: asyncua keeps
decoded structure classes process-wide, and a server in the test's own process would hand its
classes to the client for free (the source's loading of the definitions would go untested).
Run as a script (``python test_opcua_structures.py PORT``) this file is that server: it prints
"ready", rewrites its values every 0.2 s and stops at end of its stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import pytest_asyncio
import yaml
from asyncua import ua
from asyncua.common.manage_nodes import create_data_type, create_encoding
from asyncua.common.structures104 import new_struct, new_struct_field
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua.convert import make_node_id

NS = "urn:bridge:test:structures"
TESTS = Path(__file__).resolve().parent.parent
UPDATE_S = 0.2


# ---------------------------------------------------------------- the server (child process)


@dataclass
class Opaque:
    """A structure the server encodes but whose DataTypeDefinition it does not publish."""

    X: ua.Int32


def _status(n: int) -> Any:
    return ua.BridgeTestMotorStatus(  # type: ignore[attr-defined]
        Speed=100.0 + n * 0.5, Running=n % 2 == 0, Label=f"run {n}", Set_Point=7.5
    )


def _motor(n: int) -> Any:
    return ua.BridgeTestMotor(  # type: ignore[attr-defined]
        Status=_status(n), Temps=[20.0 + n, 30.0 + n], Count=n
    )


def _ext(value: Any) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.ExtensionObject)


async def _serve(port: int) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NS)
    status_type, _ = await new_struct(
        server,
        idx,
        "BridgeTestMotorStatus",
        [
            new_struct_field("Speed", ua.VariantType.Double),
            new_struct_field("Running", ua.VariantType.Boolean),
            new_struct_field("Label", ua.VariantType.String),
            new_struct_field("Set-Point", ua.VariantType.Double),  # not a Python name
        ],
    )
    motor_type, _ = await new_struct(
        server,
        idx,
        "BridgeTestMotor",
        [
            new_struct_field("Status", status_type),
            new_struct_field("Temps", ua.VariantType.Double, array=True),
            new_struct_field("Count", ua.VariantType.UInt32),
        ],
    )
    opaque_type = await create_data_type(
        server.nodes.base_structure_type, make_node_id("BridgeTestOpaque", idx), "BridgeTestOpaque"
    )
    encoding = await create_encoding(
        opaque_type, make_node_id("BridgeTestOpaque.Binary", idx), "Default Binary"
    )
    await server.load_data_type_definitions()
    ua.register_extension_object("BridgeTestOpaque", encoding.nodeid, Opaque, opaque_type.nodeid)

    objects = server.nodes.objects
    motor = await objects.add_variable(
        make_node_id("Motor1", idx), ua.QualifiedName("Motor1", idx), _ext(_motor(0))
    )
    status = await objects.add_variable(
        make_node_id("Status1", idx), ua.QualifiedName("Status1", idx), _ext(_status(0))
    )
    motors = await objects.add_variable(
        make_node_id("Motors", idx),
        ua.QualifiedName("Motors", idx),
        _ext([_motor(0), _motor(1000)]),
        datatype=motor_type.nodeid,
    )
    await motors.write_value_rank(ua.ValueRank.OneDimension)
    opaque = await objects.add_variable(
        make_node_id("Opaque1", idx), ua.QualifiedName("Opaque1", idx), _ext(Opaque(ua.Int32(5)))
    )
    plain = await objects.add_variable(
        make_node_id("Plain", idx), ua.QualifiedName("Plain", idx), 1.5, ua.VariantType.Double
    )

    async def update() -> None:
        n = 0
        while True:
            await asyncio.sleep(UPDATE_S)
            n += 1
            await motor.write_value(_ext(_motor(n)))
            await status.write_value(_ext(_status(n)))
            await motors.write_value(_ext([_motor(n), _motor(1000 + n)]))
            await opaque.write_value(_ext(Opaque(ua.Int32(n))))
            await plain.write_value(ua.Variant(1.5 + n, ua.VariantType.Double))

    async with server:
        task = asyncio.create_task(update())
        print("ready", flush=True)
        try:
            await asyncio.to_thread(sys.stdin.buffer.read)  # returns at end of stdin
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
    sys.exit(0)


# ---------------------------------------------------------------- the tests

from support import free_port  # noqa: E402 (tests/ is on the path of the test run only)

from bridge.connectors.opcua import OpcUaAddress, OpcUaSource, OpcUaSourceSettings  # noqa: E402
from bridge.connectors.opcua._structures import (  # noqa: E402
    FIELD_PATH_HINT,
    FieldReader,
    parse_field_path,
)
from bridge.connectors.opcua._worker import OpcUaWorkerSource  # noqa: E402
from bridge.errors import ConfigError  # noqa: E402
from bridge.prepare import prepare  # noqa: E402
from bridge.types import Quality, SourceTag, TagSample  # noqa: E402

on_module_loop = pytest.mark.asyncio(loop_scope="module")


class _Samples(Protocol):
    def samples(self) -> AsyncIterator[Sequence[TagSample]]: ...


@dataclass
class Peer:
    endpoint: str
    process: asyncio.subprocess.Process


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def peer() -> AsyncIterator[Peer]:
    port = free_port()
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"ready", line
        yield Peer(f"opc.tcp://127.0.0.1:{port}/", proc)
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def tag(name: str, node: str, field: str | None = None) -> SourceTag:
    return SourceTag(name, OpcUaAddress(node=f"nsu={NS};s={node}", field=field))


TAGS = [
    tag("speed", "Status1", "Speed"),
    tag("nested", "Motor1", "Status.Speed"),
    tag("running", "Motor1", "Status.Running"),
    tag("label", "Motor1", "Status.Label"),
    tag("set_point", "Motor1", "Status.Set-Point"),
    tag("count", "Motor1", "Count"),
    tag("temp", "Motor1", "Temps[1]"),
    tag("second", "Motors", "[1].Status.Speed"),
    tag("wrong", "Motor1", "Status.Sped"),
    tag("whole", "Motor1", "Status"),
    tag("too_far", "Motor1", "Temps[5]"),
    tag("opaque", "Opaque1", "X"),
    tag("plain", "Plain"),
]


def settings(endpoint: str, **kw: object) -> OpcUaSourceSettings:
    return OpcUaSourceSettings.model_validate(
        {"endpoint": endpoint, "timeout_s": 3, "watchdog_s": 5, **kw}
    )


async def collect(source: _Samples, until: set[str], within: float = 20.0) -> dict[str, TagSample]:
    """Latest sample per tag until every tag in ``until`` was seen; bounded by ``within``."""
    latest: dict[str, TagSample] = {}
    async with asyncio.timeout(within):
        async for batch in source.samples():
            for sample in batch:
                latest[sample.tag] = sample
            if until <= latest.keys():
                return latest
    raise AssertionError("samples() ended early")


def _step(value: object, base: float, step: float) -> int:
    """n for a value written as base + n * step (the server's n-th update), else fail."""
    assert isinstance(value, float), value
    n = (value - base) / step
    assert n == int(n) and n >= 0, value
    return int(n)


def check_first(seen: dict[str, TagSample]) -> None:
    good = ["speed", "nested", "running", "label", "set_point", "count", "temp", "second", "plain"]
    for name in good:
        assert seen[name].quality is Quality.GOOD, (name, seen[name])
        assert seen[name].source_time is not None
    _step(seen["speed"].value, 100.0, 0.5)
    n = _step(seen["nested"].value, 100.0, 0.5)
    assert isinstance(seen["running"].value, bool)
    assert isinstance(seen["label"].value, str) and seen["label"].value.startswith("run ")
    assert seen["set_point"].value == 7.5
    count = seen["count"].value
    assert isinstance(count, int) and not isinstance(count, bool)
    assert abs(count - n) <= 2  # separate items, sampled a moment apart
    _step(seen["temp"].value, 30.0, 1.0)
    assert _step(seen["second"].value, 100.0, 0.5) >= 1000  # the second motor of the array

    wrong = seen["wrong"]
    assert wrong.quality is Quality.BAD and wrong.value is None
    assert "BadNoMatch" in wrong.reason and "'Sped'" in wrong.reason
    assert "Speed, Running, Label, Set_Point" in wrong.reason  # what is there instead
    whole = seen["whole"]
    assert whole.quality is Quality.BAD and "is a structure" in whole.reason
    assert "Speed" in whole.reason
    assert seen["too_far"].quality is Quality.BAD and "2 elements" in seen["too_far"].reason
    opaque = seen["opaque"]
    assert opaque.quality is Quality.BAD
    assert "BridgeTestOpaque.Binary" in opaque.reason and "not decoded" in opaque.reason


@on_module_loop
async def test_fields_of_a_runtime_structure_flow_and_update(peer: Peer) -> None:
    source = OpcUaSource("structs", settings(peer.endpoint), TAGS)
    await source.connect()
    try:
        seen = await collect(source, {t.tag for t in TAGS})
        check_first(seen)
        assert source._sessions[0].structures_error is None
        # The server writes a new structure every 0.2 s: the fields follow it.
        first_speed, first_count = seen["nested"].value, seen["count"].value
        moved: dict[str, TagSample] = {}
        async with asyncio.timeout(15):
            async for batch in source.samples():
                for sample in batch:
                    if sample.tag in ("nested", "count", "label"):
                        moved[sample.tag] = sample
                if (
                    {"nested", "count", "label"} <= moved.keys()
                    and moved["nested"].value != first_speed
                    and moved["count"].value != first_count
                ):
                    break
        assert moved["nested"].quality is Quality.GOOD
        assert _step(moved["nested"].value, 100.0, 0.5) > _step(first_speed, 100.0, 0.5)
        count = moved["count"].value
        assert isinstance(count, int) and isinstance(first_count, int) and count > first_count
        assert moved["label"].quality is Quality.GOOD
    finally:
        await source.close()


@on_module_loop
async def test_fields_decode_in_a_worker_process(peer: Peer) -> None:
    # A fresh child process: it can decode only if its own session loaded the definitions.
    source = OpcUaWorkerSource("structs", settings(peer.endpoint, workers=1), TAGS)
    await source.connect()
    try:
        check_first(await collect(source, {t.tag for t in TAGS}, within=40))
    finally:
        await source.close()


def test_reader_names_why_a_structure_is_undecoded() -> None:
    reason = "loading the server's data type definitions took over 12s"
    reader = FieldReader("Status.Speed", lambda: reason)
    raw = ua.ExtensionObject(TypeId=make_node_id(5001, 3), Body=ua.ByteString(b"\x00"))
    dv = ua.DataValue(ua.Variant(raw, ua.VariantType.ExtensionObject))
    value, quality, why, _, _ = reader(dv)
    assert (value, quality) == (None, Quality.BAD)
    assert why == f"structure ns=3;i=5001 at the value not decoded: {reason}"
    # A Bad status wins over the field and keeps its own name.
    bad = ua.DataValue(
        ua.Variant(raw), StatusCode=ua.StatusCode(ua.UInt32(StatusCodes.BadNodeIdUnknown))
    )
    assert reader(bad)[1:3] == (Quality.BAD, "BadNodeIdUnknown")


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("Speed", ("Speed",)),
        ("Status.Speed", ("Status", "Speed")),
        ("Axes[0].Pos", ("Axes", 0, "Pos")),
        ("[2]", (2,)),
        ("Set-Point", ("Set-Point",)),
    ],
)
def test_field_paths(text: str, steps: tuple[object, ...]) -> None:
    assert parse_field_path(text) == steps


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Status..Speed", "unexpected '.' at position 7"),
        ("Status.", "ends with '.'"),
        ("Axes[x]", "an index is digits"),
        ("Axes[0]Pos", "missing '.' before 'Pos'"),
        ("Motor Speed", "white space"),
    ],
)
def test_bad_field_paths(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace(".", r"\.")):
        parse_field_path(text)


def test_mapping_with_a_bad_field_names_file_line_key_and_fix(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "version: 1\n"
        "sources:\n"
        '  plc: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}\n'
        "assets:\n"
        "  m1:\n"
        "    tags:\n"
        "      speed:\n"
        "        source: plc\n"
        "        address:\n"
        f'          node: "nsu={NS};s=Motor1"\n'
        '          field: "Status..Speed"\n'
    )
    with pytest.raises(ConfigError) as info:
        prepare(mapping)
    (issue,) = info.value.issues
    assert issue.file.endswith("mapping.yaml")
    assert issue.key == "assets.m1.tags.speed.address.field"
    assert issue.line == 11
    assert "unexpected '.' at position 7" in issue.message
    assert issue.hint == FIELD_PATH_HINT


async def _bridge(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bridge.cli import main; main()",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@on_module_loop
async def test_browse_lists_structure_fields_and_writes_field_tags(
    peer: Peer, tmp_path: Path
) -> None:
    out = tmp_path / "mapping.yaml"
    code, _, err = await _bridge("browse", peer.endpoint, "-o", str(out), cwd=tmp_path)
    assert code == 0, err
    text = out.read_text()
    tags = yaml.safe_load(text)["assets"]["root"]["tags"]
    motor = f"nsu={NS};s=Motor1"
    assert tags["motor1_status_speed"]["address"] == {"node": motor, "field": "Status.Speed"}
    assert tags["motor1_status_speed"]["description"].startswith("Double;")
    assert tags["motor1_status_set_point"]["address"]["field"] == "Status.Set-Point"
    assert tags["motor1_count"]["description"].startswith("UInt32;")
    assert tags["status1_running"]["address"] == {
        "node": f"nsu={NS};s=Status1",
        "field": "Running",
    }
    assert not any("Temps" in str(t["address"]) for t in tags.values())  # arrays need [i]
    assert tags["plain"]["address"] == f"nsu={NS};s=Plain"
    # The structures, each field indented under its variable.
    listing = text[text.index("# Structures") :].splitlines()
    start = listing.index("# Motor1: BridgeTestMotor")
    assert listing[start + 1 : start + 8] == [
        "#   Status: BridgeTestMotorStatus",
        "#     Speed: Double",
        "#     Running: Boolean",
        "#     Label: String",
        "#     Set-Point: Double",
        "#   Temps: Double[]",
        "#   Count: UInt32",
    ]
    assert "# Motors: BridgeTestMotor[]" in listing
    code, text, err = await _bridge("validate", str(out), cwd=tmp_path)
    assert code == 0, text + err
