"""``PredictionServer``: the gateway's own OPC UA server, where SCADA/HMI clients read predictions.

Address space (string node ids in the configured namespace, stable across restarts)::

    Objects/Predictions/<asset>/<model>/{Value, Score, ModelName, ModelVersion, ModelSha256,
                                         Quality, Timestamp, InputAge, Explanation, DriftScore,
                                         PredictionId}
    nsu=urn:bridge:predictions;s=Predictions.<asset>.<model>.Value

Each ``<model>`` object is an instance of the ObjectType ``PredictionType``
(``s=Types.PredictionType``, ``bridge.connectors.opcua.predictiontype``; documented in
docs/opcua-information-model.md). Every variable is read-only (AccessLevel CurrentRead; Value,
Score, Quality and DriftScore also HistoryRead from the store: ``_history``). Each
prediction object has the methods Acknowledge, Confirm and Reject (inputs: the PredictionId
answered and a comment; output: the id stored): only ``operator`` sessions may call them, and
the answer goes to the core's FeedbackService (``bridge.connectors.opcua._feedback``).
A classifier's object also has an alarm, ``<model>/Alarm`` (OffNormalAlarmType, events,
Acknowledge/Confirm acting on the stored alert: ``bridge.connectors.opcua._alarms``).
Status codes are documented in ``bridge.connectors.opcua.encode``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.x509.oid import NameOID

from bridge.cancel import cancel_and_wait
from bridge.connectors.opcua._access import (
    CertificateRole,
    ReaderUserManager,
    ReadOnlyRuleset,
    mark_user_certificates,
)
from bridge.connectors.opcua._alarms import AlarmConditions
from bridge.connectors.opcua._batch import BatchWriter, WriteFailure
from bridge.connectors.opcua._eventfilter import install as standard_event_filters
from bridge.connectors.opcua._feedback import FeedbackMethods
from bridge.connectors.opcua._guard import GuardedServer
from bridge.connectors.opcua._history import HistoryReader, page_for
from bridge.connectors.opcua._publishing import Publishing
from bridge.connectors.opcua._throttle import LoginThrottle
from bridge.connectors.opcua.actions_folder import ActionsFolder
from bridge.connectors.opcua.certs import load_der, thumbprint
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.encode import (
    FIELDS,
    encode_prediction,
    initial_values,
    make_status,
    value_type,
)
from bridge.connectors.opcua.encode import node_string as prediction_node_string
from bridge.connectors.opcua.models_folder import ModelsFolder
from bridge.connectors.opcua.predictiontype import (
    add_nodes,
    add_prediction_type,
    folder_node,
    instance_nodes,
)
from bridge.connectors.opcua.server_config import OpcUaServerSettings, ServerSecurityPolicy
from bridge.connectors.opcua.trust import TrustList, UntrustedCertificate
from bridge.errors import ConnectorError
from bridge.types import (
    ActionControl,
    ActionView,
    ComponentHealth,
    ModelStatus,
    Prediction,
    PredictionSlot,
    SinkContext,
)

__all__ = ["PredictionServer"]

log = structlog.get_logger(__name__)

_P = ua.SecurityPolicyType
_POLICY_TYPES: dict[ServerSecurityPolicy, ua.SecurityPolicyType] = {
    "None": _P.NoSecurity,
    "Basic256Sha256_Sign": _P.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": _P.Basic256Sha256_SignAndEncrypt,
    "Aes128_Sha256_RsaOaep_Sign": _P.Aes128Sha256RsaOaep_Sign,
    "Aes128_Sha256_RsaOaep_SignAndEncrypt": _P.Aes128Sha256RsaOaep_SignAndEncrypt,
    "Aes256_Sha256_RsaPss_Sign": _P.Aes256Sha256RsaPss_Sign,
    "Aes256_Sha256_RsaPss_SignAndEncrypt": _P.Aes256Sha256RsaPss_SignAndEncrypt,
}
# Only "slowly changing" fields are skipped when unchanged; measurements are always written.
_STICKY = ("ModelName", "ModelVersion", "ModelSha256")
# A batch larger than this is written by a task of the server's own, this many predictions per
# pass with the event loop free in between: the model runner is not held up by a 2,000-asset
# burst, and a lone change that arrives meanwhile is shown at once instead of after the burst.
# 100 predictions (800 nodes) hold the loop a few ms; a `trigger: change` model's runs are at
# most as large (bridge.runtime.trigger.MAX_ROWS), so they are written in the run itself.
CHUNK = 100


class PredictionServer:
    # In a fleet the HMI server shows every asset: the gateway hands it the predictions of the
    # assets other gateways serve too (read back from the store: bridge.fleet.mirror).
    shows_fleet = True

    def __init__(self, name: str, settings: OpcUaServerSettings, context: SinkContext) -> None:
        self.name = name
        self._settings = settings
        self._slots: dict[tuple[str, str], PredictionSlot] = {
            (s.asset, s.model): s for s in context.slots
        }
        self._counters = {
            "predictions": 0,
            "writes": 0,
            "unknown_slot": 0,
            "write_errors": 0,
            "superseded": 0,  # newer prediction of the same asset+model came before it was shown
            # Made for the past (backfill): not shown; HistoryRead has them from the store.
            "historical": 0,
        }
        self.chunk = CHUNK
        # Predictions of large batches not shown yet, oldest first; one per asset+model.
        self._pending: dict[tuple[str, str], Prediction] = {}
        self._drain: asyncio.Task[None] | None = None
        self._log = log.bind(sink=name, endpoint=settings.endpoint)
        self._feedback = (
            FeedbackMethods(context.feedback, self._counters, self._log)
            if context.feedback is not None
            else None
        )
        # Alarms of the classifiers' predictions, backed by the store's alerts (_alarms.py).
        self._alarms = (
            AlarmConditions(context.alarms, self._counters, self._log)
            if context.alarms is not None
            else None
        )
        # HistoryRead of Value, Score, Quality and DriftScore from the store (_history.py).
        self._history_service = context.history
        self._history: HistoryReader | None = None
        self._server: Server | None = None
        self._writer: BatchWriter | None = None
        self._models: ModelsFolder | None = None
        # The write-back actions (actions_folder.py); built at start, fed by show_actions.
        self._actions = ActionsFolder(self._nid, self._counters)
        self._namespace_index: int | None = None
        self._nodes: dict[tuple[str, str], dict[str, ua.NodeId]] = {}
        self._assets: set[str] = set()  # assets with a folder under Predictions
        # One layout change at a time (a reload); the writes never wait for it.
        self._layout = asyncio.Lock()
        self._sticky: dict[tuple[str, str], dict[str, str]] = {}
        self._state: str = "starting"
        self._detail = ""
        self._unknown_logged: set[tuple[str, str]] = set()

    @property
    def namespace_index(self) -> int | None:
        return self._namespace_index

    @property
    def address_space(self) -> Server | None:
        """The running asyncua server, None when stopped: the NodeSet2 export
        (``bridge.connectors.opcua.nodeset``) reads its nodes."""
        return self._server

    async def start(self) -> None:
        if self._server is not None:
            return
        settings = self._settings
        try:
            certificate_users = await asyncio.to_thread(self._certificate_users)
        except (OSError, ValueError) as exc:
            self._state, self._detail = "down", repr(exc)
            raise ConnectorError(f"{self.name}: cannot load a user certificate: {exc!r}") from exc
        users = ReaderUserManager(settings.allow_anonymous, settings.users, certificate_users)
        trust = self._trust_list()
        lockout = settings.login_lockout
        server = GuardedServer(
            user_manager=cast(Any, users),
            allow_none="None" in settings.security_policies,
            max_subscriptions_per_session=settings.max_subscriptions_per_session,
            trust=trust,
            logins=LoginThrottle(
                after_failures=lockout.after_failures,
                first_lockout_s=lockout.first_lockout_s,
                max_lockout_s=lockout.max_lockout_s,
            ),
        )
        # OfType in event filters matches subtypes (HMIs filter alarm lists on a supertype).
        standard_event_filters()
        try:
            await server.init()
            mark_user_certificates(server.iserver)
            server.set_endpoint(settings.endpoint)
            server.set_server_name(settings.server_name)
            await server.set_application_uri(settings.application_uri)
            server.allow_remote_admin(False)
            self._apply_limits(server)
            publishing = Publishing(server, settings.min_publishing_interval_ms)
            if settings.certificate and settings.private_key:
                await server.load_certificate(settings.certificate)
                await server.load_private_key(settings.private_key)
            if trust is not None:
                server.set_certificate_validator(cast(Any, _ClientCertificateValidator(trust)))
            server.set_security_policy(
                [_POLICY_TYPES[p] for p in settings.security_policies],
                permission_ruleset=cast(Any, ReadOnlyRuleset()),
            )
            server.set_identity_tokens(self._identity_tokens())
            ns = await server.register_namespace(settings.namespace)
            self._namespace_index = ns
            page = page_for(settings.max_message_size)
            self._history = HistoryReader(server, self._history_service, page=page)
            await self._history.install(server)
            if self._alarms is not None:  # the alarms' events history
                await self._history.serve_events(self._alarms.read_events)
            await self._build(server, ns)
            self._models = ModelsFolder(self._nid, ns)
            await self._models.build(server, list(self._slots.values()))
            await self._actions.build(server, ns)
            await server.start()
        except Exception as exc:
            self._state, self._detail = "down", repr(exc)
            try:
                await server.stop()
            except Exception as stop_exc:  # the original error matters more than cleanup's
                self._log.debug("stop_after_failed_start", error=repr(stop_exc))
            raise ConnectorError(f"{self.name}: cannot start OPC UA server: {exc!r}") from exc
        self._server = server
        self._writer = BatchWriter(server, publishing)
        self._writer.prepare(ns)
        if self._alarms is not None:  # state from the store, then its event and poll tasks
            await self._alarms.start(publishing.wake)
        self._state, self._detail = "ok", ""
        self._warn_about_access()
        self._log.info("server_started", slots=len(self._slots), namespace_index=ns)

    def _apply_limits(self, server: Server) -> None:
        settings = self._settings
        limits = server.limits
        # asyncua's default accepts 100 MB messages; a small HMI server needs far less.
        limits.max_message_size = settings.max_message_size
        limits.max_chunk_count = -(-settings.max_message_size // limits.max_recv_buffer)
        server.iserver.max_connections = settings.max_connections

    def _trust_list(self) -> TrustList | None:
        """Client application certificates are trusted by <pki_dir>
        (``bridge.connectors.opcua.trust``); an empty list is fine: certificate-based clients are
        refused until trusted."""
        settings = self._settings
        if not (settings.certificate and settings.private_key):
            return None
        return TrustList(
            Path(settings.pki_dir), rejected_cap=settings.rejected_cap, purpose="clients"
        )

    def _identity_tokens(self) -> list[type]:
        tokens: list[type] = []
        if self._settings.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if self._settings.users:
            tokens.append(ua.UserNameIdentityToken)
        if self._settings.user_certificates:
            tokens.append(ua.X509IdentityToken)
        return tokens

    def _certificate_users(self) -> dict[bytes, CertificateRole]:
        """Configured user certificates by DER bytes (blocking file reads: run in a thread)."""
        found: dict[bytes, CertificateRole] = {}
        for user in self._settings.user_certificates:
            der = load_der(Path(user.certificate))
            cert = x509.load_der_x509_certificate(der)
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            name = user.name or (str(names[0].value) if names else thumbprint(der))
            found[der] = CertificateRole(name, user.role)
        return found

    def _warn_about_access(self) -> None:
        settings = self._settings
        if settings.allow_anonymous:
            self._log.warning("anonymous_read_only_access_enabled")
        if not settings.allow_anonymous and not settings.users and not settings.user_certificates:
            self._log.warning(
                "no_client_can_log_in", hint="set allow_anonymous, users or user_certificates"
            )
        if settings.users and settings.security_policies == ["None"]:
            self._log.warning("passwords_sent_in_clear_text", hint="enable a SignAndEncrypt policy")

    async def _build(self, server: Server, ns: int) -> None:
        await add_prediction_type(server, ns, self._settings.namespace)
        await server.nodes.objects.add_folder(self._nid("Predictions"), f"{ns}:Predictions")
        for key in sorted(self._slots):
            await self._add_slot(server, self._slots[key])

    async def _add_slot(self, server: Server, slot: PredictionSlot) -> None:
        """The object of one asset+model and its variables and methods (at start, and for a
        slot a mapping reload adds: the same node ids and browse paths)."""
        ns = self._namespace_index
        assert ns is not None
        key = (slot.asset, slot.model)
        asset_id = self._nid(f"Predictions.{slot.asset}")
        items = []
        if slot.asset not in self._assets:
            # AddNodes items, not Node.add_folder/add_object: those first browse all the
            # references of the parent (Predictions: one more per asset), a third of a
            # 1,000-slot start under the profiler.
            items.append(folder_node(self._nid("Predictions"), asset_id, slot.asset))
        identifier = prediction_node_string(slot.asset, slot.model)
        model_id = self._nid(identifier)
        # An instance of PredictionType (bridge.connectors.opcua.predictiontype).
        items += instance_nodes(
            asset_id,
            identifier,
            ns,
            slot.model,
            value_type(slot),
            slot.unit,
            self._settings.namespace,
        )
        await add_nodes(server, items)
        self._assets.add(slot.asset)
        model_node = server.get_node(model_id)
        initial = initial_values(slot, datetime.now(UTC))
        ids: dict[str, ua.NodeId] = {}
        for field in FIELDS:
            nodeid = self._nid(prediction_node_string(slot.asset, slot.model, field))
            await server.write_attribute_value(nodeid, initial[field])
            ids[field] = nodeid
        if self._history is not None:  # Value, Score, Quality, DriftScore: HistoryRead
            await self._history.historize(slot, ids)
        if self._feedback is not None:
            await self._feedback.add(model_node, ns, key, self._nid)
        if self._alarms is not None:  # a classifier's OffNormalAlarm under its object
            await self._alarms.add(server, ns, self._nid, slot)
        self._sticky[key] = {"ModelName": slot.model, "ModelVersion": slot.version}
        self._sticky[key]["ModelSha256"] = slot.sha256
        # Last: a prediction of this slot is written only once every node exists.
        self._slots[key] = slot
        self._nodes[key] = ids
        self._unknown_logged.discard(key)

    async def _remove_slot(self, server: Server, key: tuple[str, str]) -> None:
        """Mark the variables of one asset+model ``BadConfigurationError`` (the mapping no
        longer serves it), then delete its object (and its asset folder once empty): a client
        subscribed to one of them sees the Bad status last, not a frozen Good value. Reading
        the nodes afterwards answers ``BadNodeIdUnknown``."""
        # First: from here on a prediction of this slot is counted as unknown, not written.
        ids = self._nodes.pop(key, {})
        writer = self._writer
        if writer is not None and ids:
            now = datetime.now(UTC)
            gone = make_status(StatusCodes.BadConfigurationError)
            items = [
                (nodeid, ua.DataValue(StatusCode=gone, SourceTimestamp=cast(Any, now)))
                for nodeid in ids.values()
            ]
            failures = writer.write(items)
            failures += await writer.settle()
            self._count(len(items), failures)
        self._slots.pop(key, None)
        self._sticky.pop(key, None)
        self._pending.pop(key, None)
        # Its last predictions (the model stops after this) are counted, not warned about.
        self._unknown_logged.add(key)
        asset, model = key
        if self._alarms is not None:  # a last event (Retain false) before its nodes go
            await self._alarms.remove(key, all(a != asset for a, _ in self._slots))
        await _delete(server, server.get_node(self._nid(prediction_node_string(asset, model))))
        if all(a != asset for a, _ in self._slots):
            self._assets.discard(asset)
            await _delete(server, server.get_node(self._nid(f"Predictions.{asset}")))

    async def follow_slots(self, slots: Sequence[PredictionSlot]) -> None:
        """Serve ``slots`` from now on (``bridge.types.FollowsSlots``: a mapping reload added or
        removed assets or models). A new slot gets its nodes at once (AddNodes at run time,
        the node ids and browse paths it would have had at start); a slot gone loses them; a
        slot whose value type or unit changed gets new nodes; every other slot keeps its nodes,
        so a client's monitored items on them go on without a gap."""
        wanted = {(s.asset, s.model): s for s in slots}
        server = self._server
        if server is None:  # not started yet: start builds the address space from these
            self._slots = wanted
            return
        async with self._layout:
            current = dict(self._slots)
            redo = [k for k in wanted if k in current and _layout(current[k]) != _layout(wanted[k])]
            gone = [k for k in current if k not in wanted]
            for key in [*gone, *redo]:
                await self._remove_slot(server, key)
            added = sorted(k for k in wanted if k not in self._slots)
            for key in added:
                await self._add_slot(server, wanted[key])
            for key, slot in wanted.items():
                self._slots[key] = slot  # a new version or labels: shown with the next value
            if self._alarms is not None:  # a new severity, normal label or hold
                self._alarms.follow(wanted.values())
            if self._models is not None:
                await self._models.follow(server, list(wanted.values()))
            if self._writer is not None and self._namespace_index is not None:
                # Nodes deleted or made again under the same ids: not the ones resolved before.
                self._writer.prune()
                self._writer.prepare(self._namespace_index)
        if gone or added:
            self._log.info(
                "server_slots_changed",
                added=[f"{a}/{m}" for a, m in added if (a, m) not in redo],
                removed=[f"{a}/{m}" for a, m in gone],
                rebuilt=[f"{a}/{m}" for a, m in redo],
                slots=len(self._slots),
            )

    def _nid(self, identifier: str) -> ua.NodeId:
        assert self._namespace_index is not None
        return make_node_id(identifier, self._namespace_index, ua.NodeIdType.String)

    async def write_models(self, statuses: Sequence[ModelStatus]) -> None:
        """Update the ``Models`` folder (bridge.connectors.opcua.models_folder), one pass."""
        writer = self._writer
        if writer is not None and self._models is not None:
            items = self._models.changes(statuses)
            failures = writer.write(items)
            failures += await writer.settle()
            self._count(len(items), failures)

    def show_actions(self, statuses: Sequence[ActionView], control: ActionControl) -> None:
        """Show the write-back actions in the ``Actions`` folder and call ``control`` from its
        methods (``bridge.types.FollowsActions``; bridge.connectors.opcua.actions_folder)."""
        self._actions.offer(statuses, control)

    async def write(self, batch: Sequence[Prediction]) -> None:
        """Show a batch; never waits on a client.

        A batch of up to ``chunk`` predictions is written now, in one synchronous pass over the
        address space (``bridge.connectors.opcua._batch``: no await per node, subscribed clients'
        notifications queued in the same pass). A larger one is handed to the drain task,
        written ``chunk`` at a time. An HMI shows the latest value, so a prediction still
        waiting there when a newer one of its asset+model arrives is dropped (``superseded``),
        and a small batch that arrives meanwhile is written at once: it is the newest.
        """
        if self._writer is None:
            raise ConnectorError(f"{self.name}: write() before start()")
        if batch and batch[0].historical:  # the runner publishes the past in batches of its own
            self._counters["historical"] += len(batch)
            return
        if self._alarms is not None:  # every prediction, before large batches are coalesced
            self._alarms.feed(batch)
        pending = self._pending
        if len(batch) <= self.chunk:
            if pending:
                for p in batch:
                    if pending.pop((p.asset, p.model), None) is not None:
                        self._counters["superseded"] += 1
            await self._write_now(batch)
            return
        for p in batch:
            key = (p.asset, p.model)
            if pending.pop(key, None) is not None:
                self._counters["superseded"] += 1
            pending[key] = p
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_pending(), name=f"{self.name}-drain")

    async def drained(self) -> None:
        """Wait until every prediction handed to ``write`` has been written (or superseded)."""
        while self._drain is not None and not self._drain.done():
            await asyncio.shield(self._drain)

    async def _drain_pending(self) -> None:
        pending = self._pending
        while pending and self._writer is not None:
            keys = list(itertools.islice(pending, self.chunk))
            try:
                await self._write_now([pending.pop(k) for k in keys])
            except Exception:  # a defect must not stop the HMI for good: logged, next chunk
                self._log.exception("hmi_chunk_write_failed", predictions=len(keys))
            # The loop runs between chunks: notifications, a lone change's run, client publishes.
            await asyncio.sleep(0)

    async def _write_now(self, batch: Sequence[Prediction]) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectorError(f"{self.name}: write() before start()")
        now = datetime.now(UTC)
        items: list[tuple[ua.NodeId, ua.DataValue]] = []
        feedback = self._feedback
        for prediction in batch:
            key = (prediction.asset, prediction.model)
            ids = self._nodes.get(key)
            slot = self._slots.get(key)
            if ids is None or slot is None:
                self._counters["unknown_slot"] += 1
                if key not in self._unknown_logged:
                    self._unknown_logged.add(key)
                    self._log.warning("prediction_for_unknown_slot", asset=key[0], model=key[1])
                continue
            if feedback is not None:
                feedback.shown(prediction)
            sticky = self._sticky[key]
            # The model's name, version and hash rarely change: skip encoding them when equal.
            model_fields = (
                sticky["ModelName"] != prediction.model
                or sticky["ModelVersion"] != prediction.version
                or sticky["ModelSha256"] != prediction.sha256
            )
            for field, dv in encode_prediction(slot, prediction, now, model_fields).items():
                if field in _STICKY:
                    text = str(dv.Value.Value) if dv.Value is not None else ""
                    if sticky.get(field) == text:
                        continue
                    sticky[field] = text
                items.append((ids[field], dv))
            self._counters["predictions"] += 1
        failures = writer.write(items)
        failures += await writer.settle()
        self._count(len(items), failures)

    def _count(self, attempted: int, failures: list[WriteFailure]) -> None:
        self._counters["writes"] += attempted - len(failures)
        if failures:  # one bad node must not stop the batch: counted, logged once per batch
            self._counters["write_errors"] += len(failures)
            nodeid, code = failures[0]
            self._log.warning(
                "node_write_failed",
                failed=len(failures),
                first=str(nodeid.Identifier),
                status=ua.StatusCode(cast(Any, code)).name,
            )

    def health(self) -> ComponentHealth:
        state: Any = self._state
        return ComponentHealth(self.name, state, self._detail, dict(self._counters))

    async def close(self) -> None:
        if self._drain is not None:  # what is still pending is not shown: the server stops
            await cancel_and_wait(self._drain)
            self._drain = None
        self._pending.clear()
        if self._alarms is not None:
            await self._alarms.close()
        await self._actions.close()
        server, self._server = self._server, None
        self._writer = None
        if server is None:
            if self._state != "down":
                self._state = "stopped"
            return
        started = time.monotonic()
        try:
            await server.stop()
        finally:
            self._state, self._detail = "stopped", ""
            self._log.info("server_stopped", seconds=round(time.monotonic() - started, 3))


class _ClientCertificateValidator(CertificateValidator):
    """asyncua's checks of CreateSession.ClientCertificate (validity, ApplicationUri in the
    SAN) followed by the trust list. The guard has already required that certificate to be the
    secure channel's and checked it; this also covers a None channel when None is enabled."""

    def __init__(self, trust: TrustList) -> None:
        options = (
            CertificateValidatorOptions.TIME_RANGE
            | CertificateValidatorOptions.URI
            | CertificateValidatorOptions.PEER_CLIENT
        )
        super().__init__(options)
        self._trust = trust

    async def validate(
        self, cert: x509.Certificate, app_description: ua.ApplicationDescription
    ) -> None:
        await super().validate(cert, app_description)
        try:
            await self._trust.check(cert)
        except UntrustedCertificate as exc:
            raise ServiceError(exc.status) from exc


async def _delete(server: Server, node: Node) -> None:
    """Delete ``node`` and what is under it. asyncua 2.1's delete calls each monitored item's
    (async) data change callback without awaiting it: nothing reaches the client (it has had
    the Bad status already) and Python warns of a coroutine never awaited, once per item. The
    delete does not suspend on the way, so the warning filter covers exactly that call."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"coroutine '.*datachange_callback' was never awaited"
        )
        await server.delete_nodes([node], recursive=True)


def _layout(slot: PredictionSlot) -> tuple[ua.VariantType, str]:
    """What a slot's nodes are made with: a change of either needs new nodes."""
    return value_type(slot), slot.unit
