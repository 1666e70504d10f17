"""Write-back through an OPC UA source's server: the Value of a variable written with the
Variant type of the target's ``type``, and read back.

A writer has its own session with the source's endpoint, security and identity
(``_identity.apply_identity``, checked against the same trust list), opened on the first call
and again on the call after a failure; it never borrows the source's session, whose requests
it would queue behind. Each call is one attempt within the source's ``timeout_s`` (opening the
session first takes at most twice as long again): asyncua's auto-reconnect is off and nothing is
retried here, because a write that timed out may have taken effect and only the caller can judge
whether to write again. ``nsu=`` node ids are resolved through the namespace array of each
session (indexes change across server restarts).

Only the Value is sent: no status code, no timestamps, which some PLC servers refuse in a write
(Siemens S7-1500 answers BadWriteNotSupported). A status the server answers
(``BadNotWritable``, ``BadTypeMismatch``, ``BadUserAccessDenied``, ...) is a ``WriteRefused``
naming it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from bridge.cancel import kept_cancellation
from bridge.config.actions import FLOAT32_MAX, INT_RANGES, OpcUaTarget
from bridge.connectors.opcua._identity import apply_identity
from bridge.connectors.opcua._refusal import Attempt, explain
from bridge.connectors.opcua._session import SESSION_TIMEOUT_MS, probe_interval
from bridge.connectors.opcua.config import OpcUaSourceSettings
from bridge.connectors.opcua.convert import node_id_for, parse_nsu, status_name, variant_to_value
from bridge.errors import (
    NotRepresentable,
    WriteError,
    WriteNotConnected,
    WriteRefused,
    WriteTimedOut,
)
from bridge.types import Quality, WriteValue

__all__ = ["VARIANT_TYPES", "OpcUaWriter", "variant_for"]

T = TypeVar("T")

VARIANT_TYPES: dict[str, ua.VariantType] = {
    "bool": ua.VariantType.Boolean,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "int64": ua.VariantType.Int64,
    "uint64": ua.VariantType.UInt64,
    "float32": ua.VariantType.Float,
    "float64": ua.VariantType.Double,
}


def variant_for(type_: str, value: WriteValue) -> ua.Variant:
    """The Variant that carries ``value`` as ``type_``; raises ``NotRepresentable`` for a value
    the type cannot hold. Integers are not rounded here (the action rounds them): a fraction is
    refused."""
    vtype = VARIANT_TYPES[type_]
    if type_ == "bool":
        if not isinstance(value, bool):
            raise NotRepresentable(f"a Boolean takes true or false, not {value!r}")
        return ua.Variant(value, vtype)
    if isinstance(value, bool):
        raise NotRepresentable(f"a {vtype.name} takes a number, not {value!r}")
    if not math.isfinite(value):
        # NaN or an infinity is never a setpoint, even where Float/Double could carry it.
        raise NotRepresentable(f"{value!r} is not a finite number")
    if type_ in INT_RANGES:
        if isinstance(value, float) and not value.is_integer():
            raise NotRepresentable(f"{vtype.name} needs an integer, got {value!r}")
        low, high = INT_RANGES[type_]
        if not low <= value <= high:
            raise NotRepresentable(f"{value!r} is outside {vtype.name} [{low}, {high}]")
        return ua.Variant(int(value), vtype)
    if type_ == "float32" and abs(value) > FLOAT32_MAX:
        raise NotRepresentable(f"{value!r} is beyond the largest Float")
    return ua.Variant(float(value), vtype)


class OpcUaWriter:
    """Writes variables of one OPC UA source's server. Implements ``bridge.types.TargetWriter``."""

    def __init__(self, name: str, settings: OpcUaSourceSettings) -> None:
        self.name = name
        self._settings = settings
        self._timeout = settings.timeout_s
        self._client: Client | None = None
        self._index_of: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self.connects = 0  # sessions opened (the first, and one after each failure)

    async def write(self, target: Any, value: WriteValue) -> None:
        target = _opcua_target(target)
        where = f"{self.name}: {target.node}"
        try:
            variant = variant_for(target.type, value)
        except NotRepresentable as exc:
            raise NotRepresentable(f"{where}: {exc}", target=where) from None

        async def send(client: Client) -> list[ua.StatusCode]:
            params = ua.WriteParameters()
            params.NodesToWrite = [
                ua.WriteValue(
                    NodeId=self._node(target),
                    AttributeId=AttributeIds.Value,
                    Value=ua.DataValue(Value=variant, StatusCode=None),
                )
            ]
            return await client.uaclient.write(params)

        results = await self._call(send, where, writing=True)
        status = results[0] if results else None
        if status is None or not status.is_good():
            code = int(status.value) if status is not None else 0x80000000
            raise self._refused(where, "writing", code)

    async def read(self, target: Any) -> WriteValue:
        target = _opcua_target(target)
        where = f"{self.name}: {target.node}"

        async def send(client: Client) -> list[ua.DataValue]:
            params = ua.ReadParameters()
            params.NodesToRead = [
                ua.ReadValueId(NodeId=self._node(target), AttributeId=AttributeIds.Value)
            ]
            return await client.uaclient.read(params)

        values = await self._call(send, where, writing=False)
        dv = values[0]
        if dv.StatusCode is not None and dv.StatusCode.is_bad():
            raise self._refused(where, "reading back", int(dv.StatusCode.value))
        converted = variant_to_value(dv.Value)
        if converted.quality is Quality.BAD or not isinstance(converted.value, bool | int | float):
            raise WriteError(
                f"{where}: the value read back is no number or bool ({converted.reason or 'text'})",
                target=where,
            )
        return converted.value

    def _node(self, target: OpcUaTarget) -> ua.NodeId:
        ref = parse_nsu(target.node)
        index = self._index_of.get(ref.uri)
        if index is None:
            raise _UnknownNamespace(ref.uri)
        return node_id_for(ref, index)

    def _refused(self, where: str, doing: str, code: int) -> WriteRefused:
        status = status_name(code)
        return WriteRefused(
            f"{where}: the server refused {doing}: {status}{_HINTS.get(status, '')}",
            status=status,
            target=where,
        )

    async def _call(
        self, send: Callable[[Client], Awaitable[T]], where: str, *, writing: bool
    ) -> T:
        """Open the session if needed, then one request within the timeout; every failure but
        a refusal of the node drops the session, so the next call opens a new one."""
        maybe = "; the write may have taken effect" if writing else ""
        async with self._lock:
            client = await self._session(where)
            try:
                with kept_cancellation():
                    async with asyncio.timeout(self._timeout):
                        return await send(client)
            except _UnknownNamespace as exc:
                raise WriteRefused(
                    f"{where}: the server has no namespace {exc.uri!r}; check the nsu= of the "
                    "node id against the server's namespace array",
                    status="BadNodeIdUnknown",
                    target=where,
                ) from None
            except TimeoutError:
                await self._drop()
                raise WriteTimedOut(
                    f"{where}: no answer within {self._timeout:g}s{maybe}",
                    target=where,
                    maybe_written=writing,
                ) from None
            except UaStatusCodeError as exc:
                # The whole request refused: a session or channel the server no longer knows
                # (it restarted, it timed the session out) is a lost connection, the rest a
                # refusal (the user's rights, say).
                await self._drop()
                status = status_name(exc.code)
                if status.startswith(_LOST):
                    raise WriteNotConnected(
                        f"{where}: the server dropped the session: {status}{maybe}",
                        target=where,
                        maybe_written=writing,
                    ) from exc
                raise self._refused(where, "the request", exc.code) from exc
            except (ConnectionError, OSError, UaError) as exc:
                await self._drop()
                raise WriteNotConnected(
                    f"{where}: connection to {self._settings.endpoint} lost: {exc!r}{maybe}",
                    target=where,
                    maybe_written=writing,
                ) from exc
            except BaseException:
                self._abort()  # cancelled mid-request: the answer may still come
                raise

    async def _session(self, where: str) -> Client:
        client = self._client
        if client is not None and client.uaclient.state is UaClientState.CONNECTED:
            return client
        await self._drop()
        settings = self._settings
        client = Client(
            settings.endpoint,
            timeout=settings.timeout_s,
            watchdog_intervall=probe_interval(settings.watchdog_s),
            auto_reconnect=False,
        )
        client.session_timeout = SESSION_TIMEOUT_MS
        attempt = Attempt()
        self.connects += 1
        try:
            with kept_cancellation():
                async with asyncio.timeout(settings.timeout_s * 2):
                    await apply_identity(client, settings, attempt)
                    await client.connect(auto_reconnect=False)
                    namespaces = await client.get_namespace_array()
        except Exception as exc:
            client.disconnect_socket()
            raise WriteNotConnected(
                f"{where}: cannot open a session with {settings.endpoint}: "
                f"{explain(exc, settings, attempt)}",
                target=where,
            ) from exc
        except BaseException:
            client.disconnect_socket()
            raise
        self._index_of = {str(uri): i for i, uri in enumerate(namespaces)}
        self._client = client
        return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.uaclient.state is UaClientState.CONNECTED:
                async with asyncio.timeout(self._timeout):
                    await client.disconnect()
        except (TimeoutError, OSError, UaError):
            pass  # the socket is dropped below whatever happened
        finally:
            client.disconnect_socket()

    def _abort(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect_socket()

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()


class _UnknownNamespace(Exception):
    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.uri = uri


_LOST = (
    "BadSession",
    "BadSecureChannel",
    "BadConnection",
    "BadNotConnected",
    "BadCommunicationError",
    "BadServerHalted",
    "BadShutdown",
    "BadTooManySessions",
)
_HINTS = {
    "BadNotWritable": " (the variable's AccessLevel has no CurrentWrite: it is read-only)",
    "BadUserAccessDenied": " (the source's user may not write this variable: give it the "
    "right on the server, or log in as a user who has it)",
    "BadTypeMismatch": " (the variable's DataType is not the target's `type`: set `type:` to "
    "the variable's DataType)",
    "BadNodeIdUnknown": " (no such node: check the node id)",
    "BadWriteNotSupported": " (the server refuses this kind of write, e.g. with a status or "
    "timestamps)",
    "BadOutOfRange": " (the server's range for the variable excludes the value)",
}


def _opcua_target(target: Any) -> OpcUaTarget:
    if isinstance(target, OpcUaTarget):
        return target
    return OpcUaTarget.model_validate(target)
