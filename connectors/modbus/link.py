"""One Modbus connection (TCP, RTU-over-TCP or an RTU serial line) and the read requests on it.

This is the only module that builds pymodbus clients. pymodbus's own retries, reconnect loop
and "close after N silent requests" are switched off: the source decides what a failure
means (``bridge.connectors.modbus.source``) and the runtime owns reconnects.

RTU frames (serial line and RTU-over-TCP) carry no transaction id, and pymodbus hands the next
frame that arrives to whichever request is waiting. A reply that comes after its request timed
out would then be taken as the answer to the next request, and when both ask the same unit
with the same function code and count, no check of the reply can tell. So after a request on
an RTU link ends without its reply, the line is drained before the next request is sent: the
link waits until nothing has arrived for ``timeout_s`` (whatever arrives meanwhile is
discarded), as libmodbus does after a timeout. A line that does not go quiet within
``_SETTLE_ROUNDS`` timeouts is reset (closed; the runtime reconnects). Modbus TCP needs none of
this: its replies carry the request's transaction id, which
``bridge.connectors.modbus.reply`` checks.
"""

from __future__ import annotations

import asyncio
import struct
import time

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)

from bridge.cancel import kept_cancellation
from bridge.connectors.modbus.config import ModbusSourceSettings
from bridge.connectors.modbus.plan import ReadBlock
from bridge.connectors.modbus.reply import Reply

__all__ = ["LineNotQuiet", "Link", "MalformedFrame"]


class MalformedFrame(Exception):
    """Bytes arrived for a request but do not decode as a Modbus reply."""


class LineNotQuiet(ConnectionError):
    """Bytes kept arriving after a failed RTU request: the link was reset."""


# Longest drain, in timeouts, before a chattering line is reset.
_SETTLE_ROUNDS = 4


_REQUESTS: dict[str, type[ModbusPDU]] = {
    "holding": ReadHoldingRegistersRequest,
    "input": ReadInputRegistersRequest,
    "coil": ReadCoilsRequest,
    "discrete": ReadDiscreteInputsRequest,
}

# Large enough that pymodbus never drops the link on its own after silent requests: a silent
# unit behind a gateway says nothing about the link, and the source counts silence itself.
_NEVER = 1_000_000

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class Link:
    """A connection that carries one request at a time (callers serialize; see the source)."""

    def __init__(self, name: str, settings: ModbusSourceSettings) -> None:
        self._name = name
        self._settings = settings
        self._client: Client | None = None
        self._rtu = settings.transport in ("rtu", "rtu-over-tcp")
        self._last_rx = 0.0  # monotonic time bytes last arrived
        self._unsettled_since: float | None = None  # an RTU request ended without its reply
        self.drains = 0  # drains done (a late reply may have been discarded in each)
        self.resets = 0  # links closed because the line did not go quiet

    @property
    def deadline_s(self) -> float:
        """Longest a ``read`` may take: the request's timeout plus, on RTU, a full drain."""
        timeout = self._settings.timeout_s
        return timeout * (1 + _SETTLE_ROUNDS) if self._rtu else timeout

    def suspect(self) -> None:
        """The last reply did not fit its request (it may have been a late one): on RTU, drain
        the line before the next request, since the real reply may still be coming."""
        if self._rtu:
            self._unsettled_since = time.monotonic()

    @property
    def endpoint(self) -> str:
        s = self._settings
        if s.transport == "rtu":
            assert s.serial is not None
            return f"{s.serial.port}@{s.serial.baudrate}"
        return f"{s.host}:{s.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def _build(self) -> Client:
        s = self._settings
        name = f"modbus-{self._name}"
        # retries=0: one attempt per request; the runtime decides what happens after a
        # failure. reconnect_delay=0: in pymodbus 3.16 no reconnect task is then ever started
        # (transport.connection_lost only schedules one when the delay is truthy).
        client: Client
        if s.transport == "rtu":
            assert s.serial is not None
            client = AsyncModbusSerialClient(
                s.serial.port,
                framer=FramerType.RTU,
                baudrate=s.serial.baudrate,
                bytesize=s.serial.bytesize,
                parity=s.serial.parity,
                stopbits=s.serial.stopbits,
                name=name,
                timeout=s.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        else:
            assert s.host is not None
            framer = FramerType.RTU if s.transport == "rtu-over-tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(
                s.host,
                port=s.port,
                framer=framer,
                name=name,
                timeout=s.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        client.set_max_no_responses(_NEVER)
        _decode_read_replies(client)
        _fail_request_on_undecodable_frame(client)
        self._note_arrivals(client)
        return client

    def _note_arrivals(self, client: Client) -> None:
        ctx = client.ctx
        original = ctx.callback_data

        def noted(data: bytes, addr: tuple[str, int] | None = None) -> int:
            self._last_rx = time.monotonic()
            used: int = original(data, addr)
            return used

        ctx.callback_data = noted  # type: ignore[method-assign]

    async def connect(self, deadline_s: float) -> bool:
        """Open the connection; False if it could not be opened within ``deadline_s``."""
        self.close()
        client = self._build()
        try:
            # The timeout inside kept_cancellation: its own cancel is taken back at its exit,
            # while a stop that pymodbus's wait_for swallowed is raised again.
            with kept_cancellation():
                async with asyncio.timeout(deadline_s):
                    ok = bool(await client.connect())
        except BaseException:
            client.close()
            raise
        if not ok:
            client.close()
            return False
        self._client = client
        return True

    async def read(self, block: ReadBlock) -> Reply:
        """Send one read request for ``block`` and return its reply, checked by nobody yet.

        Raises pymodbus's ``ConnectionException`` / ``ModbusIOException`` (and, for malformed
        frames, whatever the library raises) for the caller to classify.
        """
        client = self._client
        if client is None:
            raise ConnectionError("not connected")
        if self._unsettled_since is not None:
            await self._drain(client)
        request = _REQUESTS[block.table](address=block.start, count=block.count, dev_id=block.unit)
        try:
            pdu: ModbusPDU = await client.execute(False, request)
        except BaseException:
            # Timeout, malformed or mismatched frame, cancellation: the reply may still come.
            self.suspect()
            raise
        return Reply(
            function_code=pdu.function_code,
            unit=pdu.dev_id,
            exception_code=pdu.exception_code,
            registers=pdu.registers,
            bits=pdu.bits,
            transaction_id=pdu.transaction_id,
            # pymodbus stamps the request with its transaction id when sending it.
            request_transaction_id=request.transaction_id,
        )

    async def _drain(self, client: Client) -> None:
        """Wait until the line has been quiet for ``timeout_s``; bytes arriving meanwhile are
        dropped by pymodbus (no request is waiting). Resets the link if it does not go quiet."""
        assert self._unsettled_since is not None
        quiet = self._settings.timeout_s
        give_up = time.monotonic() + quiet * _SETTLE_ROUNDS
        self.drains += 1
        while True:
            wait = max(self._last_rx, self._unsettled_since) + quiet - time.monotonic()
            if wait <= 0:
                break
            if time.monotonic() + wait > give_up:
                self.resets += 1
                self.close()
                raise LineNotQuiet(
                    f"bytes still arriving {quiet * _SETTLE_ROUNDS:g}s after a failed request"
                )
            await asyncio.sleep(wait)
        client.ctx.recv_buffer = b""  # a partial late frame must not prefix the next reply
        self._unsettled_since = None

    def close(self) -> None:
        client, self._client = self._client, None
        self._unsettled_since = None
        if client is not None:
            client.close()


def _fail_request_on_undecodable_frame(client: Client) -> None:
    """Make a frame pymodbus cannot decode fail the pending request instead of the link.

    pymodbus 3.16 raises ``ModbusIOException("Unable to decode ...")`` from inside the
    protocol's ``data_received``; asyncio then closes the transport, so one malformed frame
    from one unit would drop the connection for every unit behind it. Here the bytes are
    dropped and the waiting request fails at once with ``MalformedFrame``.
    """
    ctx = client.ctx
    original = ctx.callback_data

    def guarded(data: bytes, addr: tuple[str, int] | None = None) -> int:
        try:
            used: int = original(data, addr)
        except ModbusIOException as exc:
            future = ctx.response_future
            if not future.done():
                future.set_exception(MalformedFrame(str(exc)))
            return len(data)
        return used

    ctx.callback_data = guarded  # type: ignore[method-assign]


_READ_FUNCTION_CODES = frozenset({1, 2, 3, 4})
_REGISTER_REPLIES: dict[int, type[ModbusPDU]] = {
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
}


def _decode_read_replies(client: Client) -> None:
    """Check the byte count of every read reply, and decode register replies in one call.

    pymodbus 3.16 ignores the byte count of FC1/FC2 replies altogether (it unpacks whatever
    bytes follow), so a frame claiming 3 bytes but carrying 1 would decode as 8 plausible
    bits: such a frame is rejected here, before pymodbus decodes it. A register reply that
    passes is decoded here too: pymodbus unpacks it one register at a time and then formats
    the whole reply into a debug string whether debug logging is on or not, which together
    cost more than the bridge's own decoding of the tags in it.
    """
    decoder = client.ctx.framer.decoder
    original = decoder.decode

    def checked(frame: bytes) -> ModbusPDU | None:
        if not frame or frame[0] not in _READ_FUNCTION_CODES:
            return original(frame)
        size = len(frame) - 2
        if size < 0 or frame[1] != size:
            raise ModbusIOException(
                f"byte count {frame[1] if len(frame) > 1 else None} for {size} data bytes"
            )
        reply = _REGISTER_REPLIES.get(frame[0])
        if reply is None or size % 2:
            return original(frame)
        pdu = reply()
        pdu.registers = struct.unpack(f">{size // 2}H", frame[2:])
        return pdu

    decoder.decode = checked  # type: ignore[method-assign]
