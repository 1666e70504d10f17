"""A Modbus PLC simulator serving ``REGISTER_MAP``, with values that change over time, over
Modbus TCP, RTU framing on TCP (as serial-to-Ethernet gateways speak) or an RTU serial line.

Built on pymodbus 3.16's ``SimDevice``/``SimData`` (what its server runs on internally; the
older ``ModbusDeviceContext`` is converted to it and its ``async_setValues`` no longer writes).
Addresses outside the map are marked invalid, so reading them gives exception 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pymodbus import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from bridge.simulators.plc.register_map import REGISTER_MAP, Signal
from bridge.simulators.service import Service

__all__ = ["PlcSimulator", "RequestRecord", "serve_forever"]

log = structlog.get_logger(__name__)

# Function code used to write each table through the server's datastore API.
_WRITE_FC = {"holding": 16, "input": 4, "coil": 15, "discrete": 2}
_TABLE_INDEX = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}
_REQUEST_LOG_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the simulator received (for tests and diagnostics)."""

    function_code: int
    address: int
    count: int
    unit: int


def _build_device(unit: int, signals: Sequence[Signal], t: float) -> SimDevice:
    tables: tuple[list[SimData], list[SimData], list[SimData], list[SimData]] = ([], [], [], [])
    for s in signals:
        words = s.registers_at(t)
        if s.table in ("coil", "discrete"):
            data = SimData(s.address, values=[bool(words[0])], datatype=DataType.BITS)
        else:
            data = SimData(s.address, values=words, datatype=DataType.REGISTERS)
        tables[_TABLE_INDEX[s.table]].append(data)
    # Separate tables (not pymodbus's shared layout) so coil N is bit N, as on a real PLC.
    return SimDevice(id=unit, simdata=tables)


class PlcSimulator(Service):
    """Serves ``REGISTER_MAP`` on ``host:port`` for unit ``unit`` (and ``more_units``, each
    with the same registers); stoppable and restartable.

    ``framer`` ``rtu`` speaks RTU frames over TCP; ``serial_port`` serves RTU on that serial
    device instead of TCP. ``silent_units=True`` makes requests to unknown units go unanswered
    (a dead device behind a gateway) instead of answering exception 11.

    Simulator time ``t`` counts seconds from construction (a restart keeps counting). The
    registers are refreshed every ``update_interval_s``; ``apply(t)`` sets them for any ``t``
    (tests use a long interval and ``apply`` to freeze known values). ``signals`` replaces
    the register map (a test's PLC with holes between its registers, say).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5020,
        unit: int = 1,
        update_interval_s: float = 0.5,
        *,
        more_units: Sequence[int] = (),
        framer: str = "socket",
        serial_port: str | None = None,
        silent_units: bool = False,
        signals: Sequence[Signal] = REGISTER_MAP,
    ) -> None:
        self._host = host
        self._signals = tuple(signals)
        self._port = port
        self._unit = unit
        self._units = (unit, *more_units)
        self._framer = FramerType.RTU if framer == "rtu" or serial_port else FramerType.SOCKET
        self._serial_port = serial_port
        self._silent_units = silent_units
        self._interval = update_interval_s
        self._epoch = time.monotonic()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._updater: asyncio.Task[None] | None = None
        self._time = 0.0
        self._requests: deque[RequestRecord] = deque(maxlen=_REQUEST_LOG_SIZE)

    @property
    def port(self) -> int:
        """The listening port (the real one when constructed with port 0)."""
        return self._port

    @property
    def host(self) -> str:
        return self._host

    @property
    def unit(self) -> int:
        return self._unit

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def time(self) -> float:
        """Simulator time of the values currently in the registers."""
        return self._time

    @property
    def requests(self) -> list[RequestRecord]:
        """Requests received so far (the most recent 10,000)."""
        return list(self._requests)

    def clear_requests(self) -> None:
        self._requests.clear()

    def now(self) -> float:
        return time.monotonic() - self._epoch

    async def start(self) -> None:
        if self._server is not None:
            return
        self._time = self.now()
        devices = [_build_device(u, self._signals, self._time) for u in self._units]
        server: ModbusTcpServer | ModbusSerialServer
        if self._serial_port is not None:
            server = ModbusSerialServer(
                devices,
                framer=FramerType.RTU,
                port=self._serial_port,
                trace_packet=self._trace_packet,
                trace_pdu=self._trace_pdu,
            )
        else:
            server = ModbusTcpServer(
                devices,
                framer=self._framer,
                address=(self._host, self._port),
                trace_packet=self._trace_packet,
                trace_pdu=self._trace_pdu,
            )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            if ModbusBaseServer.active_server is server:
                ModbusBaseServer.active_server = None
            raise OSError(f"PLC simulator cannot listen on {self._host}:{self._port}") from exc
        listener = server.transport
        sockets = getattr(listener, "sockets", None)
        if sockets:
            self._port = int(sockets[0].getsockname()[1])
        self._server = server
        self._updater = asyncio.create_task(self._update_loop(), name="plc-simulator-update")
        log.info("plc_simulator_started", host=self._host, port=self._port, unit=self._unit)

    async def stop(self) -> None:
        server, self._server = self._server, None
        updater, self._updater = self._updater, None
        if updater is not None:
            updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await updater
        if server is None:
            return
        listener = server.transport
        # Closes the listener and every client connection (clients see the link drop).
        await server.shutdown()  # type: ignore[no-untyped-call]
        if isinstance(listener, asyncio.Server):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), timeout=2.0)
        if ModbusBaseServer.active_server is server:
            ModbusBaseServer.active_server = None
        log.info("plc_simulator_stopped", host=self._host, port=self._port)

    async def apply(self, t: float) -> None:
        """Put the values of simulator time ``t`` into the registers."""
        server = self._server
        if server is None:
            raise RuntimeError("PLC simulator is not running")
        for s in self._signals:
            words = s.registers_at(t)
            values: list[int] | list[bool] = (
                [bool(w) for w in words] if s.table in ("coil", "discrete") else words
            )
            # One call per signal: a 32-bit value is never seen half-written.
            for unit in self._units:
                await server.async_setValues(unit, _WRITE_FC[s.table], s.address, values)
        self._time = t

    async def _update_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.apply(self.now())
            except Exception:
                log.exception("plc_simulator_update_failed")

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        # pymodbus 3.16's ignore_missing_devices has no effect with SimDevice lists (an
        # unknown id fails inside the datastore and is answered with an exception), so a
        # silent unit's answer is dropped here: nothing is sent, as with a dead device.
        if sending and self._silent_units and packet:
            unit = packet[0] if self._framer == FramerType.RTU else packet[6]
            if unit not in self._units:
                return b""
        return packet

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self._requests.append(
                RequestRecord(pdu.function_code, pdu.address, pdu.count, pdu.dev_id)
            )
        return pdu


async def serve_forever(
    host: str = "127.0.0.1",
    port: int = 5020,
    unit: int = 1,
    update_interval_s: float = 0.5,
) -> None:
    """Run the simulator until cancelled (used by the CLI)."""
    async with PlcSimulator(host, port, unit, update_interval_s) as sim:
        log.info("plc_simulator_serving", host=sim.host, port=sim.port, signals=len(REGISTER_MAP))
        await asyncio.Event().wait()
