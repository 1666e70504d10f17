"""``PredictionServer``: the gateway's own OPC UA server, where SCADA/HMI clients read predictions.

Address space (string node ids in the configured namespace, stable across restarts)::

    Objects/Predictions/<asset>/<model>/{Value, Score, ModelName, ModelVersion, ModelSha256,
                                         Quality, Timestamp, InputAge}
    nsu=urn:bridge:predictions;s=Predictions.<asset>.<model>.Value

Every variable is read-only (AccessLevel CurrentRead, no write/call service for any session).
Status codes are documented in ``connectors.opcua.encode``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server

from bridge.errors import ConnectorError
from bridge.types import ComponentHealth, Prediction, PredictionSlot, SinkContext
from connectors.opcua._access import ReaderUserManager, ReadOnlyRuleset
from connectors.opcua._guard import GuardedServer
from connectors.opcua.convert import make_node_id
from connectors.opcua.encode import FIELDS, encode_prediction, initial_values, value_type
from connectors.opcua.encode import node_string as prediction_node_string
from connectors.opcua.server_config import OpcUaServerSettings, ServerSecurityPolicy

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


class PredictionServer:
    def __init__(self, name: str, settings: OpcUaServerSettings, context: SinkContext) -> None:
        self.name = name
        self._settings = settings
        self._slots: dict[tuple[str, str], PredictionSlot] = {
            (s.asset, s.model): s for s in context.slots
        }
        self._server: Server | None = None
        self._namespace_index: int | None = None
        self._nodes: dict[tuple[str, str], dict[str, ua.NodeId]] = {}
        self._sticky: dict[tuple[str, str], dict[str, str]] = {}
        self._state: str = "starting"
        self._detail = ""
        self._counters = {"predictions": 0, "writes": 0, "unknown_slot": 0, "write_errors": 0}
        self._unknown_logged: set[tuple[str, str]] = set()
        self._log = log.bind(sink=name, endpoint=settings.endpoint)

    @property
    def namespace_index(self) -> int | None:
        return self._namespace_index

    async def start(self) -> None:
        if self._server is not None:
            return
        settings = self._settings
        server = GuardedServer(
            user_manager=cast(Any, ReaderUserManager(settings.allow_anonymous, settings.users)),
            allow_none="None" in settings.security_policies,
            max_subscriptions_per_session=settings.max_subscriptions_per_session,
        )
        try:
            await server.init()
            server.set_endpoint(settings.endpoint)
            server.set_server_name(settings.server_name)
            await server.set_application_uri(settings.application_uri)
            server.allow_remote_admin(False)
            self._apply_limits(server)
            if settings.certificate and settings.private_key:
                await server.load_certificate(settings.certificate)
                await server.load_private_key(settings.private_key)
                await self._trust_clients(server)
            server.set_security_policy(
                [_POLICY_TYPES[p] for p in settings.security_policies],
                permission_ruleset=cast(Any, ReadOnlyRuleset()),
            )
            server.set_identity_tokens(self._identity_tokens())
            ns = await server.register_namespace(settings.namespace)
            self._namespace_index = ns
            await self._build(server, ns)
            await server.start()
        except Exception as exc:
            self._state, self._detail = "down", repr(exc)
            try:
                await server.stop()
            except Exception as stop_exc:  # the original error matters more than cleanup's
                self._log.debug("stop_after_failed_start", error=repr(stop_exc))
            raise ConnectorError(f"{self.name}: cannot start OPC UA server: {exc!r}") from exc
        self._server = server
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

    async def _trust_clients(self, server: Server) -> None:
        """Client application certificates are accepted only if found in <pki_dir>/trusted."""
        trusted = Path(self._settings.pki_dir) / "trusted"
        trusted.mkdir(parents=True, exist_ok=True)
        store = TrustStore([trusted], [])
        await store.load()
        options = (
            CertificateValidatorOptions.TIME_RANGE
            | CertificateValidatorOptions.URI
            | CertificateValidatorOptions.TRUSTED
            | CertificateValidatorOptions.PEER_CLIENT
        )
        server.set_certificate_validator(cast(Any, CertificateValidator(options, store)))

    def _identity_tokens(self) -> list[type]:
        tokens: list[type] = []
        if self._settings.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if self._settings.users:
            tokens.append(ua.UserNameIdentityToken)
        return tokens

    def _warn_about_access(self) -> None:
        settings = self._settings
        if settings.allow_anonymous:
            self._log.warning("anonymous_read_only_access_enabled")
        if not settings.allow_anonymous and not settings.users:
            self._log.warning("no_client_can_log_in", hint="set allow_anonymous or users")
        if settings.users and settings.security_policies == ["None"]:
            self._log.warning("passwords_sent_in_clear_text", hint="enable a SignAndEncrypt policy")

    async def _build(self, server: Server, ns: int) -> None:
        now = datetime.now(UTC)
        root = await server.nodes.objects.add_folder(self._nid("Predictions"), f"{ns}:Predictions")
        assets: dict[str, Node] = {}
        for key, slot in sorted(self._slots.items()):
            asset_node = assets.get(slot.asset)
            if asset_node is None:
                nodeid = self._nid(f"Predictions.{slot.asset}")
                asset_node = await root.add_folder(nodeid, f"{ns}:{slot.asset}")
                assets[slot.asset] = asset_node
            model_id = self._nid(prediction_node_string(slot.asset, slot.model))
            model_node = await asset_node.add_object(model_id, f"{ns}:{slot.model}")
            initial = initial_values(slot, now)
            ids: dict[str, ua.NodeId] = {}
            for field, vtype in FIELDS.items():
                if field == "Value":
                    vtype = value_type(slot)
                nodeid = self._nid(prediction_node_string(slot.asset, slot.model, field))
                await model_node.add_variable(nodeid, f"{ns}:{field}", _placeholder(vtype), vtype)
                await server.write_attribute_value(nodeid, initial[field])
                ids[field] = nodeid
            self._nodes[key] = ids
            self._sticky[key] = {"ModelName": slot.model, "ModelVersion": slot.version}
            self._sticky[key]["ModelSha256"] = slot.sha256

    def _nid(self, identifier: str) -> ua.NodeId:
        assert self._namespace_index is not None
        return make_node_id(identifier, self._namespace_index, ua.NodeIdType.String)

    async def write(self, batch: Sequence[Prediction]) -> None:
        """Update the nodes through asyncua's in-process fast path; never waits on a client."""
        server = self._server
        if server is None:
            raise ConnectorError(f"{self.name}: write() before start()")
        now = datetime.now(UTC)
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
            sticky = self._sticky[key]
            for field, dv in encode_prediction(slot, prediction, now).items():
                if field in _STICKY:
                    text = str(dv.Value.Value) if dv.Value is not None else ""
                    if sticky.get(field) == text:
                        continue
                    sticky[field] = text
                try:
                    await server.write_attribute_value(ids[field], dv)
                except Exception as exc:  # one bad node must not stop the batch
                    self._counters["write_errors"] += 1
                    self._log.warning("node_write_failed", field=field, error=repr(exc))
                    continue
                self._counters["writes"] += 1
            self._counters["predictions"] += 1

    def health(self) -> ComponentHealth:
        state: Any = self._state
        return ComponentHealth(self.name, state, self._detail, dict(self._counters))

    async def close(self) -> None:
        server, self._server = self._server, None
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


def _placeholder(vtype: ua.VariantType) -> Any:
    """A value of the right type so the node's DataType is set; overwritten at once."""
    if vtype == ua.VariantType.String:
        return ""
    if vtype == ua.VariantType.DateTime:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return 0.0
