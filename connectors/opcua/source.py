"""``OpcUaSource``: one session, one subscription, all tags; fails loudly, never reconnects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from bridge.errors import ConnectorError, NotConnected
from bridge.types import Quality, SourceTag, TagSample
from connectors.opcua._identity import apply_identity
from connectors.opcua._inbox import Inbox
from connectors.opcua._refusal import Attempt, explain
from connectors.opcua._subscription import InboxSubscription, decode_publish_off_loop
from connectors.opcua.config import OpcUaAddress, OpcUaSourceSettings, ReconnectSettings
from connectors.opcua.convert import (
    NodeRef,
    data_value_to_sample_parts,
    make_node_id,
    node_id_for,
    parse_nsu,
)

__all__ = ["OpcUaSource"]

log = structlog.get_logger(__name__)

DEFAULT_BATCH = 1000
DEFAULT_PORT = 4840
MAX_SAMPLES_PER_BATCH = 5000
# Short enough that an abandoned session (crashed gateway) does not block a small PLC for long.
SESSION_TIMEOUT_MS = 60_000
SPILLED_REASON = "notifications dropped: client queue full"
# Larger batches are converted in the source's worker thread (see _subscription.py for why);
# smaller ones (a fast probe, a few changed tags) inline, cheaper than the thread hand-off.
OFF_LOOP_SAMPLES = 100


class OpcUaSource:
    """Subscribes all tags of one server. Per-tag problems become Bad samples, link problems
    raise ``ConnectorError``; the runtime decides when to call ``connect()`` again."""

    def __init__(self, name: str, settings: OpcUaSourceSettings, tags: Sequence[SourceTag]) -> None:
        self.name = name
        self._settings = settings
        self._tags = tuple(tags)
        self._refs: tuple[NodeRef | None, ...] = tuple(_ref(_address(t)) for t in self._tags)
        self._client: Client | None = None
        self._subscription: InboxSubscription | None = None
        self._inbox: Inbox[ua.DataValue] = Inbox(settings.queue_size)
        self._initial: list[TagSample] = []
        self._connected_at = 0.0
        self._closed = True
        self._dropped_before = 0
        self._dropped_logged = 0
        # Per session: tag handles the server refused, retried every retry_failed_items_s.
        self._failed: list[int] = []
        self._next_retry = 0.0
        self._index_of: dict[str, int] = {}
        self._per_call = DEFAULT_BATCH
        self._per_read = DEFAULT_BATCH
        # One thread per source, so a large plant's decoding never queues a small source's.
        self._worker: ThreadPoolExecutor | None = None
        self._log = log.bind(source=name, endpoint=settings.endpoint)

    @property
    def dropped(self) -> int:
        """Notifications superseded because the client queue was full (over all sessions)."""
        return self._dropped_before + self._inbox.dropped

    @property
    def connected(self) -> bool:
        return self._client is not None and self._inbox.failure is None

    @property
    def reconnect(self) -> ReconnectSettings:
        """The mapping's reconnect policy, for the runtime's supervisor (which owns the loop)."""
        return self._settings.reconnect

    @property
    def probe_address(self) -> tuple[str, int] | None:
        """host:port of the endpoint: the supervisor probes it to see a restarted server."""
        return endpoint_address(self._settings.endpoint)

    async def connect(self) -> None:
        await self.close()
        settings = self._settings
        self._dropped_before += self._inbox.dropped
        self._inbox = Inbox(settings.queue_size)
        client = Client(
            settings.endpoint,
            timeout=settings.timeout_s,
            watchdog_intervall=min(1.0, settings.watchdog_s / 4),
            auto_reconnect=False,
        )
        client.session_timeout = SESSION_TIMEOUT_MS
        inbox = self._inbox

        async def on_connection_lost(exc: Exception) -> None:
            inbox.fail(f"connection lost: {exc!r}")

        client.connection_lost_callback = on_connection_lost
        self._client = client
        self._closed = False
        attempt = Attempt()
        try:
            # set_security may fetch the endpoints over the network: bounded like every call
            async with asyncio.timeout(settings.timeout_s * 2):
                await apply_identity(client, settings, attempt)
            async with asyncio.timeout(settings.timeout_s * 2):
                await client.connect(auto_reconnect=False)
            self._initial = await self._subscribe_all(client)
        except Exception as exc:
            await self.close()
            # The status and the fix, for the log, the health detail and the CLI alike.
            reason = explain(exc, settings, attempt)
            self._log.warning("connect_failed", error=reason)
            raise ConnectorError(
                f"{self.name}: cannot connect to {settings.endpoint}: {reason}"
            ) from exc
        self._connected_at = time.monotonic()
        bad = sum(1 for s in self._initial if s.quality is Quality.BAD)
        self._log.info("connected", tags=len(self._tags), bad_tags=bad)

    async def _subscribe_all(self, client: Client) -> list[TagSample]:
        timeout = self._settings.timeout_s
        async with asyncio.timeout(timeout):
            namespaces: list[str] = await client.get_namespace_array()
        # Resolved per session: a restarted server may have renumbered its namespaces.
        self._index_of = {uri: i for i, uri in enumerate(namespaces)}
        self._per_call, self._per_read = await self._operation_limits(client)
        session = client.uaclient.session
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"opcua-{self.name}")
        decode_publish_off_loop(session, self._worker)
        subscription = InboxSubscription(session, self._subscription_params(), self._inbox)
        async with asyncio.timeout(timeout):
            result = await subscription.init()
        self._subscription = subscription
        self._check_revised(result)
        self._failed = []
        self._next_retry = time.monotonic() + self._settings.retry_failed_items_s
        return await self._create_items(client, list(range(len(self._tags))))

    async def _create_items(self, client: Client, wanted: list[int]) -> list[TagSample]:
        """Monitor ``wanted`` tag handles in batches; refused ones go to ``self._failed``."""
        assert self._subscription is not None
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
                self._failed.append(handle)
                continue
            requests.append(self._monitor_request(handle, node_id, _address(tag)))
            handles.append(handle)

        per_call = self._per_call
        subscribed: list[int] = []
        for start in range(0, len(requests), per_call):
            chunk = requests[start : start + per_call]
            async with asyncio.timeout(timeout):
                results = await self._subscription.create_monitored_items(chunk)
            for handle, outcome in zip(handles[start : start + per_call], results, strict=True):
                if isinstance(outcome, ua.StatusCode):
                    sample = TagSample(
                        self._tags[handle].tag, None, Quality.BAD, now, reason=outcome.name
                    )
                    failed.append(sample)
                    self._failed.append(handle)
                else:
                    subscribed.append(handle)
        current = await self._read_current(client, subscribed, requests, handles, self._per_read)
        return failed + current

    async def _resolve_paths(
        self, client: Client, handles: list[int]
    ) -> dict[int, ua.NodeId | str]:
        """Browse paths -> node ids for this session (TranslateBrowsePaths, batched)."""
        resolved: dict[int, ua.NodeId | str] = {}
        paths: list[ua.BrowsePath] = []
        for handle in handles:
            address = _address(self._tags[handle])
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

    async def _retry_failed(self) -> list[TagSample]:
        """Try the refused items again (a node may have been created since); others untouched."""
        client = self._client
        self._next_retry = time.monotonic() + self._settings.retry_failed_items_s
        if client is None or not self._failed:
            return []
        wanted, self._failed = self._failed, []
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                namespaces: list[str] = await client.get_namespace_array()
            self._index_of = {uri: i for i, uri in enumerate(namespaces)}
            samples = await self._create_items(client, wanted)
        except (TimeoutError, OSError, UaError) as exc:
            # A failing retry is a link problem: let the runtime reconnect.
            self._inbox.fail(f"retry of failed items: {exc!r}")
            raise ConnectorError(f"{self.name}: retry of failed items failed: {exc!r}") from exc
        recovered = len(wanted) - len(self._failed)
        if recovered:
            self._log.info(
                "failed_items_recovered", recovered=recovered, still_bad=len(self._failed)
            )
        return samples

    async def _read_current(
        self,
        client: Client,
        subscribed: list[int],
        requests: list[ua.MonitoredItemCreateRequest],
        handles: list[int],
        per_read: int,
    ) -> list[TagSample]:
        node_of = {h: r.ItemToMonitor.NodeId for h, r in zip(handles, requests, strict=True)}
        samples: list[TagSample] = []
        for start in range(0, len(subscribed), per_read):
            chunk = subscribed[start : start + per_read]
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = [
                ua.ReadValueId(NodeId=node_of[h], AttributeId=AttributeIds.Value) for h in chunk
            ]
            async with asyncio.timeout(self._settings.timeout_s):
                values = await client.uaclient.read(params)
            received = time.time()
            samples.extend(
                self._sample(h, dv, received) for h, dv in zip(chunk, values, strict=True)
            )
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

    def _sample(
        self, handle: int, dv: ua.DataValue, received: float, spilled: bool = False
    ) -> TagSample:
        value, quality, reason, source_time, server_time = data_value_to_sample_parts(dv)
        if spilled and quality is Quality.GOOD:
            quality, reason = Quality.UNCERTAIN, SPILLED_REASON
        return TagSample(
            self._tags[handle].tag, value, quality, received, source_time, server_time, reason
        )

    async def samples(self) -> AsyncIterator[Sequence[TagSample]]:
        if self._client is None:
            raise NotConnected(f"{self.name}: samples() before connect()")
        if self._initial:
            initial, self._initial = self._initial, []
            yield initial
        tick = min(0.5, self._settings.watchdog_s / 4)
        while not self._closed:
            self._check_alive()
            await self._inbox.wait(tick)
            if self._closed:
                return
            self._check_alive()
            if self._failed and time.monotonic() >= self._next_retry:
                retried = await self._retry_failed()
                if retried:
                    yield retried
            items, spilled = self._inbox.take(MAX_SAMPLES_PER_BATCH)
            if not items and not spilled:
                continue
            received = time.time()
            worker = self._worker
            if len(items) + len(spilled) < OFF_LOOP_SAMPLES or worker is None:
                batch = self._convert(items, spilled, received)
            else:
                loop = asyncio.get_running_loop()
                batch = await loop.run_in_executor(worker, self._convert, items, spilled, received)
            if spilled:
                self._log_drops()
            yield batch

    def _convert(
        self,
        items: list[tuple[int, ua.DataValue]],
        spilled: list[tuple[int, ua.DataValue]],
        received: float,
    ) -> list[TagSample]:
        batch = [self._sample(h, dv, received) for h, dv in items]
        batch.extend(self._sample(h, dv, received, spilled=True) for h, dv in spilled)
        return batch

    def _log_drops(self) -> None:
        if self._inbox.dropped != self._dropped_logged:
            self._log.warning(
                "notifications_dropped", dropped=self.dropped, queue_size=self._settings.queue_size
            )
            self._dropped_logged = self._inbox.dropped

    def _check_alive(self) -> None:
        client = self._client
        if client is None:
            raise NotConnected(f"{self.name}: not connected")
        reason = self._inbox.failure
        if reason is None and client.uaclient.state is not UaClientState.CONNECTED:
            reason = f"client state {client.uaclient.state.value}"
        if reason is None:
            subscription = self._subscription
            last = subscription.last_publish_at if subscription is not None else None
            silent = time.monotonic() - max(last or 0.0, self._connected_at)
            if silent > self._settings.watchdog_s:
                reason = f"no notification or keep-alive for {silent:.1f}s"
        if reason is not None:
            self._inbox.fail(reason)
            self._log.warning("link_lost", reason=reason)
            raise ConnectorError(f"{self.name}: {reason}")

    async def close(self) -> None:
        """Delete the subscription and the session; bounded in time even if the server is gone."""
        self._closed = True
        client, subscription = self._client, self._subscription
        self._client = self._subscription = None
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False)
        if client is None:
            return
        self._inbox.fail("closed")
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
        self._log.info("closed")


def endpoint_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of an opc.tcp URL; the OPC UA default port 4840 when none is given."""
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port: no probe, the connect attempts say what is wrong
        return None
    return (host, port or DEFAULT_PORT) if host else None


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


def _address(tag: SourceTag) -> OpcUaAddress:
    address = tag.address
    if isinstance(address, OpcUaAddress):
        return address
    return OpcUaAddress.model_validate(address)
