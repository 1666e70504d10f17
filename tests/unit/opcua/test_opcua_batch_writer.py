"""BatchWriter against asyncua's own address space and subscriptions (an in-process server, no
socket): asyncua's write rules hold, and what cannot be done in the synchronous pass (a 0 ms
subscription's publish, a foreign data-change callback, a node with a setter) happens in
``settle()``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from bridge.connectors.opcua._batch import BatchWriter
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.encode import make_status

pytestmark = pytest.mark.asyncio(loop_scope="module")
NOW: Any = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Server]:
    s = Server()
    await s.init()  # address space and internal session; no endpoint is opened
    ns = await s.register_namespace("urn:test:batchwriter")
    for name in ("x", "y", "z", "w"):
        await s.nodes.objects.add_variable(make_node_id(name, ns), name, 0.0)
    yield s


def nid(server: Server, name: str) -> ua.NodeId:
    """The fixture's namespace is the first registered: index 2."""
    return make_node_id(name, 2)


def dv(value: Any, vtype: ua.VariantType = ua.VariantType.Double, status: int = 0) -> ua.DataValue:
    return ua.DataValue(
        ua.Variant(value, vtype), StatusCode=make_status(status), SourceTimestamp=NOW
    )


class Handler:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.values.append(val)


async def test_values_are_stored_and_asyncua_rules_hold(server: Server) -> None:
    writer = BatchWriter(server)
    unknown = make_node_id("nope", 2)
    failures = writer.write(
        [
            (nid(server, "x"), dv(1.5)),
            (nid(server, "y"), dv("text", ua.VariantType.String)),  # a Double variable
            (nid(server, "z"), dv(9.0, status=StatusCodes.BadNoCommunication)),
            (unknown, dv(2.0)),
        ]
    )
    failures += await writer.settle()
    assert sorted(failures, key=str) == sorted(
        [(nid(server, "y"), StatusCodes.BadTypeMismatch), (unknown, StatusCodes.BadNodeIdUnknown)],
        key=str,
    )
    x = server.read_attribute_value(nid(server, "x"))
    assert x.Value is not None and x.Value.Value == 1.5 and x.SourceTimestamp == NOW
    y = server.read_attribute_value(nid(server, "y"))
    assert y.Value is not None and y.Value.Value == 0.0  # refused: unchanged
    z = server.read_attribute_value(nid(server, "z"))  # Bad: the value is null, as asyncua does
    assert z.Value is not None and z.Value.VariantType == ua.VariantType.Null
    assert z.StatusCode is not None and z.StatusCode.value == StatusCodes.BadNoCommunication


async def test_a_zero_ms_subscription_publishes_on_settle(server: Server) -> None:
    handler = Handler()
    sub = await server.create_subscription(0, handler)  # server-internal, publish at once
    await sub.subscribe_data_change(server.get_node(nid(server, "w")))
    await asyncio.sleep(0)
    handler.values.clear()
    writer = BatchWriter(server)
    assert writer.write([(nid(server, "w"), dv(4.0))]) == []
    await asyncio.sleep(0)
    assert handler.values == []  # queued by the pass, published by settle()
    await writer.settle()
    for _ in range(100):  # the internal subscription hands the result over in a task
        if handler.values:
            break
        await asyncio.sleep(0.01)
    assert handler.values == [4.0]
    await sub.delete()


async def test_foreign_callbacks_and_setters_run_on_settle(server: Server) -> None:
    seen: list[tuple[int, Any]] = []

    async def callback(handle: int, value: ua.DataValue) -> None:
        seen.append((handle, value.Value.Value if value.Value else None))

    aspace = server.iserver.aspace
    _, handle = aspace.add_datachange_callback(nid(server, "x"), AttributeIds.Value, callback)
    stored: list[Any] = []

    def setter(node: Any, attr: Any, value: ua.DataValue) -> None:
        stored.append(value.Value.Value if value.Value else None)

    server.set_attribute_value_setter(nid(server, "z"), setter)
    try:
        writer = BatchWriter(server)
        assert writer.write([(nid(server, "x"), dv(7.0)), (nid(server, "z"), dv(8.0))]) == []
        assert seen == [] and stored == []
        assert await writer.settle() == []
        assert seen == [(handle, 7.0)]
        assert stored == [8.0]
    finally:
        aspace.delete_datachange_callback(handle)
        node = aspace.get(nid(server, "z"))
        assert node is not None
        node.attributes[AttributeIds.Value].value_setter = None
