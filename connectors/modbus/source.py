"""Modbus TCP polling source: one connection, one request in flight, coalesced reads.

The runtime owns reconnects, so pymodbus's own retries and reconnect loop are switched off
and every link failure surfaces as ``ConnectorError``. A problem confined to one block (an
exception reply, a short reply, a single timeout) only makes that block's tags Bad.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from bridge.errors import ConnectorError, NotConnected
from bridge.types import Quality, SourceTag, TagSample
from connectors.modbus.config import ModbusAddress, ModbusSourceSettings
from connectors.modbus.plan import ReadBlock, plan_reads
from connectors.modbus.reply import BadReply, Reply, block_values

__all__ = ["MAX_CONSECUTIVE_FAILURES", "ModbusSource"]

log = structlog.get_logger(__name__)

# Requests in a row without a usable reply before the connection is declared dead. A
# half-open TCP link (peer gone, no RST) never fails by itself: this is what ends it.
MAX_CONSECUTIVE_FAILURES = 3

# pymodbus applies ``timeout_s`` itself; this outer deadline only catches a library hang.
_DEADLINE_MARGIN_S = 1.0


def _address(tag: SourceTag) -> ModbusAddress:
    if isinstance(tag.address, ModbusAddress):
        return tag.address
    return ModbusAddress.model_validate(tag.address)


def _reply(pdu: ModbusPDU) -> Reply:
    return Reply(
        function_code=pdu.function_code,
        unit=pdu.dev_id,
        exception_code=pdu.exception_code,
        registers=tuple(pdu.registers),
        bits=tuple(pdu.bits),
    )


class ModbusSource:
    """Polls one Modbus TCP device. Implements ``bridge.types.Source``."""

    def __init__(
        self, name: str, settings: ModbusSourceSettings, tags: Sequence[SourceTag]
    ) -> None:
        self.name = name
        self._settings = settings
        pairs = [(t.tag, _address(t)) for t in tags]
        self._blocks = tuple(plan_reads(pairs, settings.max_gap, settings.max_registers_per_read))
        self._client: AsyncModbusTcpClient | None = None
        self._failures = 0
        self._block_reason: dict[int, str] = {}
        self._counters: dict[str, int] = dict.fromkeys(
            ("polls", "requests", "bad_blocks", "no_reply", "overruns"), 0
        )

    @property
    def blocks(self) -> tuple[ReadBlock, ...]:
        """The read requests one poll cycle makes, in order."""
        return self._blocks

    @property
    def counters(self) -> Mapping[str, int]:
        return dict(self._counters)

    @property
    def endpoint(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    async def connect(self) -> None:
        if self._client is not None:
            if self._client.connected:
                return
            self._drop_client()
        s = self._settings
        client = AsyncModbusTcpClient(
            s.host,
            port=s.port,
            name=f"modbus-{self.name}",
            timeout=s.timeout_s,
            # One attempt per request; the runtime decides what happens after a failure.
            retries=0,
            # In pymodbus 3.16.1 a delay of 0 means no reconnect task is ever started
            # (transport.connection_lost only schedules one when the delay is truthy).
            reconnect_delay=0,
        )
        try:
            ok = await asyncio.wait_for(client.connect(), timeout=s.timeout_s + _DEADLINE_MARGIN_S)
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            raise ConnectorError(f"modbus {self.name}: cannot connect to {self.endpoint}") from exc
        if not ok:
            client.close()
            raise ConnectorError(f"modbus {self.name}: cannot connect to {self.endpoint}")
        self._client = client
        self._failures = 0
        log.info(
            "connected",
            source=self.name,
            endpoint=self.endpoint,
            unit=s.unit,
            blocks=len(self._blocks),
        )

    async def samples(self) -> AsyncIterator[list[TagSample]]:
        """One batch per poll cycle, forever; raises ``ConnectorError`` when the link fails."""
        interval = self._settings.poll_interval_ms / 1000.0
        next_start = time.monotonic()
        while True:
            batch = await self.poll()
            yield batch
            next_start += interval
            delay = next_start - time.monotonic()
            if delay < 0:
                # Overran: start the next cycle now instead of bursting to catch up.
                self._counters["overruns"] += 1
                next_start = time.monotonic()
                delay = 0.0
            await asyncio.sleep(delay)

    async def poll(self) -> list[TagSample]:
        """Read every block once, sequentially (one request in flight per connection)."""
        client = self._client
        if client is None:
            raise NotConnected(f"modbus {self.name}: not connected")
        self._counters["polls"] += 1
        batch: list[TagSample] = []
        try:
            for index, block in enumerate(self._blocks):
                batch.extend(await self._read_block(client, index, block))
        except ConnectorError:
            # The link is unusable: drop it so a half-open socket is not left behind.
            self._drop_client()
            raise
        return batch

    async def close(self) -> None:
        if self._client is not None:
            self._drop_client()
            log.info("closed", source=self.name, endpoint=self.endpoint)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _read_block(
        self, client: AsyncModbusTcpClient, index: int, block: ReadBlock
    ) -> list[TagSample]:
        if not client.connected:
            raise NotConnected(f"modbus {self.name}: connection to {self.endpoint} lost")
        self._counters["requests"] += 1
        deadline = self._settings.timeout_s + _DEADLINE_MARGIN_S
        try:
            pdu = await asyncio.wait_for(self._request(client, block), timeout=deadline)
        except ConnectionException as exc:
            raise NotConnected(f"modbus {self.name}: connection to {self.endpoint} lost") from exc
        except (TimeoutError, ModbusIOException) as exc:
            return self._no_reply(client, index, block, exc)
        except Exception as exc:
            # Malformed frames have surfaced as struct.error and friends: keep polling.
            log.exception("request_failed", source=self.name, table=block.table, start=block.start)
            return self._no_reply(client, index, block, exc)
        received = time.time()
        self._failures = 0
        try:
            values = block_values(block, _reply(pdu), self._settings.unit)
        except BadReply as exc:
            return self._bad(index, block, exc.reason, received)
        except Exception as exc:
            log.exception("decode_failed", source=self.name, table=block.table, start=block.start)
            return self._bad(index, block, f"decode error: {exc}", received)
        if self._block_reason.pop(index, None) is not None:
            log.info("block_recovered", source=self.name, table=block.table, start=block.start)
        return [TagSample(tag, value, Quality.GOOD, received) for tag, value in values]

    async def _request(self, client: AsyncModbusTcpClient, block: ReadBlock) -> ModbusPDU:
        unit = self._settings.unit
        if block.table == "holding":
            return await client.read_holding_registers(
                block.start, count=block.count, device_id=unit
            )
        if block.table == "input":
            return await client.read_input_registers(block.start, count=block.count, device_id=unit)
        if block.table == "coil":
            return await client.read_coils(block.start, count=block.count, device_id=unit)
        return await client.read_discrete_inputs(block.start, count=block.count, device_id=unit)

    def _no_reply(
        self, client: AsyncModbusTcpClient, index: int, block: ReadBlock, exc: Exception
    ) -> list[TagSample]:
        if not client.connected:
            raise NotConnected(f"modbus {self.name}: connection to {self.endpoint} lost") from exc
        self._counters["no_reply"] += 1
        self._failures += 1
        if self._failures >= MAX_CONSECUTIVE_FAILURES:
            log.warning(
                "connection_dead",
                source=self.name,
                endpoint=self.endpoint,
                failures=self._failures,
            )
            raise ConnectorError(
                f"modbus {self.name}: {self._failures} requests in a row to {self.endpoint} "
                "got no valid reply"
            ) from exc
        reason = f"no valid reply within {self._settings.timeout_s:g}s"
        detail = str(exc)
        if detail:
            reason = f"{reason} ({detail})"
        return self._bad(index, block, reason, time.time())

    def _bad(self, index: int, block: ReadBlock, reason: str, received: float) -> list[TagSample]:
        self._counters["bad_blocks"] += 1
        # Log changes only: a permanently bad block would otherwise log every cycle.
        if self._block_reason.get(index) != reason:
            self._block_reason[index] = reason
            log.warning(
                "block_bad",
                source=self.name,
                table=block.table,
                start=block.start,
                count=block.count,
                reason=reason,
            )
        return [TagSample(p.tag, None, Quality.BAD, received, reason=reason) for p in block.tags]
