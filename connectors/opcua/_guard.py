"""An asyncua ``Server`` that refuses session services on a None secure channel.

asyncua 2.1 opens every connection with a None security policy and keeps it when the client asks
for None, even if None is not among the configured policies; CreateSession, ActivateSession
(with a password in clear text) and Read then work. Here every request on a None channel other
than endpoint discovery (GetEndpoints/FindServers, which OPC UA requires over None so a client
can learn the server certificate) is answered with BadSecurityPolicyRejected and the connection
is closed, unless None is explicitly enabled. The same hook enforces a per-session subscription
limit (asyncua only has a server-wide one).

On a secured channel asyncua checks its trust list only against CreateSession.ClientCertificate,
which the client chooses: an untrusted application certificate on the channel with an empty
ClientCertificate got a session. Here the channel's own certificate (the one the channel's keys
belong to) is checked against the trust list on CreateSession and on ActivateSession,
ClientCertificate must be that certificate, and a session is activated only from a channel with
the certificate it was created on. Failed logins (refused certificates included) are throttled
per peer address (``bridge.connectors.opcua._throttle``).

Built on asyncua internals (UaProcessor, OPCUAProtocol, BinaryServer): asyncua is pinned ~=2.1
and the raw-client integration test proves the refusal.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.common.utils import Buffer, ServiceError
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyNone
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary
from asyncua.ua.uaerrors import UaStatusCodeError

from bridge.connectors.opcua._caller import CALLER
from bridge.connectors.opcua._throttle import LoginThrottle
from bridge.connectors.opcua.convert import make_node_id
from bridge.connectors.opcua.trust import TrustList, UntrustedCertificate

__all__ = ["GuardedServer"]

log = structlog.get_logger(__name__)

_DISCOVERY = {
    make_node_id(ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary, 0),
    make_node_id(ObjectIds.FindServersRequest_Encoding_DefaultBinary, 0),
}
_CREATE_SUBSCRIPTION = make_node_id(ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary, 0)
_CREATE_SESSION = make_node_id(ObjectIds.CreateSessionRequest_Encoding_DefaultBinary, 0)
_ACTIVATE_SESSION = make_node_id(ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary, 0)
# Services that run without an activated session besides discovery: each needs a trusted channel.
_SESSIONLESS = {
    _CREATE_SESSION,
    _ACTIVATE_SESSION,
    make_node_id(ObjectIds.RegisterServerRequest_Encoding_DefaultBinary, 0),
    make_node_id(ObjectIds.RegisterServer2Request_Encoding_DefaultBinary, 0),
}
# What a wrong password or a refused user certificate makes ActivateSession answer.
_LOGIN_FAILED = {
    StatusCodes.BadUserAccessDenied,
    StatusCodes.BadIdentityTokenInvalid,
    StatusCodes.BadIdentityTokenRejected,
}
# The application certificate of the channel each session was created on (DER).
_SESSION_CERTIFICATES: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


class _GuardedProcessor(UaProcessor):
    allow_none: bool = False
    max_subscriptions_per_session: int = 10
    trust: TrustList | None = None
    logins: LoginThrottle = LoginThrottle()

    async def process_message(self, seqhdr: Any, body: Buffer) -> bool:
        peek = body.copy()
        typeid = nodeid_from_binary(peek)
        if not self.allow_none and typeid not in _DISCOVERY and self._on_none_channel():
            header = struct_from_binary(ua.RequestHeader, peek)
            log.warning("refused_on_none_channel", peer=str(self.name), request=str(typeid))
            self._fault(header, seqhdr, StatusCodes.BadSecurityPolicyRejected)
            return False  # close the connection: nothing but discovery runs on None
        if typeid in _SESSIONLESS:
            header = struct_from_binary(ua.RequestHeader, peek)
            refusal = await self._refusal(typeid, header, peek)
            if refusal is not None:
                self._fault(header, seqhdr, refusal)
                return False  # close: a refused peer gets nothing more on this channel
            if typeid == _CREATE_SESSION:
                created = await self._process_with_caller(seqhdr, body)
                if self.session is not None and not self._on_none_channel():
                    _SESSION_CERTIFICATES[self.session] = self._channel_certificate()
                return created
        if typeid == _CREATE_SUBSCRIPTION and self._subscriptions_of_session() >= (
            self.max_subscriptions_per_session
        ):
            header = struct_from_binary(ua.RequestHeader, peek)
            self._fault(header, seqhdr, StatusCodes.BadTooManySubscriptions)
            return True
        return await self._process_with_caller(seqhdr, body)

    async def _process_with_caller(self, seqhdr: Any, body: Buffer) -> bool:
        base = cast(Any, super())
        # Method handlers learn who calls them from this (asyncua passes them no session).
        token = CALLER.set(self.session.user if self.session is not None else None)
        try:
            return bool(await base.process_message(seqhdr, body))
        finally:
            CALLER.reset(token)

    async def _process_message(self, typeid: Any, requesthdr: Any, seqhdr: Any, body: Any) -> Any:
        # Called by UaProcessor.process_message, which turns a ServiceError into a ServiceFault:
        # the one place where the outcome of ActivateSession (the login) can be seen.
        base = cast(Any, super())
        if typeid != _ACTIVATE_SESSION:
            return await base._process_message(typeid, requesthdr, seqhdr, body)
        await self._prepare_password(requesthdr, body.copy())
        try:
            result = await base._process_message(typeid, requesthdr, seqhdr, body)
        except (ServiceError, UaStatusCodeError) as exc:
            if exc.code in _LOGIN_FAILED:
                self._login_failed(ua.StatusCode(cast(Any, exc.code)).name)
            raise
        self.logins.succeeded(self._peer())
        return result

    async def _prepare_password(self, header: ua.RequestHeader, body: Buffer) -> None:
        """Let the user manager check a hashed password in a thread (see ``_access``)."""
        prepare = getattr(self.iserver.user_manager, "prepare", None)
        if prepare is None:
            return
        params = struct_from_binary(ua.ActivateSessionParameters, body)
        token = params.UserIdentityToken
        session = self.session or self.iserver.lookup_external_session(header.AuthenticationToken)
        if not isinstance(token, ua.UserNameIdentityToken) or session is None:
            return
        try:
            username, password = self.iserver.decrypt_user_token(session, token)
        except Exception:  # asyncua refuses the same token right after, with its own status
            return
        if isinstance(username, str) and isinstance(password, str):
            await prepare(username, password)

    async def _refusal(
        self, typeid: ua.NodeId, header: ua.RequestHeader, peek: Buffer
    ) -> int | None:
        """The status code that refuses a CreateSession/ActivateSession/RegisterServer, or None."""
        locked = self.logins.locked_for(self._peer(), time.monotonic())
        if locked > 0:
            log.info("refused_during_login_lockout", peer=self._peer(), seconds=round(locked, 1))
            return StatusCodes.BadUserAccessDenied
        if self._on_none_channel():
            return None  # allowed only when None is enabled; there is no channel certificate
        channel = self._channel_certificate()
        if not channel:
            return StatusCodes.BadSecurityChecksFailed
        if self.trust is not None:
            try:
                await self.trust.check(
                    cast(Any, uacrypto).x509_from_der(channel), peer=self._peer()
                )
            except UntrustedCertificate as exc:
                self._login_failed("certificate_untrusted", thumbprint=exc.thumbprint)
                return exc.status
        if typeid == _CREATE_SESSION:
            params = struct_from_binary(ua.CreateSessionParameters, peek)
            if _first_certificate(params.ClientCertificate) != channel:
                log.warning(
                    "client_certificate_not_the_channel_certificate",
                    peer=self._peer(),
                    sent="none" if not params.ClientCertificate else "another certificate",
                )
                self._login_failed("client_certificate_mismatch")
                return StatusCodes.BadSecurityChecksFailed
        if typeid == _ACTIVATE_SESSION:
            session = self.session or self.iserver.lookup_external_session(
                header.AuthenticationToken
            )
            created_on = _SESSION_CERTIFICATES.get(session) if session is not None else None
            if created_on is not None and created_on != channel:
                log.warning("session_activated_from_another_certificate", peer=self._peer())
                self._login_failed("session_certificate_mismatch")
                return StatusCodes.BadSecurityChecksFailed
        return None

    def _login_failed(self, reason: str, **details: Any) -> None:
        peer = self._peer()
        lockout = self.logins.failed(peer, time.monotonic())
        log.warning("login_failed", peer=peer, reason=reason, **details)
        if lockout > 0:
            log.warning(
                "login_lockout",
                peer=peer,
                failures=self.logins.failures(peer),
                seconds=round(lockout, 1),
                hint="other peers can still log in; check this client's credentials",
            )

    def _peer(self) -> str:
        name = self.name
        return str(name[0]) if isinstance(name, tuple) and name else str(name)

    def _channel_certificate(self) -> bytes:
        return bytes(self._connection.security_policy.peer_certificate or b"")

    def _on_none_channel(self) -> bool:
        return bool(self._connection.security_policy.URI == SecurityPolicyNone.URI)

    def _subscriptions_of_session(self) -> int:
        session = self.session
        if session is None:
            return 0
        subs = self.iserver.subscription_service.subscriptions.values()
        return sum(1 for sub in subs if sub.session_id == session.session_id)

    def _fault(self, header: ua.RequestHeader, seqhdr: Any, code: int) -> None:
        response = ua.ServiceFault()
        response.ResponseHeader.ServiceResult = ua.StatusCode(cast(Any, code))
        cast(Any, self).send_response(header.RequestHandle, seqhdr, response)


def _first_certificate(data: bytes | None) -> bytes:
    """DER of the first certificate of ``data`` (a certificate or a chain); b"" if none."""
    if not data:
        return b""
    try:
        cert = cast(Any, uacrypto).x509_from_der(data)
    except ValueError:
        return b""
    return bytes(cast(Any, uacrypto).der_from_x509(cert))


class _GuardedProtocol(OPCUAProtocol):
    guard: type[_GuardedProcessor] = _GuardedProcessor

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.processor is not None:
            # Replace the plain processor before any byte of this connection is processed.
            processor = self.guard(self.iserver, self.transport, self.limits)
            cast(Any, processor).set_policies(self.policies)
            self.processor = processor


class _GuardedBinaryServer(BinaryServer):
    guard: type[_GuardedProcessor] = _GuardedProcessor

    def _make_protocol(self) -> OPCUAProtocol:
        protocol = _GuardedProtocol(
            iserver=self.iserver,
            policies=self._policies,
            clients=self.clients,
            closing_tasks=self.closing_tasks,
            limits=self.limits,
        )
        protocol.guard = self.guard
        return protocol


class GuardedServer(Server):
    """``Server`` whose connections go through ``_GuardedProcessor``."""

    def __init__(
        self,
        *,
        allow_none: bool,
        max_subscriptions_per_session: int,
        trust: TrustList | None = None,
        logins: LoginThrottle | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._guard = type(
            "_ConfiguredGuard",
            (_GuardedProcessor,),
            {
                "allow_none": allow_none,
                "max_subscriptions_per_session": max_subscriptions_per_session,
                "trust": trust,
                "logins": logins or LoginThrottle(),
            },
        )

    async def start(self) -> None:
        # Server.start() of asyncua 2.1 with the BinaryServer swapped for the guarded one.
        await self._setup_server_nodes()
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            bserver = _GuardedBinaryServer(
                self.iserver, cast(str, host), cast(int, port), self.limits
            )
            bserver.guard = self._guard
            self.bserver = bserver
            bserver.set_policies(self._policies)
            await bserver.start()
        except Exception:
            await self.iserver.stop()
            raise
