"""Modbus polling source: one connection, one request in flight, coalesced reads, per-unit
poll rates and circuit breakers.

A source is one connection (TCP socket, RTU-over-TCP socket or serial line) shared by every
unit reached through it. The runtime owns reconnects, so pymodbus's own retries and reconnect
loop are switched off (``bridge.connectors.modbus.link``) and a dead link surfaces as
``ConnectorError``. A problem confined to one block (an exception reply, a short or mismatched
reply) only makes that block's tags Bad; a unit that stops answering is skipped for a while
(``bridge.connectors.modbus.breaker``) so it does not eat the line's time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import structlog
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from bridge.cancel import kept_cancellation
from bridge.connectors.modbus.breaker import Breaker
from bridge.connectors.modbus.config import ModbusAddress, ModbusSourceSettings
from bridge.connectors.modbus.link import Link, MalformedFrame
from bridge.connectors.modbus.plan import ReadBlock, plan_reads
from bridge.connectors.modbus.reply import BadReply, checked_values
from bridge.errors import ConnectorError, NotConnected
from bridge.types import Quality, SourceTag, TagSample

__all__ = ["MAX_CONSECUTIVE_FAILURES", "ModbusSource"]

log = structlog.get_logger(__name__)

# Requests in a row without any reply before the connection is declared dead (and only once
# every unit has been silent: one dead unit behind a gateway says nothing about the link). A
# half-open TCP link (peer gone, no RST) never fails by itself: this is what ends it.
MAX_CONSECUTIVE_FAILURES = 3

# pymodbus applies ``timeout_s`` itself; this outer deadline only catches a library hang.
_DEADLINE_MARGIN_S = 1.0


def _address(tag: SourceTag) -> ModbusAddress:
    if isinstance(tag.address, ModbusAddress):
        return tag.address
    return ModbusAddress.model_validate(tag.address)


@dataclass(slots=True)
class _Device:
    """One unit: its blocks (with their index in ``ModbusSource.blocks``), rate and breaker."""

    unit: int
    interval_s: float
    blocks: tuple[tuple[int, ReadBlock], ...]
    breaker: Breaker
    next_due: float = 0.0


class _NoReply(Exception):
    """A request got no usable frame at all (timeout, garbage): the unit may be dead."""


class ModbusSource:
    """Polls the devices behind one Modbus connection. Implements ``bridge.types.Source``."""

    def __init__(
        self, name: str, settings: ModbusSourceSettings, tags: Sequence[SourceTag]
    ) -> None:
        self.name = name
        self._settings = settings
        pairs = [(t.tag, _address(t)) for t in tags]
        self._blocks = tuple(
            plan_reads(pairs, settings.max_gap, settings.max_registers_per_read, settings.unit)
        )
        self._block_tags = tuple(tuple(p.tag for p in b.tags) for b in self._blocks)
        units = sorted({b.unit for b in self._blocks})
        self._devices = tuple(
            _Device(
                unit=u,
                interval_s=settings.interval_s(u),
                blocks=tuple((i, b) for i, b in enumerate(self._blocks) if b.unit == u),
                breaker=Breaker(
                    settings.breaker_failures,
                    settings.breaker_backoff_s,
                    settings.breaker_max_backoff_s,
                ),
            )
            for u in units
        )
        self._link = Link(name, settings)
        # A lock, not just sequential code: poll() and samples() may be driven by different
        # callers (e.g. `bridge verify`), and the line must still carry one request at a time.
        self._line = asyncio.Lock()
        self._silent_requests = 0
        self._silent_units: set[int] = set()
        self._block_reason: dict[int, str] = {}
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "polls",
                "requests",
                "bad_blocks",
                "no_reply",
                "overruns",
                "skipped",
                "breaker_opened",
            ),
            0,
        )

    @property
    def blocks(self) -> tuple[ReadBlock, ...]:
        """The read requests one poll of every device makes, in order."""
        return self._blocks

    @property
    def units(self) -> tuple[int, ...]:
        return tuple(d.unit for d in self._devices)

    @property
    def counters(self) -> Mapping[str, int]:
        # drains: RTU line drained after a request ended without its reply (late replies
        # discarded); line_resets: links closed because the line would not go quiet.
        return {**self._counters, "drains": self._link.drains, "line_resets": self._link.resets}

    @property
    def endpoint(self) -> str:
        return self._link.endpoint

    async def connect(self) -> None:
        if self._link.is_open:
            if self._link.connected:
                return
            self._link.close()
        deadline = self._settings.timeout_s + _DEADLINE_MARGIN_S
        try:
            ok = await self._link.connect(deadline)
        except (TimeoutError, OSError, ModbusException) as exc:
            raise ConnectorError(f"modbus {self.name}: cannot connect to {self.endpoint}") from exc
        if not ok:
            raise ConnectorError(f"modbus {self.name}: cannot connect to {self.endpoint}")
        self._silent_requests = 0
        self._silent_units.clear()
        log.info(
            "connected",
            source=self.name,
            endpoint=self.endpoint,
            transport=self._settings.transport,
            units=list(self.units),
            blocks=len(self._blocks),
        )

    async def samples(self) -> AsyncIterator[list[TagSample]]:
        """One batch per device poll, each device on its own rate, forever.

        Polls run one after the other, so a device's poll never overlaps its previous one
        (nor any other poll on the line). Raises ``ConnectorError`` when the link fails.
        """
        if not self._devices:
            # No tags on this source: nothing to ask, but keep the contract (a live iterator).
            while True:
                if not self._link.is_open:
                    raise NotConnected(f"modbus {self.name}: not connected")
                yield []
                await asyncio.sleep(self._settings.poll_interval_ms / 1000.0)
        now = time.monotonic()
        for device in self._devices:
            device.next_due = now
        while True:
            device = min(self._devices, key=lambda d: d.next_due)
            delay = device.next_due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield await self._poll_device(device)
            device.next_due += device.interval_s
            if device.next_due < time.monotonic():
                # Overran: start the next poll now instead of bursting to catch up.
                self._counters["overruns"] += 1
                device.next_due = time.monotonic()

    async def poll(self) -> list[TagSample]:
        """Poll every device once, in unit order (one request in flight at a time)."""
        batch: list[TagSample] = []
        for device in self._devices:
            batch.extend(await self._poll_device(device))
        return batch

    async def close(self) -> None:
        if self._link.is_open:
            self._link.close()
            log.info("closed", source=self.name, endpoint=self.endpoint)

    async def _poll_device(self, device: _Device) -> list[TagSample]:
        if not self._link.is_open:
            raise NotConnected(f"modbus {self.name}: not connected")
        now = time.monotonic()
        if device.breaker.is_open(now):
            return self._skipped(device, now)
        self._counters["polls"] += 1
        batch: list[TagSample] = []
        good = False
        try:
            for n, (index, block) in enumerate(device.blocks):
                try:
                    samples = await self._read_block(index, block)
                except _NoReply as exc:
                    # The unit did not answer: asking it for its other blocks would only
                    # hold the line for another timeout each.
                    reason = str(exc)
                    for rest_index, rest in device.blocks[n:]:
                        batch.extend(self._bad(rest_index, rest, reason, time.time()))
                    break
                good = good or any(s.quality is Quality.GOOD for s in samples)
                batch.extend(samples)
        except ConnectorError:
            # The link is unusable: drop it so a half-open socket is not left behind.
            self._link.close()
            raise
        if good:
            device.breaker.success()
        elif device.breaker.failure(time.monotonic()):
            self._counters["breaker_opened"] += 1
            log.warning(
                "unit_backing_off",
                source=self.name,
                unit=device.unit,
                failures=device.breaker.failed_in_a_row,
                retry_in_s=round(device.breaker.retry_in(time.monotonic()), 3),
            )
        return batch

    def _skipped(self, device: _Device, now: float) -> list[TagSample]:
        self._counters["skipped"] += 1
        reason = (
            f"unit {device.unit} skipped after {device.breaker.failed_in_a_row} failed polls "
            f"in a row (retry in {device.breaker.retry_in(now):.1f}s)"
        )
        received = time.time()
        return [
            TagSample(p.tag, None, Quality.BAD, received, reason=reason)
            for _, block in device.blocks
            for p in block.tags
        ]

    async def _read_block(self, index: int, block: ReadBlock) -> list[TagSample]:
        if not self._link.connected:
            raise NotConnected(f"modbus {self.name}: connection to {self.endpoint} lost")
        self._counters["requests"] += 1
        deadline = self._link.deadline_s + _DEADLINE_MARGIN_S
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for wraps the read in a task of its
            # own, which cost more than the decoding of a whole block.
            with kept_cancellation():
                async with self._line, asyncio.timeout(deadline):
                    reply = await self._link.read(block)
        except (ConnectionException, ConnectionError) as exc:
            raise NotConnected(f"modbus {self.name}: connection to {self.endpoint} lost") from exc
        except MalformedFrame as exc:
            self._silent_requests = 0  # bytes came back: the link itself is alive
            self._silent_units.clear()
            return self._bad(index, block, f"malformed reply ({exc})", time.time())
        except (TimeoutError, ModbusIOException) as exc:
            self._no_reply(block, exc)
        except Exception as exc:
            # Malformed frames have surfaced as struct.error and friends: keep polling.
            log.exception("request_failed", source=self.name, unit=block.unit, start=block.start)
            self._no_reply(block, exc)
        received = time.time()
        self._silent_requests = 0
        self._silent_units.clear()
        try:
            values = checked_values(block, reply)
        except BadReply as exc:
            if exc.mismatch:
                self._link.suspect()
            return self._bad(index, block, exc.reason, received)
        except Exception as exc:
            log.exception("decode_failed", source=self.name, unit=block.unit, start=block.start)
            return self._bad(index, block, f"decode error: {exc}", received)
        if self._block_reason.pop(index, None) is not None:
            log.info("block_recovered", source=self.name, unit=block.unit, start=block.start)
        # map() over repeat(): the per-tag cost here is the sample itself, not the loop.
        n = len(values)
        return list(
            map(
                TagSample,
                self._block_tags[index],
                values,
                repeat(Quality.GOOD, n),
                repeat(received, n),
            )
        )

    def _no_reply(self, block: ReadBlock, exc: Exception) -> None:
        """Count a request without a usable reply; raise ``_NoReply``, or ``ConnectorError``
        once the whole link looks dead."""
        if not self._link.connected:
            raise NotConnected(f"modbus {self.name}: connection to {self.endpoint} lost") from exc
        self._counters["no_reply"] += 1
        self._silent_requests += 1
        self._silent_units.add(block.unit)
        now = time.monotonic()
        backing_off = {d.unit for d in self._devices if d.breaker.is_open(now)}
        everyone_silent = self._silent_units | backing_off >= set(self.units)
        if self._silent_requests >= MAX_CONSECUTIVE_FAILURES and everyone_silent:
            log.warning(
                "connection_dead",
                source=self.name,
                endpoint=self.endpoint,
                failures=self._silent_requests,
            )
            raise ConnectorError(
                f"modbus {self.name}: {self._silent_requests} requests in a row to "
                f"{self.endpoint} got no valid reply"
            ) from exc
        reason = f"no valid reply within {self._settings.timeout_s:g}s"
        detail = str(exc)
        if detail:
            reason = f"{reason} ({detail})"
        raise _NoReply(reason) from exc

    def _bad(self, index: int, block: ReadBlock, reason: str, received: float) -> list[TagSample]:
        self._counters["bad_blocks"] += 1
        # Log changes only: a permanently bad block would otherwise log every cycle.
        if self._block_reason.get(index) != reason:
            self._block_reason[index] = reason
            log.warning(
                "block_bad",
                source=self.name,
                unit=block.unit,
                table=block.table,
                start=block.start,
                count=block.count,
                reason=reason,
            )
        return [TagSample(p.tag, None, Quality.BAD, received, reason=reason) for p in block.tags]
