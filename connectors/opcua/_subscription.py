"""An asyncua Subscription that hands every notification to an ``Inbox`` and nothing else.

asyncua's handler mode spawns one task per notification and its iterator mode drops silently
when full; overriding the single delivery hook avoids both. ``_deliver`` is private asyncua API,
which is why asyncua is pinned to ``~=2.1`` and this is covered by the integration tests.

``decode_publish_off_loop`` moves the decoding of large Publish responses to a worker thread:
asyncua decodes a 1,000-notification response in pure Python (15-35 ms on a small machine) on
the event loop, which holds up every other source, the models and the gateway's own server
for that long. In a thread the GIL still serialises the work, but the loop gets it back every
switch interval (5 ms) instead of after the whole response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from asyncua import ua
from asyncua.client.ua_session import UaSession
from asyncua.common.subscription import (
    DataChangeEvent,
    OpcEvent,
    StatusChangeEvent,
    SubEvent,
    Subscription,
)
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaStructParsingError

from bridge.connectors.opcua._inbox import Inbox
from bridge.connectors.opcua.convert import status_name

__all__ = ["OFF_LOOP_BYTES", "InboxSubscription", "decode_publish_off_loop"]

# Below this size a response (keep-alive, a few notifications) decodes faster than a thread
# hand-off; ~40 bytes per double notification, so this is ~100 notifications.
OFF_LOOP_BYTES = 4096

EventSink = Callable[[list[ua.EventFieldList], Inbox[ua.DataValue]], None]


class InboxSubscription(Subscription):
    def __init__(
        self,
        session: UaSession,
        params: ua.CreateSubscriptionParameters,
        inbox: Inbox[ua.DataValue],
    ) -> None:
        # Iterator mode with a 1-slot queue: asyncua's queue stays unused but delete() needs it.
        super().__init__(session, params, handler=None, queue_maxsize=1)
        self.inbox = inbox
        # Event items' notifications (``_eventinputs``); None: the session has no event tags.
        self.on_events: EventSink | None = None

    def _explode_datachange(self, datachange: ua.DataChangeNotification) -> list[DataChangeEvent]:
        # Straight to the inbox: asyncua's DataChangeNotif/DataChangeEvent pair per value is
        # most of the per-notification cost left after decoding, and nothing here reads them.
        known = self._monitored_items
        offer = self.inbox.offer
        for item in datachange.MonitoredItems:
            if item.ClientHandle in known:
                offer(item.ClientHandle, item.Value)
        return []

    def _explode_events(self, eventlist: ua.EventNotificationList) -> list[OpcEvent]:
        # The fields go to the event tags as they are: asyncua's Event objects are not built.
        if self.on_events is not None:
            self.on_events(eventlist.Events, self.inbox)
        return []

    def _deliver(self, event: SubEvent) -> None:
        if isinstance(event, DataChangeEvent):
            item = event.data.monitored_item
            self.inbox.offer(item.ClientHandle, item.Value)
        elif isinstance(event, StatusChangeEvent):
            status = event.notification.Status
            code = int(status.value) if status is not None else 0
            self.inbox.fail(f"subscription status change: {status_name(code)}")


def decode_publish_off_loop(session: UaSession, executor: Executor) -> None:
    """Replace ``session.publish`` (called by asyncua's publish loop) by one that decodes large
    responses in ``executor``. Same request, same errors as asyncua's own (ua_session.py)."""

    async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        data = await session._send_request(request, timeout=0)
        try:
            if len(data) < OFF_LOOP_BYTES:
                return struct_from_binary(ua.PublishResponse, data)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                executor, struct_from_binary, ua.PublishResponse, data
            )
        except Exception as ex:
            raise UaStructParsingError from ex

    # An instance attribute: the publish loop looks ``self.publish`` up on every request.
    session.publish = publish  # type: ignore[method-assign]
