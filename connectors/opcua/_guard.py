"""An asyncua ``Server`` that refuses session services on a None secure channel.

asyncua 2.1 opens every connection with a None security policy and keeps it when the client asks
for None, even if None is not among the configured policies; CreateSession, ActivateSession
(with a password in clear text) and Read then work. Here every request on a None channel other
than endpoint discovery (GetEndpoints/FindServers, which OPC UA requires over None so a client
can learn the server certificate) is answered with BadSecurityPolicyRejected and the connection
is closed, unless None is explicitly enabled. The same hook enforces a per-session subscription
limit (asyncua only has a server-wide one).

Built on asyncua internals (UaProcessor, OPCUAProtocol, BinaryServer): asyncua is pinned ~=2.1
and the raw-client integration test proves the refusal.
"""

from __future__ import annotations

from typing import Any, cast

import structlog
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.crypto.security_policies import SecurityPolicyNone
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary

from connectors.opcua._caller import CALLER
from connectors.opcua.convert import make_node_id

__all__ = ["GuardedServer"]

log = structlog.get_logger(__name__)

_DISCOVERY = {
    make_node_id(ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary, 0),
    make_node_id(ObjectIds.FindServersRequest_Encoding_DefaultBinary, 0),
}
_CREATE_SUBSCRIPTION = make_node_id(ObjectIds.CreateSubscriptionRequest_Encoding_DefaultBinary, 0)


class _GuardedProcessor(UaProcessor):
    allow_none: bool = False
    max_subscriptions_per_session: int = 10

    async def process_message(self, seqhdr: Any, body: Buffer) -> bool:
        peek = body.copy()
        typeid = nodeid_from_binary(peek)
        if not self.allow_none and typeid not in _DISCOVERY and self._on_none_channel():
            header = struct_from_binary(ua.RequestHeader, peek)
            log.warning("refused_on_none_channel", peer=str(self.name), request=str(typeid))
            self._fault(header, seqhdr, StatusCodes.BadSecurityPolicyRejected)
            return False  # close the connection: nothing but discovery runs on None
        if typeid == _CREATE_SUBSCRIPTION and self._subscriptions_of_session() >= (
            self.max_subscriptions_per_session
        ):
            header = struct_from_binary(ua.RequestHeader, peek)
            self._fault(header, seqhdr, StatusCodes.BadTooManySubscriptions)
            return True
        base = cast(Any, super())
        # Method handlers learn who calls them from this (asyncua passes them no session).
        token = CALLER.set(self.session.user if self.session is not None else None)
        try:
            return bool(await base.process_message(seqhdr, body))
        finally:
            CALLER.reset(token)

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
        self, *, allow_none: bool, max_subscriptions_per_session: int, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._guard = type(
            "_ConfiguredGuard",
            (_GuardedProcessor,),
            {
                "allow_none": allow_none,
                "max_subscriptions_per_session": max_subscriptions_per_session,
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
