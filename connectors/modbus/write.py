"""Write-back through a Modbus source's device: a holding register (FC6 for one register,
FC16 for several) or a coil (FC5), and the read back (FC3 / FC1) decoded the same way.

A writer has its own TCP connection with the source's settings (host, port, unit, timeout),
opened on the first call and again on the call after a failure: it never shares the source's
connection, whose requests it would have to queue behind. Each call is one attempt: pymodbus's
retries and reconnects are off (as for the source, ``link.py``) and nothing is retried here,
because a write that timed out may have taken effect and only the caller can judge whether to
write again. Replies are checked as for reads (transaction id, function code, unit) and, for
a write, the echoed address and value.

Only Modbus TCP is written. On an RTU line (serial, or RTU frames over TCP) the source owns
the line and replies carry no transaction id: a second client there takes the source's replies
for its own (two clients on one serial gateway swap replies), so a writer for such a source is
refused when it is made.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import WriteSingleCoilRequest
from pymodbus.pdu.register_message import (
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from bridge.cancel import kept_cancellation
from bridge.config.actions import ModbusTarget
from bridge.connectors.modbus.codec import encode
from bridge.connectors.modbus.config import ModbusAddress, ModbusSourceSettings
from bridge.connectors.modbus.link import Link
from bridge.connectors.modbus.plan import PlannedTag, ReadBlock
from bridge.connectors.modbus.reply import EXCEPTION_NAMES, BadReply, Reply, checked_values
from bridge.errors import (
    NotRepresentable,
    WriteError,
    WriteNotConnected,
    WriteRefused,
    WriteTimedOut,
)
from bridge.types import WriteValue

__all__ = ["ModbusWriter", "WriteReply", "check_write_reply", "exception_status", "words_for"]

T = TypeVar("T")

# pymodbus gets this much longer than the writer's own deadline, so that a silent device
# ends in the writer's TimeoutError rather than in one of pymodbus's exceptions.
_LIBRARY_MARGIN_S = 1.0
_COIL_ON = 0xFF00
_WRITE_FC = {"coil": 5, "one": 6, "several": 16}


def exception_status(code: int) -> str:
    """``IllegalDataAddress`` for exception 2: the name of a Modbus exception code."""
    name = EXCEPTION_NAMES.get(code)
    if name is None:
        return f"ModbusException{code}"
    return "".join(word.capitalize() for word in name.split())


def words_for(target: ModbusTarget, value: WriteValue) -> list[int]:
    """The registers (address order) or, for a coil, the single bit (0/1) to write; raises
    ``NotRepresentable`` for a value the target's type cannot hold. Integers are not rounded
    here (the action rounds them): a fraction is refused."""
    kind = target.value_type
    if kind == "bool":
        if not isinstance(value, bool):
            raise NotRepresentable(f"a coil takes true or false, not {value!r}")
        return [1 if value else 0]
    if isinstance(value, bool):
        raise NotRepresentable(f"a {kind} register takes a number, not {value!r}")
    if not math.isfinite(value):
        # NaN or an infinity is never a setpoint, even where float32/float64 could carry it.
        raise NotRepresentable(f"{value!r} is not a finite number")
    try:
        return encode(value, kind, target.word_order)
    except ValueError as exc:
        raise NotRepresentable(str(exc)) from None


@dataclass(frozen=True, slots=True)
class WriteReply:
    """The parts of a write reply that are checked, free of any library type. ``value`` is
    the echoed register (FC6) or coil word (FC5: 0xFF00 on, 0 off); ``count`` the registers
    an FC16 reply says were written."""

    function_code: int
    unit: int
    transaction_id: int
    request_transaction_id: int
    exception_code: int = 0
    address: int = 0
    value: int | None = None
    count: int | None = None


def check_write_reply(
    reply: WriteReply, function_code: int, unit: int, address: int, words: Sequence[int]
) -> str | None:
    """None if ``reply`` confirms writing ``words`` at ``address`` of ``unit`` with
    ``function_code``; else why not. A refusal (exception reply) is raised by the caller,
    not judged here."""
    if reply.transaction_id != reply.request_transaction_id:
        return (
            f"reply transaction id {reply.transaction_id} does not match request "
            f"{reply.request_transaction_id}"
        )
    if reply.function_code != function_code:
        return f"reply function code {reply.function_code} does not match request {function_code}"
    if unit and reply.unit != unit:
        return f"reply from unit {reply.unit}, expected unit {unit}"
    if reply.address != address:
        return f"reply echoes address {reply.address}, not {address}"
    if function_code == 16:
        if reply.count != len(words):
            return f"reply says {reply.count} registers were written, not {len(words)}"
        return None
    expected = (_COIL_ON if words[0] else 0) if function_code == 5 else words[0]
    if reply.value != expected:
        return f"reply echoes value {reply.value}, not {expected}"
    return None


def _request(target: ModbusTarget, unit: int, words: list[int]) -> ModbusPDU:
    if target.table == "coil":
        return WriteSingleCoilRequest(address=target.address, bits=[bool(words[0])], dev_id=unit)
    if len(words) == 1:
        return WriteSingleRegisterRequest(address=target.address, registers=words, dev_id=unit)
    return WriteMultipleRegistersRequest(address=target.address, registers=words, dev_id=unit)


def _reply_of(pdu: ModbusPDU, request: ModbusPDU) -> WriteReply:
    value: int | None = None
    if pdu.function_code == 5 and pdu.bits:
        value = _COIL_ON if pdu.bits[0] else 0
    elif pdu.function_code == 6 and pdu.registers:
        value = int(pdu.registers[0])
    return WriteReply(
        function_code=pdu.function_code,
        unit=pdu.dev_id,
        transaction_id=pdu.transaction_id,
        # pymodbus stamps the request with its transaction id when sending it.
        request_transaction_id=request.transaction_id,
        exception_code=pdu.exception_code,
        address=pdu.address,
        value=value,
        count=pdu.count if pdu.function_code == 16 else None,
    )


class _Link(Link):
    """The source's hardened connection (byte counts checked, an undecodable frame fails the
    request, not the link) with a write request besides its reads."""

    async def execute(self, request: ModbusPDU) -> ModbusPDU:
        client = self._client
        if client is None:
            raise ConnectionError("not connected")
        pdu: ModbusPDU = await client.execute(False, request)
        return pdu


class ModbusWriter:
    """Writes holding registers and coils of the devices behind one Modbus TCP source.
    Implements ``bridge.types.TargetWriter``."""

    def __init__(self, name: str, settings: ModbusSourceSettings) -> None:
        if settings.transport != "tcp":
            raise WriteError(
                f"source {name!r} (transport {settings.transport}): write-back goes through "
                "Modbus TCP only; on an RTU line a second client would take the source's "
                "replies for its own (RTU frames carry no transaction id)",
                target=name,
            )
        self.name = name
        self._settings = settings
        self._timeout = settings.timeout_s
        library = settings.model_copy(update={"timeout_s": settings.timeout_s + _LIBRARY_MARGIN_S})
        self._link = _Link(f"{name}-writer", library)
        self._lock = asyncio.Lock()
        self.connects = 0  # connections opened (the first, and one after each failure)

    def _unit(self, target: ModbusTarget) -> int:
        return self._settings.unit if target.unit is None else target.unit

    def _describe(self, target: ModbusTarget) -> str:
        return f"{self.name}: unit {self._unit(target)} {target.table} {target.address}"

    async def write(self, target: Any, value: WriteValue) -> None:
        target = _modbus_target(target)
        where = self._describe(target)
        try:
            words = words_for(target, value)
        except NotRepresentable as exc:
            raise NotRepresentable(f"{where}: {exc}", target=where) from None
        unit = self._unit(target)
        request = _request(target, unit, words)
        function_code = request.function_code
        pdu = await self._call(lambda: self._link.execute(request), where, writing=True)
        reply = _reply_of(pdu, request)
        if _refusal(reply.function_code, function_code, reply.unit, unit, reply):
            raise self._refused(where, "writing", reply.exception_code)
        problem = check_write_reply(reply, function_code, unit, target.address, words)
        if problem is not None:
            # Possibly a late reply to another request: the stream is out of step.
            self._link.close()
            raise WriteError(
                f"{where}: the reply to the write does not confirm it ({problem}); "
                "read the target back to see what it holds",
                target=where,
                maybe_written=True,
            )

    async def read(self, target: Any) -> WriteValue:
        target = _modbus_target(target)
        where = self._describe(target)
        unit = self._unit(target)
        address = ModbusAddress(
            table=target.table,
            address=target.address,
            type=target.value_type,
            word_order=target.word_order,
            unit=unit,
        )
        block = ReadBlock(
            table=target.table,
            start=target.address,
            count=target.register_count,
            tags=(PlannedTag("target", address, 0),),
            unit=unit,
        )
        reply: Reply = await self._call(lambda: self._link.read(block), where, writing=False)
        expected_fc = 1 if target.table == "coil" else 3
        if _refusal(reply.function_code, expected_fc, reply.unit, unit, reply):
            raise self._refused(where, "reading back", reply.exception_code)
        try:
            value = checked_values(block, reply)[0]
        except BadReply as exc:
            self._link.close()
            raise WriteError(
                f"{where}: unusable reply to the read back: {exc.reason}", target=where
            ) from None
        assert isinstance(value, bool | int | float)
        return value

    def _refused(self, where: str, doing: str, code: int) -> WriteRefused:
        status = exception_status(code)
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        return WriteRefused(
            f"{where}: the device refused {doing}: modbus exception {code} ({name}, {status}); "
            "check the table, address and unit against the device's register map",
            status=status,
            target=where,
        )

    async def _call(self, send: Callable[[], Awaitable[T]], where: str, *, writing: bool) -> T:
        """Connect if needed, then one request within the timeout; every failure but a
        refusal closes the connection, so the next call opens a new one."""
        async with self._lock:
            if not self._link.connected:
                await self._connect(where)
            try:
                with kept_cancellation():
                    async with asyncio.timeout(self._timeout):
                        return await send()
            except TimeoutError:
                self._link.close()
                raise WriteTimedOut(
                    f"{where}: no reply within {self._timeout:g}s"
                    + ("; the write may have taken effect" if writing else ""),
                    target=where,
                    maybe_written=writing,
                ) from None
            except (ConnectionError, ConnectionException) as exc:
                self._link.close()
                raise WriteNotConnected(
                    f"{where}: connection to {self._link.endpoint} lost: {exc}"
                    + ("; the write may have taken effect" if writing else ""),
                    target=where,
                    maybe_written=writing,
                ) from exc
            except (ModbusException, OSError) as exc:
                self._link.close()
                raise WriteError(
                    f"{where}: request failed: {exc}", target=where, maybe_written=writing
                ) from exc
            except BaseException:
                self._link.close()  # cancelled mid-request: the reply may still come
                raise

    async def _connect(self, where: str) -> None:
        self.connects += 1
        try:
            ok = await self._link.connect(self._timeout)
        except TimeoutError:
            ok = False
        except (OSError, ModbusException) as exc:
            raise WriteNotConnected(
                f"{where}: cannot connect to {self._link.endpoint}: {exc}", target=where
            ) from exc
        if not ok:
            self._link.close()
            raise WriteNotConnected(
                f"{where}: cannot connect to {self._link.endpoint} within {self._timeout:g}s",
                target=where,
            )

    async def aclose(self) -> None:
        async with self._lock:
            self._link.close()


def _refusal(
    function_code: int, requested: int, unit: int, asked: int, ids: WriteReply | Reply
) -> bool:
    """Whether a reply is this request's exception reply (else it is checked as an answer,
    and an exception reply to another request fails those checks)."""
    return (
        function_code == requested | 0x80
        and (not asked or unit == asked)
        and ids.transaction_id == ids.request_transaction_id
    )


def _modbus_target(target: Any) -> ModbusTarget:
    if isinstance(target, ModbusTarget):
        return target
    return ModbusTarget.model_validate(target)
