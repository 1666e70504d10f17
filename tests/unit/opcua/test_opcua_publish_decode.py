"""Publish responses decoded off the event loop: same result as asyncua's own decoding, in the
worker thread only when large, and a malformed response is the error asyncua's loop skips."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_to_binary
from asyncua.ua.uaerrors import UaStructParsingError

from bridge.connectors.opcua._subscription import OFF_LOOP_BYTES, decode_publish_off_loop


def _response(n: int) -> bytes:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    items = [
        ua.MonitoredItemNotification(
            ClientHandle=i,
            Value=ua.DataValue(ua.Variant(float(i), ua.VariantType.Double), SourceTimestamp=now),
        )
        for i in range(n)
    ]
    response = ua.PublishResponse()
    response.Parameters.SubscriptionId = 7
    response.Parameters.NotificationMessage.NotificationData = [
        ua.DataChangeNotification(MonitoredItems=items)
    ]
    return struct_to_binary(response)


class _Session:
    """What the replacement needs of asyncua's UaSession: ``_send_request``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.requests: list[Any] = []

    async def _send_request(self, request: Any, **options: Any) -> Buffer:
        self.requests.append(request)
        return Buffer(self.data)


class _SpyExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(1)
        self.used = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.used += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize(("n", "in_thread"), [(2, 0), (500, 1)])
async def test_decodes_like_asyncua_and_uses_the_thread_only_for_large(
    n: int, in_thread: int
) -> None:
    data = _response(n)
    session = _Session(data)
    executor = _SpyExecutor()
    try:
        decode_publish_off_loop(session, executor)  # type: ignore[arg-type]
        acks = [ua.SubscriptionAcknowledgement(SubscriptionId=7, SequenceNumber=3)]
        response = await session.publish(acks)  # type: ignore[attr-defined]
    finally:
        executor.shutdown()
    assert session.requests[0].Parameters.SubscriptionAcknowledgements == acks
    assert response.Parameters.SubscriptionId == 7
    items = response.Parameters.NotificationMessage.NotificationData[0].MonitoredItems
    assert [(m.ClientHandle, m.Value.Value.Value) for m in items] == [
        (i, float(i)) for i in range(n)
    ]
    assert (len(data) >= OFF_LOOP_BYTES) == bool(in_thread)
    assert executor.used == in_thread


async def test_malformed_response_is_a_parsing_error() -> None:
    session = _Session(_response(500)[:-100])  # truncated: large, so decoded in the thread
    executor = ThreadPoolExecutor(1)
    try:
        decode_publish_off_loop(session, executor)  # type: ignore[arg-type]
        with pytest.raises(UaStructParsingError):
            await session.publish([])  # type: ignore[attr-defined]
    finally:
        executor.shutdown()
