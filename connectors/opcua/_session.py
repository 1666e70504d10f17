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
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from bridge.connectors.opcua._identity import apply_identity
from bridge.connectors.opcua._inbox import Inbox
from bridge.connectors.opcua._refusal import Attempt, explain
from bridge.connectors.opcua._subscription import InboxSubscription, decode_publish_off_loop
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
    ) -> None:
        self.index = index
        self.handles = tuple(handles)
        self._source = source
        self._settings = settings
        self._tags = tags
        self._refs: dict[int, NodeRef | None] = {h: _ref(address_of(tags[h])) for h in handles}
        self._sample = sample
        self._wake = wake
        self.client: Client | None = None
        self.subscription: InboxSubscription | None = None
        self.inbox: Inbox[ua.DataValue] = Inbox(settings.queue_size, wake)
        self.connected_at = 0.0
        self.dropped_before = 0
        # Tag handles the server refused, retried every retry_failed_items_s.
        self.failed: list[int] = []
        self.next_retry = 0.0
        self._index_of: dict[str, int] = {}
        self._per_call = DEFAULT_BATCH
        self._per_read = DEFAULT_BATCH
        self._log = log.bind(source=source, session=index, endpoint=settings.endpoint)

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
        attempt = Attempt()
        try:
            # set_security may fetch the endpoints over the network: bounded like every call
            async with asyncio.timeout(settings.timeout_s * 2):
                await apply_identity(client, settings, attempt)
            async with asyncio.timeout(settings.timeout_s * 2):
                await client.connect(auto_reconnect=False)
            initial = await self._subscribe_all(client, executor)
        except Exception as exc:
            await self.close()
            # The status and the fix, for the log, the health detail and the CLI alike.
            reason = explain(exc, settings, attempt)
            self._log.warning("connect_failed", error=reason)
            raise ConnectorError(
                f"{self._source}: cannot connect to {settings.endpoint}: {reason}"
            ) from exc
        self.connected_at = time.monotonic()
        return initial

    async def _subscribe_all(self, client: Client, executor: Executor) -> list[TagSample]:
        timeout = self._settings.timeout_s
        async with asyncio.timeout(timeout):
            namespaces: list[str] = await client.get_namespace_array()
        # Resolved per session: a restarted server may have renumbered its namespaces.
        self._index_of = {uri: i for i, uri in enumerate(namespaces)}
        self._per_call, self._per_read = await self._operation_limits(client)
        session = client.uaclient.session
        decode_publish_off_loop(session, executor)
        subscription = InboxSubscription(session, self._subscription_params(), self.inbox)
        async with asyncio.timeout(timeout):
            result = await subscription.init()
        self.subscription = subscription
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
        params.QueueSize = 1
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
        """Delete the subscription and the session; bounded in time even if the server is gone."""
        client, subscription = self.client, self.subscription
        self.client = self.subscription = None
        if client is None:
            return
        self.inbox.fail("closed")
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
