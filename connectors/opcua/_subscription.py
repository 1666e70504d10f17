"""An asyncua Subscription that hands every notification to an ``Inbox`` and nothing else.

asyncua's handler mode spawns one task per notification and its iterator mode drops silently
when full; overriding the single delivery hook avoids both. ``_deliver`` is private asyncua API,
which is why asyncua is pinned to ``~=2.1`` and this is covered by the integration tests.
"""

from __future__ import annotations

from asyncua import ua
from asyncua.client.ua_session import UaSession
from asyncua.common.subscription import (
    DataChangeEvent,
    StatusChangeEvent,
    SubEvent,
    Subscription,
)

from connectors.opcua._inbox import Inbox
from connectors.opcua.convert import status_name

__all__ = ["InboxSubscription"]


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

    def _deliver(self, event: SubEvent) -> None:
        if isinstance(event, DataChangeEvent):
            item = event.data.monitored_item
            self.inbox.offer(item.ClientHandle, item.Value)
        elif isinstance(event, StatusChangeEvent):
            status = event.notification.Status
            code = int(status.value) if status is not None else 0
            self.inbox.fail(f"subscription status change: {status_name(code)}")
