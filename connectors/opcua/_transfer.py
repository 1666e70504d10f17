"""Keep a session's subscription across a short link loss: TransferSubscriptions, then Republish.

When a session is lost to the link (socket closed, keep-alive probe failed, silence), the server
keeps the session and its subscription until the session times out (``SESSION_TIMEOUT_MS``),
queueing up to ``server_queue_size`` values per monitored item while nobody asks. ``abandon``
drops the dead client without a CloseSession (which would delete the subscription if it got
through once the link is back); the next session calls ``transfer``:

1. ``TransferSubscriptions([id], SendInitialValues=True)``: the server moves the subscription
   and its monitored items to the new session; the initial values refresh every item (an
   unchanged tag marked Bad during the loss gets its value back).
2. ``Republish`` of each sequence number the server still holds that the client never
   received (the NotificationMessage answered into the dead link), oldest first, ahead of
   anything newer.
3. The subscription object (its monitored items and client handles) is re-pointed to the new
   session, whose publish loop then delivers what the server queued.
4. The transfer counts only once a Publish response of the subscription arrives on the new
   session within ``confirm_s``: asyncua's own server (2.1) answers TransferSubscriptions with
   Good but keeps publishing to the old, closed channel, so nothing would ever arrive. Until
   then the values wait aside; confirmed, they go to the inbox in arrival order; not, they
   are dropped (the re-created subscription's current values are newer).

Anything else (BadSubscriptionIdInvalid after a server restart or a timed-out session,
BadServiceUnsupported, BadUserAccessDenied, no Publish in time) is an ``Outcome`` with the
reason, and the session re-creates its subscription and items as on a first connect.

``Subscription.publish_callback``, ``UaSession._subscription_callbacks`` and
``ensure_publish_loop`` are asyncua's (2.1; its own ``Subscription.restore`` uses the same):
re-check on every asyncua upgrade, the integration tests cover them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_session import UaSession
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from bridge.connectors.opcua._inbox import Inbox
from bridge.connectors.opcua._subscription import InboxSubscription
from bridge.connectors.opcua.convert import make_node_id, status_name

__all__ = [
    "Kept",
    "Outcome",
    "TransferableSubscription",
    "abandon",
    "server_facts",
    "transfer",
]


class TransferableSubscription(InboxSubscription):
    """An ``InboxSubscription`` that remembers the newest NotificationMessage it received.

    asyncua's own ``last_sequence_number`` also takes the number of a keep-alive (the *next*
    message's number) and the 0 of the status change it fakes on a lost connection, which
    would make the Republish after a transfer skip or repeat a message."""

    received_sequence: int | None = None

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        message = publish_result.NotificationMessage
        if message.NotificationData and message.SequenceNumber:
            self.received_sequence = int(message.SequenceNumber)
        await super().publish_callback(publish_result)


@dataclass(slots=True)
class Kept:
    """A subscription left on the server when its session was lost, waiting for a transfer."""

    subscription: TransferableSubscription
    server_started: datetime | None  # the server's StartTime: another one means a restart
    lost_at: float  # monotonic
    reason: str


@dataclass(slots=True)
class Outcome:
    transferred: bool
    reason: str = ""  # why the subscription must be re-created (empty when transferred)
    republished: int = 0  # NotificationMessages fetched with Republish
    values: int = 0  # data-change notifications in them
    missing: int = 0  # sequence numbers the server no longer had
    unconfirmed: bool = False  # accepted, but no Publish response followed


async def server_facts(client: Client) -> tuple[list[str], datetime | None]:
    """The namespace array and the server's StartTime, in one Read."""
    ids = (ObjectIds.Server_NamespaceArray, ObjectIds.Server_ServerStatus_StartTime)
    values = await client.uaclient.read_attributes(
        [make_node_id(i, 0) for i in ids], AttributeIds.Value
    )
    namespaces: Any = values[0].Value.Value if values[0].Value is not None else None
    if not isinstance(namespaces, list):
        raise UaError(f"no namespace array: {values[0].StatusCode}")
    started: Any = values[1].Value.Value if values[1].Value is not None else None
    return [str(n) for n in namespaces], started if isinstance(started, datetime) else None


async def abandon(client: Client, timeout_s: float) -> None:
    """Drop a client whose link is dead without closing its session on the server.

    The transport is aborted first, so asyncua's disconnect finds the socket closed and sends
    nothing: not the CloseSession(DeleteSubscriptions=True) that would, delivered late by a link
    that comes back, delete the subscription the next session wants to take over. The server
    times the session out by itself."""
    protocol = client.uaclient.protocol
    transport = protocol.transport if protocol is not None else None
    if transport is not None:
        transport.abort()
        # connection_lost runs on a later pass of the loop; bounded, it is never skipped.
        for _ in range(100):
            if protocol is None or protocol.transport is None:
                break
            await asyncio.sleep(0)
    try:
        async with asyncio.timeout(timeout_s):
            await client.disconnect()  # local clean-up only now: tasks, publish loop
    except (TimeoutError, OSError, UaError):
        pass
    finally:
        client.disconnect_socket()


async def transfer(
    session: UaSession,
    kept: Kept,
    inbox: Inbox[ua.DataValue],
    timeout_s: float,
    confirm_s: float,
) -> Outcome:
    """Take ``kept`` over onto ``session`` (see the module docstring). On ``Outcome.transferred``
    the subscription delivers into ``inbox`` through ``session``'s publish loop; otherwise
    nothing of it is left registered on ``session``."""
    subscription = kept.subscription
    sid = subscription.subscription_id
    if sid is None:
        return Outcome(False, "no subscription id")
    params = ua.TransferSubscriptionsParameters()
    params.SubscriptionIds = [sid]
    params.SendInitialValues = True
    try:
        async with asyncio.timeout(timeout_s):
            results = await session.transfer_subscriptions(params)
    except UaStatusCodeError as exc:  # e.g. BadServiceUnsupported: no such service here
        return Outcome(False, status_name(exc.code))
    if not results:
        return Outcome(False, "empty TransferSubscriptions result")
    status = results[0].StatusCode
    if not status.is_good():
        return Outcome(False, status_name(int(status.value)))

    subscription.server = session
    # Until the server proves it publishes here, values wait aside: handed on in arrival order
    # (republished first, then the queued ones) once it does, dropped if it does not, so a
    # fallback's fresh values never come after older ones.
    # Unbounded (0): at most the republished messages and the responses of one confirm window.
    holding: Inbox[ua.DataValue] = Inbox(0)
    subscription.inbox = holding
    outcome = Outcome(True)
    available = list(results[0].AvailableSequenceNumbers or [])
    await _republish(session, subscription, available, outcome, timeout_s)
    mark = time.monotonic()
    session._subscription_callbacks[sid] = subscription.publish_callback
    session.ensure_publish_loop()
    deadline = mark + confirm_s
    while (subscription.last_publish_at or 0.0) <= mark:
        failure = inbox.failure or holding.failure
        if failure is not None:
            raise ConnectionError(f"lost during the transfer: {failure}")
        if time.monotonic() > deadline:
            session._subscription_callbacks.pop(sid, None)
            await _delete_quietly(session, sid, timeout_s)
            outcome.transferred, outcome.unconfirmed = False, True
            outcome.reason = (
                f"no Publish response within {confirm_s:g}s after the transfer "
                "(the server accepted it but does not publish to the new session)"
            )
            return outcome
        await asyncio.sleep(0.02)
    # No await from here on: nothing can arrive between the hand-over and the re-pointing.
    items, spilled = holding.take(sys.maxsize)
    for handle, value in (*items, *spilled):
        inbox.offer(handle, value)
    inbox.dropped += holding.dropped
    subscription.inbox = inbox
    return outcome


async def _republish(
    session: UaSession,
    subscription: TransferableSubscription,
    available: list[int],
    outcome: Outcome,
    timeout_s: float,
) -> None:
    """The messages answered into the dead link, oldest first, through the subscription's own
    callback (so they reach the inbox before anything the publish loop brings)."""
    last = subscription.received_sequence
    sid = subscription.subscription_id
    assert sid is not None
    wanted = sorted(s for s in available if last is None or s > last)
    if wanted and last is not None:
        held = set(wanted)
        outcome.missing = sum(1 for s in range(last + 1, wanted[-1]) if s not in held)
    for seq in wanted:
        try:
            async with asyncio.timeout(timeout_s):
                message = await session.republish(sid, seq)
        except UaStatusCodeError:  # BadMessageNotAvailable: gone meanwhile
            outcome.missing += 1
            continue
        if not message.NotificationData:
            outcome.missing += 1
            continue
        outcome.republished += 1
        outcome.values += sum(
            len(n.MonitoredItems)
            for n in message.NotificationData
            if isinstance(n, ua.DataChangeNotification)
        )
        # The subscription's own path: the same decoding, the same inbox, the sequence recorded.
        await subscription.publish_callback(ua.PublishResult(sid, NotificationMessage=message))


async def _delete_quietly(session: UaSession, sid: int, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await session.delete_subscriptions([sid])
    except (TimeoutError, OSError, UaError):
        pass
