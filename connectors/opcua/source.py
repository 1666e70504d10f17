"""``OpcUaSource``: all tags of one server over ``sessions: N`` asyncua sessions (default 1).

Each session monitors a contiguous share of the tags (``_session.Session``). The source has one
connection state: ``connect()`` succeeds when at least one session is up, and ``samples()``
raises ``ConnectorError`` (the runtime then reconnects the whole source) when every session is
down. A session lost while others still work marks only its own tags Bad and is reconnected by
this source's ``samples()`` loop (the one place that retries a session: a one-shot connect when
its backoff is due, never a loop inside the session), with the mapping's ``reconnect:`` backoff.
With one session (the default) any loss is a loss of the whole source, as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from asyncua import ua

from bridge.cancel import CancelWatch
from bridge.connectors.opcua._session import Session, address_of
from bridge.connectors.opcua._structures import field_readers
from bridge.connectors.opcua.config import OpcUaSourceSettings, ReconnectSettings
from bridge.connectors.opcua.convert import data_value_to_sample_parts
from bridge.errors import ConnectorError, NotConnected
from bridge.retry import backoff_delay
from bridge.types import Quality, SourceTag, TagSample

__all__ = ["OpcUaSource", "endpoint_address", "shares"]

log = structlog.get_logger(__name__)

DEFAULT_PORT = 4840
MAX_SAMPLES_PER_BATCH = 5000
SPILLED_REASON = "notifications dropped: client queue full"
# Larger batches are converted in the source's worker thread (see _subscription.py for why);
# smaller ones (a fast probe, a few changed tags) inline, cheaper than the thread hand-off.
OFF_LOOP_SAMPLES = 100


@dataclass
class _Down:
    """A lost session of a source that still has others up: when to try it again."""

    reason: str
    attempt: int = 0
    due: float = 0.0
    task: asyncio.Task[list[TagSample]] | None = None


def shares(items: int, parts: int) -> list[range]:
    """``items`` positions in ``parts`` contiguous ranges whose sizes differ by at most one."""
    size, extra = divmod(items, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(range(start, end))
        start = end
    return out


class OpcUaSource:
    """Subscribes all tags of one server. Per-tag problems become Bad samples, link problems
    raise ``ConnectorError``; the runtime decides when to call ``connect()`` again."""

    def __init__(self, name: str, settings: OpcUaSourceSettings, tags: Sequence[SourceTag]) -> None:
        self.name = name
        self._settings = settings
        self._tags = tuple(tags)
        self._wake = asyncio.Event()
        # Per tag, the newest source (else server) timestamp seen: a gap's start. Kept only
        # with backfill, across reconnects (this object lives as long as the source).
        self._seen: list[float] | None = [0.0] * len(self._tags) if settings.backfill else None
        self._sessions = [
            Session(name, i, settings, self._tags, share, self._sample_of, self._wake, self._seen)
            for i, share in enumerate(shares(len(self._tags), settings.session_count(len(tags))))
        ]
        # Per tag handle: the reader of its structure field, None for a plain tag (most).
        self._readers = field_readers([address_of(t).field for t in self._tags], self._sessions)
        self._down: dict[int, _Down] = {}
        self._initial: list[TagSample] = []
        self._open = False
        self._closed = True
        self._dropped_logged = 0
        self.session_reconnects = 0
        # One thread per source, so a large plant's decoding never queues a small source's.
        self._worker: ThreadPoolExecutor | None = None
        self._log = log.bind(source=name, endpoint=settings.endpoint)

    @property
    def dropped(self) -> int:
        """Notifications superseded because the client queue was full (over all sessions)."""
        return sum(s.dropped for s in self._sessions)

    @property
    def connected(self) -> bool:
        return self._open and any(
            s.client is not None and s.inbox.failure is None for s in self._sessions
        )

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    @property
    def degraded(self) -> str:
        """Why the source is only partly up ("" when every session is): for its health."""
        if not self._open or not self._down:
            return ""
        first = min(self._down)
        return (
            f"{len(self._down)} of {len(self._sessions)} sessions down "
            f"(session {first}: {self._down[first].reason})"
        )

    @property
    def counters(self) -> Mapping[str, int]:
        return {
            "sessions": len(self._sessions),
            "sessions_down": len(self._down) if self._open else len(self._sessions),
            "session_reconnects": self.session_reconnects,
            "dropped_notifications": self.dropped,
            "backfilled_values": sum(s.backfilled for s in self._sessions),
            # After link losses: subscriptions taken over by the new session, or re-created.
            "subscriptions_transferred": sum(s.transferred for s in self._sessions),
            "subscriptions_recreated": sum(s.recreated for s in self._sessions),
            "republished_notifications": sum(s.republished for s in self._sessions),
        }

    @property
    def reconnect(self) -> ReconnectSettings:
        """The mapping's reconnect policy, for the runtime's supervisor (which owns the loop)."""
        return self._settings.reconnect

    @property
    def probe_address(self) -> tuple[str, int] | None:
        """host:port of the endpoint: the supervisor probes it to see a restarted server."""
        return endpoint_address(self._settings.endpoint)

    async def connect(self) -> None:
        await self.close()
        self._closed = False
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"opcua-{self.name}")
        worker = self._worker
        outcomes = await asyncio.gather(
            *(s.connect(worker) for s in self._sessions), return_exceptions=True
        )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if len(errors) == len(self._sessions):
            await self.close()
            first = errors[0]
            if isinstance(first, ConnectorError):
                raise first
            raise ConnectorError(f"{self.name}: cannot connect: {first!r}") from first
        initial: list[TagSample] = []
        now = time.time()
        for session, outcome in zip(self._sessions, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):  # cancellation and the like
                    await self.close()
                    raise outcome
                initial.extend(self._lose(session, str(outcome), now))
            else:
                initial.extend(outcome)
        self._initial = initial
        self._open = True
        bad = sum(1 for s in initial if s.quality is Quality.BAD)
        self._log.info(
            "connected",
            tags=len(self._tags),
            bad_tags=bad,
            sessions=len(self._sessions),
            sessions_down=len(self._down),
        )

    def _sample_of(self, handle: int, dv: ua.DataValue, received: float) -> TagSample:
        return self._sample(handle, dv, received)

    def _sample(
        self, handle: int, dv: ua.DataValue, received: float, spilled: bool = False
    ) -> TagSample:
        parts = self._readers[handle] or data_value_to_sample_parts
        value, quality, reason, source_time, server_time = parts(dv)
        if spilled and quality is Quality.GOOD:
            quality, reason = Quality.UNCERTAIN, SPILLED_REASON
        seen = self._seen
        if seen is not None:  # backfill: where each tag's gap will start after a loss
            stamp = source_time if source_time is not None else server_time
            if stamp is not None and stamp > seen[handle]:
                seen[handle] = stamp
        return TagSample(
            self._tags[handle].tag, value, quality, received, source_time, server_time, reason
        )

    def _lose(self, session: Session, reason: str, now: float) -> list[TagSample]:
        """Mark ``session`` down (its tags Bad) and schedule its first reconnect."""
        down = self._down.get(session.index)
        if down is None:
            down = self._down[session.index] = _Down(reason)
        down.reason, down.task = reason, None
        down.attempt += 1
        policy = self._settings.reconnect
        delay = backoff_delay(down.attempt, policy.initial_backoff_s, policy.max_backoff_s)
        down.due = time.monotonic() + delay
        self._log.warning(
            "session_lost", session=session.index, reason=reason, retry_in_s=round(delay, 2)
        )
        why = f"session {session.index} of {self.name} down: {reason}"
        return [
            TagSample(self._tags[h].tag, None, Quality.BAD, now, reason=why)
            for h in session.handles
        ]

    def _check_alive(self) -> list[TagSample]:
        """Bad samples for sessions lost since the last look; raises when none is left."""
        lost: list[TagSample] = []
        now = time.time()
        for session in self._sessions:
            if session.index in self._down:
                continue
            reason = session.failure()
            if reason is not None:
                lost.extend(self._lose(session, reason, now))
        if len(self._down) == len(self._sessions):
            reasons = {d.reason for d in self._down.values()}
            reason = "; ".join(sorted(reasons))
            self._log.warning("link_lost", reason=reason)
            raise ConnectorError(f"{self.name}: {reason}")
        return lost

    def _repairs(self) -> list[TagSample]:
        """Start the reconnects that are due; collect the ones that finished."""
        samples: list[TagSample] = []
        now = time.monotonic()
        for index, down in list(self._down.items()):
            session = self._sessions[index]
            task = down.task
            if task is None:
                if now >= down.due and self._worker is not None:
                    task = down.task = asyncio.create_task(
                        session.connect(self._worker), name=f"opcua-reconnect-{session.name}"
                    )
                    task.add_done_callback(lambda _: self._wake.set())
                continue
            if not task.done():
                continue
            exc = task.exception()
            if exc is None:
                del self._down[index]
                self.session_reconnects += 1
                self._log.info("session_reconnected", session=index, attempt=down.attempt)
                samples.extend(task.result())
            else:
                self._lose(session, str(exc), time.time())
        return samples

    async def samples(self) -> AsyncIterator[Sequence[TagSample]]:
        if not self._open:
            raise NotConnected(f"{self.name}: samples() before connect()")
        if self._initial:
            initial, self._initial = self._initial, []
            yield initial
        tick = min(0.5, self._settings.watchdog_s / 4)
        # A session's backoff can be shorter than the watchdog tick: wake for it in time.
        if len(self._sessions) > 1:
            tick = min(tick, self._settings.reconnect.initial_backoff_s)
        # asyncua's requests may swallow a stop (see bridge.cancel); a quiet loop never
        # yields to a caller that could notice, so the loop checks.
        watch = CancelWatch()
        while not self._closed:
            lost = self._check_alive()
            if lost:
                yield lost
            if self._down:
                repaired = self._repairs()
                if repaired:
                    yield repaired
            await self._sessions[0].inbox.wait(tick)  # the shared wake of every session
            watch.check()
            if self._closed:
                return
            lost = self._check_alive()
            if lost:
                yield lost
            retried = await self._retry_failed()
            if retried:
                yield retried
            items: list[tuple[int, ua.DataValue]] = []
            spilled: list[tuple[int, ua.DataValue]] = []
            for session in self._sessions:
                if session.index in self._down or session.client is None:
                    continue
                got, over = session.inbox.take(MAX_SAMPLES_PER_BATCH)
                items += got
                spilled += over
            if not items and not spilled:
                continue
            received = time.time()
            worker = self._worker
            if len(items) + len(spilled) < OFF_LOOP_SAMPLES or worker is None:
                batch = self._convert(items, spilled, received)
            else:
                loop = asyncio.get_running_loop()
                batch = await loop.run_in_executor(worker, self._convert, items, spilled, received)
            if spilled:
                self._log_drops()
            yield batch

    async def _retry_failed(self) -> list[TagSample]:
        """Items a server refused, tried again per session every retry_failed_items_s."""
        samples: list[TagSample] = []
        now = time.monotonic()
        for session in self._sessions:
            if session.index in self._down or not session.failed or now < session.next_retry:
                continue
            got, recovered = await session.retry_failed()
            samples += got
            if recovered:
                self._log.info(
                    "failed_items_recovered",
                    session=session.index,
                    recovered=recovered,
                    still_bad=len(session.failed),
                )
        return samples

    def _convert(
        self,
        items: list[tuple[int, ua.DataValue]],
        spilled: list[tuple[int, ua.DataValue]],
        received: float,
    ) -> list[TagSample]:
        batch = [self._sample(h, dv, received) for h, dv in items]
        batch.extend(self._sample(h, dv, received, spilled=True) for h, dv in spilled)
        return batch

    def _log_drops(self) -> None:
        dropped = self.dropped
        if dropped != self._dropped_logged:
            self._log.warning(
                "notifications_dropped", dropped=dropped, queue_size=self._settings.queue_size
            )
            self._dropped_logged = dropped

    async def close(self) -> None:
        """Delete the subscriptions and the sessions; bounded in time even if the server is
        gone (the sessions close side by side)."""
        self._closed = True
        was_open, self._open = self._open, False
        for down in self._down.values():
            if down.task is not None:
                down.task.cancel()
        tasks = [d.task for d in self._down.values() if d.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._down.clear()
        await asyncio.gather(*(s.close() for s in self._sessions))
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False)
        self._wake.set()  # a consumer waiting in samples() sees the close at once
        if was_open:
            self._log.info("closed")


def endpoint_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of an opc.tcp URL; the OPC UA default port 4840 when none is given."""
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:  # a malformed port: no probe, the connect attempts say what is wrong
        return None
    return (host, port or DEFAULT_PORT) if host else None
