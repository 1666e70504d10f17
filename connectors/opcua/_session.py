"""One asyncua session of an ``OpcUaSource``: its client, subscription and share of the items.

A source with ``sessions: N`` owns N of these, each monitoring a contiguous share of the tag
handles (a handle is the tag's position in the source, so notifications of every session map to
their tag without a lookup). A session fails loudly (``fail``/``failure``) and never reconnects
by itself: the source decides when ``connect()`` runs again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import datetime
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from bridge.connectors.opcua._backfill import Gap, read_gaps
from bridge.connectors.opcua._eventinputs import EventInputs
from bridge.connectors.opcua._identity import apply_identity
from bridge.connectors.opcua._inbox import Inbox
from bridge.connectors.opcua._refusal import Attempt, explain
from bridge.connectors.opcua._structures import load_structures
from bridge.connectors.opcua._subscription import decode_publish_off_loop
from bridge.connectors.opcua._transfer import (
    Kept,
    TransferableSubscription,
    abandon,
    server_facts,
    transfer,
)
from bridge.connectors.opcua.config import OpcUaAddress, OpcUaSourceSettings
from bridge.connectors.opcua.convert import NodeRef, make_node_id, node_id_for, parse_nsu
from bridge.errors import ConnectorError
from bridge.types import Quality, SourceTag, TagSample

__all__ = [
    "DEFAULT_BATCH",
    "SESSION_TIMEOUT_MS",
    "SampleMaker",
    "Session",
    "address_of",
    "probe_interval",
]

log = structlog.get_logger(__name__)

DEFAULT_BATCH = 1000
# Short enough that an abandoned session (crashed gateway) does not block a small PLC for long.
SESSION_TIMEOUT_MS = 60_000
# Loading the server's structures is many requests: it may take this many request timeouts.
STRUCTURES_TIMEOUTS = 4

# (handle, DataValue, received time) -> the tag's sample; the source's conversion.
SampleMaker = Callable[[int, ua.DataValue, float], TagSample]


class Session:
    def __init__(
        self,
        source: str,
        index: int,
        settings: OpcUaSourceSettings,
        tags: Sequence[SourceTag],
        handles: Sequence[int],
        sample: SampleMaker,
        wake: asyncio.Event,
        seen: list[float] | None = None,
    ) -> None:
        self.index = index
        self.handles = tuple(handles)
        self._source = source
        self._settings = settings
        self._tags = tags
        self._refs: dict[int, NodeRef | None] = {h: _ref(address_of(tags[h])) for h in handles}
        self._sample = sample
        self._wake = wake
        self._seen = seen  # the source's newest timestamp per tag (backfill only)
        self._node_of: dict[int, ua.NodeId] = {}  # monitored handle -> its node, this session
        self.client: Client | None = None
        self.subscription: TransferableSubscription | None = None
        self.inbox: Inbox[ua.DataValue] = Inbox(settings.queue_size, wake)
        self.connected_at = 0.0
        self.dropped_before = 0
        # Tag handles the server refused, retried every retry_failed_items_s.
        self.failed: list[int] = []
        self.next_retry = 0.0
        # Why this session's structures stay undecoded (field tags only; None: loaded).
        self.structures_error: str | None = None
        self.backfilled = 0  # historical values read after reconnects
        # A subscription left on the server by a link loss, for the next connect to take over
        # (TransferSubscriptions, _transfer.py); which way each reconnect went.
        self._kept: Kept | None = None
        self._resumable = False  # connected with every item created: worth keeping
        self._server_started: datetime | None = None
        # StartTime of a server that did not publish after a transfer: not asked again.
        self._no_publish_after_transfer: datetime | None = None
        self.try_transfer = True
        self.transferred = 0
        self.recreated = 0
        self.republished = 0  # notifications fetched with Republish after transfers
        self._index_of: dict[str, int] = {}
        self._per_call = DEFAULT_BATCH
        self._per_read = DEFAULT_BATCH
        self._log = log.bind(source=source, session=index, endpoint=settings.endpoint)
        # Tags of ``address: {event: ...}``: event items instead of data items (_eventinputs).
        events = {h: e for h in handles if (e := address_of(tags[h]).event) is not None}
        self._events = EventInputs(tags, events, settings, self._log)

    @property
    def name(self) -> str:
        return f"{self._source}#{self.index}"

    @property
    def dropped(self) -> int:
        return self.dropped_before + self.inbox.dropped

    async def connect(self, executor: Executor) -> list[TagSample]:
        """Open the session, subscribe this share; the current values (and Bad samples for
        refused items) are returned. Raises ``ConnectorError`` with the reason and the fix."""
        await self.close()
        kept = self._kept  # dropped once a connect decided on it: a failed one leaves it
        self._resumable = False
        settings = self._settings
        self.dropped_before += self.inbox.dropped
        self.inbox = Inbox(settings.queue_size, self._wake)
        client = Client(
            settings.endpoint,
            timeout=settings.timeout_s,
            watchdog_intervall=probe_interval(settings.watchdog_s),
            auto_reconnect=False,
        )
        client.session_timeout = SESSION_TIMEOUT_MS
        inbox = self.inbox

        async def on_connection_lost(exc: Exception) -> None:
            inbox.fail(f"connection lost: {exc!r}")

        client.connection_lost_callback = on_connection_lost
        self.client = client
        seen = self._seen
        before = {h: seen[h] for h in self.handles if seen[h] > 0} if seen is not None else {}
        attempt = Attempt()
        try:
            # set_security may fetch the endpoints over the network: bounded like every call
            async with asyncio.timeout(settings.timeout_s * 2):
                await apply_identity(client, settings, attempt)
            async with asyncio.timeout(settings.timeout_s * 2):
                await client.connect(auto_reconnect=False)
            initial = await self._resume(client, executor, kept)
        except Exception as exc:
            await self.close()
            if seen is not None:  # nothing of this attempt was handed on: the gaps stay open
                for h, stamp in before.items():
                    seen[h] = stamp
            # The status and the fix, for the log, the health detail and the CLI alike.
            reason = explain(exc, settings, attempt)
            self._log.warning("connect_failed", error=reason)
            raise ConnectorError(
                f"{self._source}: cannot connect to {settings.endpoint}: {reason}"
            ) from exc
        self.connected_at = time.monotonic()
        self._resumable = True
        if before:
            # Before the live values: the windows take each tag's samples in time order.
            initial = await self._backfill(client, before) + initial
        return initial

    async def _backfill(self, client: Client, before: dict[int, float]) -> list[TagSample]:
        """The outage gap of each tag seen before the loss, from the server's history."""
        settings, seen = self._settings.backfill, self._seen
        assert settings is not None and seen is not None
        gaps = [
            Gap(h, self._node_of[h], after, seen[h])
            for h, after in before.items()
            if h in self._node_of and seen[h] > after
        ]
        if not gaps:
            return []
        started = time.monotonic()
        try:
            samples, report = await read_gaps(
                client, gaps, settings, self._settings.timeout_s, self._sample
            )
        except (TimeoutError, OSError, UaError) as exc:
            # The link failed again: the session's own checks see it; the gap stays a hole.
            self._log.warning("backfill_failed", tags=len(gaps), error=repr(exc))
            return []
        self.backfilled += report.values
        self._log.info(
            "backfill",
            tags=report.tags,
            historized=report.historized,
            values=report.values,
            truncated=len(report.truncated),
            failed=len(report.failed),
            timed_out=report.timed_out,
            gap_s=round(max(g.before - g.after for g in gaps), 3),
            took_s=round(time.monotonic() - started, 3),
        )
        return samples

    async def _resume(
        self, client: Client, executor: Executor, kept: Kept | None
    ) -> list[TagSample]:
        """Take over the subscription a link loss left on the server, else subscribe anew.
        After a transfer the values come through the inbox (the server's queued ones first,
        then the initial values), so nothing is returned."""
        if kept is None:
            return await self._subscribe_all(client, executor)
        settings = self._settings
        timeout = settings.timeout_s
        reason = self._no_transfer(kept)
        namespaces: list[str] = []
        started: datetime | None = None
        outcome = None
        if not reason:
            async with asyncio.timeout(timeout):
                namespaces, started = await server_facts(client)
            if kept.server_started and started and started != kept.server_started:
                reason = "server restarted"
        if not reason:
            self._index_of = {uri: i for i, uri in enumerate(namespaces)}
            if any(address_of(self._tags[h]).field for h in self.handles):
                self.structures_error = await load_structures(client, timeout * STRUCTURES_TIMEOUTS)
            session = client.uaclient.session
            decode_publish_off_loop(session, executor)
            # A Publish should follow the transfer within a few publishing intervals.
            confirm_s = min(timeout, max(2.0, 3 * settings.publishing_interval_ms / 1000))
            try:
                outcome = await transfer(session, kept, self.inbox, timeout, confirm_s)
            except BaseException:
                # The server may have moved it already: the next connect tries again.
                self.subscription, self._resumable = kept.subscription, True
                self.inbox.fail("link lost during the subscription transfer")
                raise
            reason = outcome.reason
            if not outcome.transferred and outcome.unconfirmed and started is not None:
                self._no_publish_after_transfer = started
        self._kept = None
        down_s = round(time.monotonic() - kept.lost_at, 2)
        subscription = kept.subscription
        if outcome is not None and outcome.transferred:
            self.subscription, self._server_started = subscription, started
            self.transferred += 1
            self.republished += outcome.values
            self._log.info(
                "subscription_transferred",
                subscription_id=subscription.subscription_id,
                items=len(subscription._monitored_items),
                republished_messages=outcome.republished,
                republished_values=outcome.values,
                missing_messages=outcome.missing,
                down_s=down_s,
            )
            await self._events.resumed(client, subscription)
            return []
        self.recreated += 1
        self._log.info(
            "subscription_recreated",
            subscription_id=subscription.subscription_id,
            reason=reason,
            lost=kept.reason,
            down_s=down_s,
        )
        return await self._subscribe_all(client, executor)

    def _no_transfer(self, kept: Kept) -> str:
        """Why ``kept`` is not worth a TransferSubscriptions ("" when it is)."""
        settings = self._settings
        if not self.try_transfer:
            return "transfer switched off"
        age = time.monotonic() - kept.lost_at
        if age > SESSION_TIMEOUT_MS / 1000:
            return f"lost {age:.0f}s ago, past the session timeout"
        if settings.backfill is not None and settings.server_queue_size == 1:
            # One queued value per item is less than the history read after a re-create.
            return "backfill with server_queue_size 1: the gap is read from history"
        started = kept.server_started
        if started is not None and started == self._no_publish_after_transfer:
            return "this server did not publish after an earlier transfer"
        return ""

    async def _subscribe_all(self, client: Client, executor: Executor) -> list[TagSample]:
        timeout = self._settings.timeout_s
        async with asyncio.timeout(timeout):
            namespaces, self._server_started = await server_facts(client)
        # Resolved per session: a restarted server may have renumbered its namespaces.
        self._index_of = {uri: i for i, uri in enumerate(namespaces)}
        self._per_call, self._per_read = await self._operation_limits(client)
        if any(address_of(self._tags[h]).field for h in self.handles):
            # Before the first read: values of structures decode from here on.
            self.structures_error = await load_structures(client, timeout * STRUCTURES_TIMEOUTS)
        session = client.uaclient.session
        decode_publish_off_loop(session, executor)
        subscription = TransferableSubscription(session, self._subscription_params(), self.inbox)
        async with asyncio.timeout(timeout):
            result = await subscription.init()
        self.subscription = subscription
        self._events.attach(client, subscription)
        self._check_revised(result)
        self.failed = []
        self.next_retry = time.monotonic() + self._settings.retry_failed_items_s
        return await self._create_items(client, list(self.handles))

    async def _create_items(self, client: Client, wanted: list[int]) -> list[TagSample]:
        """Monitor ``wanted`` tag handles in batches; refused ones go to ``self.failed``."""
        assert self.subscription is not None
        timeout = self._settings.timeout_s
        now = time.time()
        failed: list[TagSample] = []
        events = [h for h in wanted if h in self._events.handles]
        if events:
            wanted = [h for h in wanted if h not in self._events.handles]
        requests: list[ua.MonitoredItemCreateRequest] = []
        handles: list[int] = []
        by_path = await self._resolve_paths(client, [h for h in wanted if self._refs[h] is None])
        for handle in wanted:
            tag, ref = self._tags[handle], self._refs[handle]
            node_id: ua.NodeId | str
            if ref is None:
                node_id = by_path[handle]
            else:
                ns = self._index_of.get(ref.uri)
                node_id = (
                    node_id_for(ref, ns)
                    if ns is not None
                    else f"BadNodeIdUnknown: namespace {ref.uri} not on server"
                )
            if isinstance(node_id, str):  # the reason it could not be resolved
                failed.append(TagSample(tag.tag, None, Quality.BAD, now, reason=node_id))
                self.failed.append(handle)
                continue
            requests.append(self._monitor_request(handle, node_id, address_of(tag)))
            handles.append(handle)
            self._node_of[handle] = node_id

        per_call = self._per_call
        subscribed: list[int] = []
        for start in range(0, len(requests), per_call):
            chunk = requests[start : start + per_call]
            async with asyncio.timeout(timeout):
                results = await self.subscription.create_monitored_items(chunk)
            for handle, outcome in zip(handles[start : start + per_call], results, strict=True):
                if isinstance(outcome, ua.StatusCode):
                    sample = TagSample(
                        self._tags[handle].tag, None, Quality.BAD, now, reason=outcome.name
                    )
                    failed.append(sample)
                    self.failed.append(handle)
                else:
                    subscribed.append(handle)
        current = await self._read_current(client, subscribed, requests, handles)
        if events:  # after the current values: ConditionRefresh answers through the inbox
            bad, refused = await self._events.create(self._index_of, events, per_call)
            failed += bad
            self.failed += refused
        return failed + current

    async def _resolve_paths(
        self, client: Client, handles: list[int]
    ) -> dict[int, ua.NodeId | str]:
        """Browse paths -> node ids for this session (TranslateBrowsePaths, batched)."""
        resolved: dict[int, ua.NodeId | str] = {}
        paths: list[ua.BrowsePath] = []
        for handle in handles:
            address = address_of(self._tags[handle])
            assert address.path is not None and address.namespace is not None
            ns = self._index_of.get(address.namespace)
            if ns is None:
                resolved[handle] = f"BadNodeIdUnknown: namespace {address.namespace} not on server"
                continue
            paths.append(_browse_path(address.path, ns))
        pending = [h for h in handles if h not in resolved]
        for start in range(0, len(paths), self._per_call):
            chunk = paths[start : start + self._per_call]
            async with asyncio.timeout(self._settings.timeout_s):
                results = await client.uaclient.translate_browsepaths_to_nodeids(chunk)
            for handle, result in zip(pending[start : start + len(chunk)], results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    target = result.Targets[0].TargetId
                    resolved[handle] = make_node_id(
                        target.Identifier, target.NamespaceIndex, target.NodeIdType
                    )
                else:
                    resolved[handle] = f"{result.StatusCode.name}: path not found"
        return resolved

    async def retry_failed(self) -> tuple[list[TagSample], int]:
        """Try the refused items again (a node may have been created since); others untouched.
        Returns the samples and how many items recovered."""
        client = self.client
        self.next_retry = time.monotonic() + self._settings.retry_failed_items_s
        if client is None or not self.failed:
            return [], 0
        wanted, self.failed = self.failed, []
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                namespaces: list[str] = await client.get_namespace_array()
            self._index_of = {uri: i for i, uri in enumerate(namespaces)}
            samples = await self._create_items(client, wanted)
        except (TimeoutError, OSError, UaError) as exc:
            # A failing retry is a link problem: this session is lost.
            self.failed = wanted
            self.inbox.fail(f"retry of failed items: {exc!r}")
            return [], 0
        return samples, len(wanted) - len(self.failed)

    async def _read_current(
        self,
        client: Client,
        subscribed: list[int],
        requests: list[ua.MonitoredItemCreateRequest],
        handles: list[int],
    ) -> list[TagSample]:
        node_of = {h: r.ItemToMonitor.NodeId for h, r in zip(handles, requests, strict=True)}
        samples: list[TagSample] = []
        sample = self._sample
        for start in range(0, len(subscribed), self._per_read):
            chunk = subscribed[start : start + self._per_read]
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = [
                ua.ReadValueId(NodeId=node_of[h], AttributeId=AttributeIds.Value) for h in chunk
            ]
            async with asyncio.timeout(self._settings.timeout_s):
                values = await client.uaclient.read(params)
            received = time.time()
            samples.extend(sample(h, dv, received) for h, dv in zip(chunk, values, strict=True))
        return samples

    async def _operation_limits(self, client: Client) -> tuple[int, int]:
        """Items per CreateMonitoredItems call and per Read, as the server allows (0 = no limit)."""
        ids = (
            ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
            ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
        )
        limits = [DEFAULT_BATCH, DEFAULT_BATCH]
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                values = await client.uaclient.read_attributes(
                    [make_node_id(i, 0) for i in ids], AttributeIds.Value
                )
        except (TimeoutError, UaError) as exc:
            self._log.debug("operation_limits_unavailable", error=repr(exc))
            return DEFAULT_BATCH, DEFAULT_BATCH
        for i, dv in enumerate(values):
            raw: Any = dv.Value.Value if dv.Value is not None else None
            if isinstance(raw, int) and raw > 0:
                limits[i] = min(DEFAULT_BATCH, raw)
        return limits[0], limits[1]

    def _subscription_params(self) -> ua.CreateSubscriptionParameters:
        interval = self._settings.publishing_interval_ms
        # Keep-alives at least 3 times per watchdog period, so silence really means a dead link.
        keepalive = max(1, int(self._settings.watchdog_s * 1000 / 3 / interval))
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = interval
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = max(3 * keepalive, int(SESSION_TIMEOUT_MS / interval))
        params.MaxNotificationsPerPublish = 10_000
        params.PublishingEnabled = True
        params.Priority = 0
        return params

    def _check_revised(self, result: ua.CreateSubscriptionResult) -> None:
        keepalive_s = result.RevisedPublishingInterval * result.RevisedMaxKeepAliveCount / 1000
        if keepalive_s > self._settings.watchdog_s / 2:
            self._log.warning(
                "keepalive_slower_than_watchdog",
                keepalive_s=keepalive_s,
                watchdog_s=self._settings.watchdog_s,
            )

    def _monitor_request(
        self, handle: int, node_id: ua.NodeId, address: OpcUaAddress
    ) -> ua.MonitoredItemCreateRequest:
        sampling = address.sampling_interval_ms
        if sampling is None:
            sampling = self._settings.sampling_interval_ms
        params = ua.MonitoringParameters()
        # The handle is the tag's position, so a notification maps to its tag without a lookup.
        params.ClientHandle = handle
        params.SamplingInterval = sampling
        params.QueueSize = self._settings.server_queue_size
        params.DiscardOldest = True
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    def failure(self) -> str | None:
        """Why this session is dead (None: alive). Records the reason in its inbox."""
        client = self.client
        if client is None:
            return self.inbox.failure or "not connected"
        reason = self.inbox.failure
        if reason is None and client.uaclient.state is not UaClientState.CONNECTED:
            reason = f"client state {client.uaclient.state.value}"
        if reason is None:
            subscription = self.subscription
            last = subscription.last_publish_at if subscription is not None else None
            silent = time.monotonic() - max(last or 0.0, self.connected_at)
            if silent > self._settings.watchdog_s:
                reason = f"no notification or keep-alive for {silent:.1f}s"
        if reason is not None:
            self.inbox.fail(reason)
        return reason

    async def close(self) -> None:
        """Delete the subscription and the session; bounded in time even if the server is gone.
        A session lost to its link instead leaves both on the server, for the next connect to
        take the subscription over (``_transfer.py``)."""
        client, subscription = self.client, self.subscription
        self.client = self.subscription = None
        self._events.stop()
        if client is None:
            return
        failure = self.inbox.failure
        self.inbox.fail("closed")
        if subscription is not None and failure is not None and self._resumable:
            kept = self._kept
            # A transfer cut short keeps the first loss's time: the server's clock runs from it.
            lost_at = kept.lost_at if kept and kept.subscription is subscription else None
            self._kept = Kept(
                subscription, self._server_started, lost_at or time.monotonic(), failure
            )
            self._resumable = False
            await abandon(client, self._settings.timeout_s)
            return
        timeout = self._settings.timeout_s
        alive = client.uaclient.state is UaClientState.CONNECTED
        if subscription is not None and alive:
            try:
                async with asyncio.timeout(timeout):
                    await subscription.delete()
            except (TimeoutError, OSError, UaError) as exc:
                self._log.debug("delete_subscription_failed", error=repr(exc))
        try:
            async with asyncio.timeout(timeout):
                await client.disconnect()
        except (TimeoutError, OSError, UaError) as exc:
            self._log.debug("disconnect_failed", error=repr(exc))
        finally:
            # A timed-out disconnect can leave the socket open; drop it for sure.
            client.disconnect_socket()


def probe_interval(watchdog_s: float) -> float:
    """asyncua's liveness probe (a Read of the server state) runs this often and must answer
    within as long. 1 s up to the default watchdog_s of 10 (a silent link is seen in ~1 s);
    a tenth of a longer watchdog_s, so a gateway on a loaded box, where a flooded server
    answers a Read later than 1 s, can lengthen it (measured: sessions dropped at load 8)."""
    return max(min(1.0, watchdog_s / 4), watchdog_s / 10)


def address_of(tag: SourceTag) -> OpcUaAddress:
    address = tag.address
    if isinstance(address, OpcUaAddress):
        return address
    return OpcUaAddress.model_validate(address)


def _ref(address: OpcUaAddress) -> NodeRef | None:
    return parse_nsu(address.node) if address.node is not None else None


def _browse_path(path: str, ns: int) -> ua.BrowsePath:
    elements = []
    for name in (p for p in path.split("/") if p):
        element = ua.RelativePathElement()
        element.ReferenceTypeId = make_node_id(ObjectIds.HierarchicalReferences, 0)
        # asyncua annotates these with its own Boolean type; plain bools are what it encodes
        element.IsInverse = cast(Any, False)
        element.IncludeSubtypes = cast(Any, True)
        element.TargetName = ua.QualifiedName(name, ns)
        elements.append(element)
    browse_path = ua.BrowsePath()
    browse_path.StartingNode = make_node_id(ObjectIds.ObjectsFolder, 0)
    browse_path.RelativePath = ua.RelativePath(Elements=elements)
    return browse_path
