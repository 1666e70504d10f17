"""The lakehouse destination: predictions (through the outbox) and tag values (from the sample
feed) into Delta Lake tables, staged in a local spool and committed exactly once.

Predictions: ``deliver`` appends the batch's rows to the predictions spool and fsyncs before it
says "accepted", so the outbox may forget them; an id the spool took recently (a repeat after a
crash) is accepted without a second row. Telemetry: the feed's callback only buffers; once a
second the buffer becomes rows (raw or downsampled) appended to the telemetry spool. The
committer (``committer.py``) does every Delta operation and every retry of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import structlog

from bridge.cancel import cancel_and_wait
from bridge.destination import Capabilities, DestinationContext, Envelope, Outcome, Retry
from bridge.errors import ConnectorError
from bridge.types import ComponentHealth, ModelStatus, PredictionSlot, Trigger

from .committer import Committer, KeptSegments
from .config import LakehouseSettings
from .context import Facts, context_rows
from .delta import DeltaTables
from .recent import RecentIds, ids_of
from .rows import (
    decode_prediction,
    encode_prediction,
    predictions_from_bodies,
    predictions_table,
)
from .spool import TableSpool
from .telemetry import TelemetryBuffer

__all__ = ["PARTITIONS", "LakehouseDestination"]

log = structlog.get_logger(__name__)

# Telemetry is the big table and is read per line and day (a line's dashboards, a model's
# training set): its files are split by both. Predictions are a few rows per asset and minute:
# per day only, or a plant of many lines would get many small files. The context table is
# small and read whole.
PARTITIONS: dict[str, list[str]] = {
    "telemetry": ["date", "line"],
    "predictions": ["date"],
    "context": [],
}
_DRAIN_EVERY_S = 1.0
# Prediction ids kept against repeats: the outbox sends again at most the deliveries under way
# when the gateway stopped; this many covers dozens of them at the largest batch size.
_RECENT_MIN = 100_000
_CLOSE_COMMIT_S = 10.0
_MB = 1024 * 1024


class LakehouseDestination:
    """``bridge.destination.Destination`` writing Delta tables under ``settings.uri``."""

    def __init__(self, name: str, settings: LakehouseSettings, context: DestinationContext) -> None:
        self.name = name
        self.settings = settings
        self._gateway_id = context.gateway_id
        self._slots = tuple(context.slots)
        self._facts = Facts(context.assets, context.tag_infos, context.revision)
        self._tag_reader = context.tags
        self._feed = context.samples if settings.telemetry.enabled else None
        # One delivery at a time: each is one spool append (and fsync), in order.
        self.capabilities = Capabilities(
            concurrency=1,
            batch_size=settings.batch_size,
            backoff=(settings.initial_backoff_s, settings.max_backoff_s),
        )
        self._root = Path(settings.spool_dir) / name
        self._buffer = TelemetryBuffer(settings.telemetry, settings)
        self._recent = RecentIds(max(_RECENT_MIN, 20 * settings.batch_size))
        self._spools: dict[str, TableSpool] = {}
        self._committer: Committer | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closed = False
        self._spool_full = False
        # The telemetry windows are one state: a drain cancelled at close may still be running
        # in its thread when the final drain starts.
        self._rows_lock = threading.Lock()
        self._counters = {
            "accepted": 0,
            "repeats": 0,
            "skipped": 0,
            "refused_full": 0,
            "telemetry_rows": 0,
        }

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise ConnectorError(f"lakehouse destination {self.name!r} is closed")
        if self._committer is not None:
            return
        try:
            committer = await asyncio.to_thread(self._open_spool)
        except OSError as exc:
            raise ConnectorError(
                f"lakehouse destination {self.name!r}: cannot use spool_dir "
                f"{self.settings.spool_dir!r}: {exc}"
            ) from exc
        self._committer = committer
        self._commit_task = asyncio.create_task(committer.run(), name=f"{self.name}-commit")
        if self._feed is not None:
            self._unsubscribe = self._feed(self._buffer.take)
            self._drain_task = asyncio.create_task(self._drain(), name=f"{self.name}-telemetry")
        backlog = {t: s.backlog()[1] for t, s in self._spools.items()}
        log.info(
            "lakehouse_started",
            destination=self.name,
            uri=self.settings.uri,
            spool=str(self._root),
            backlog_rows=backlog,
            telemetry=self._feed is not None,
        )

    def _open_spool(self) -> Committer:
        """Blocking: the spool's directories, its id, its segments and the recent ids."""
        self._root.mkdir(parents=True, exist_ok=True)
        marker = self._root / "spool.json"
        if marker.exists():
            spool_id = str(json.loads(marker.read_text())["id"])
        else:
            # The spool's own id is part of the Delta application id: a new (or wiped) spool
            # numbers its segments from 1 again without meeting another spool's numbers.
            spool_id = uuid.uuid4().hex
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"id": spool_id}))
            tmp.replace(marker)
        for table in ("predictions", "telemetry"):
            self._spools[table] = TableSpool(self._root, table)
        kept = KeptSegments(self._root / "predictions" / "done", self._recent.limit)
        if kept.dir.is_dir():
            for path in sorted(kept.dir.glob("*.arrows")):
                ids = ids_of(path)
                self._recent.add(ids)
                kept.keep(path, len(ids))
        for segment in self._spools["predictions"].sealed():
            self._recent.add(ids_of(segment.path))
        tables = DeltaTables(self.settings.uri, self.settings.storage_options, PARTITIONS)
        app_id = f"bridge/{self._gateway_id}/{self.name}/{spool_id}"
        return Committer(
            self.name,
            self.settings,
            tables,
            self._spools,
            app_id,
            {"predictions": kept},
            self._context_rows,
        )

    async def follow_slots(self, slots: Sequence[PredictionSlot]) -> None:
        """``bridge.types.FollowsSlots``: the context table gets the new model versions."""
        self._slots = tuple(slots)
        if self._committer is not None:
            self._committer.context_changed()

    async def follow_context(self, context: DestinationContext) -> None:
        """``bridge.destination.FollowsContext``: a reload's assets, tags and revision go into
        the context table."""
        self._facts = Facts(
            context.assets, context.tag_infos, context.revision, self._facts.statuses
        )
        self._context_changed()

    async def write_models(self, statuses: Sequence[ModelStatus]) -> None:
        """What the model registry says serves (the gateway's registry watcher, every poll):
        the context table's model rows take the active version and the candidate."""
        known = {s.model: s for s in statuses}
        before = self._facts.statuses
        if before is not None and {m: _serving(s) for m, s in known.items()} == {
            m: _serving(s) for m, s in before.items()
        }:
            return  # the usual poll: only the candidate's agreement or accuracy moved
        f = self._facts
        self._facts = Facts(f.assets, f.tags, f.revision, known)
        self._context_changed()

    def _context_changed(self) -> None:
        if self._committer is not None:
            self._committer.context_changed()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._drain_task is not None:
            await cancel_and_wait(self._drain_task)
            self._drain_task = None
            # Every window still open is written now (partial windows: their count says so).
            await self._append_telemetry(final=True)
        if self._commit_task is not None:
            await cancel_and_wait(self._commit_task)
            self._commit_task = None
        committer = self._committer
        if committer is not None:
            # What is staged is committed now if the lake answers soon; else at the next start.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(committer.tick(final=True), _CLOSE_COMMIT_S)
        for spool in self._spools.values():
            await asyncio.to_thread(spool.close)
        log.info("lakehouse_closed", destination=self.name, **self._figures())

    # -- predictions ---------------------------------------------------------------------------

    def encode(self, event: Trigger) -> str | None:
        if event.event != "prediction":
            return None
        return encode_prediction(event, self._gateway_id)

    async def deliver(self, batch: Sequence[Envelope]) -> Sequence[Outcome]:
        spool = self._spools.get("predictions")
        if spool is None:
            return [Retry("the lakehouse destination is not started")] * len(batch)
        keys = [key for key, _ in batch]
        outcomes: list[Outcome] = [None] * len(batch)
        # The usual batch is all ours: parsed at once into Arrow columns. Any other body (a
        # drift alert, one that does not parse) sends the batch through the one-by-one path.
        table = predictions_from_bodies([body for _, body in batch])
        if table is None:
            table, keys = self._decode_each(batch, outcomes)
        if table is None:
            return outcomes
        fresh: list[str] = []
        seen: set[str] = set()
        keep: list[bool] = []
        for pid, key in zip(table["id"].to_pylist(), keys, strict=True):
            pid = str(pid or key)
            repeat = pid in self._recent or pid in seen
            keep.append(not repeat)
            if repeat:
                self._counters["repeats"] += 1
            else:
                seen.add(pid)
                fresh.append(pid)
        if not fresh:
            return outcomes
        if len(fresh) < table.num_rows:
            table = table.filter(pa.array(keep, pa.bool_()))
        if self._full():
            self._counters["refused_full"] += len(fresh)
            return [Retry("the lakehouse spool is full (max_spool_mb)")] * len(batch)
        try:
            await asyncio.to_thread(spool.append, table)
        except OSError as exc:
            return [Retry(f"lakehouse spool: {exc}")] * len(batch)
        self._recent.add(fresh)
        self._counters["accepted"] += len(fresh)
        return outcomes

    def _decode_each(
        self, batch: Sequence[Envelope], outcomes: list[Outcome]
    ) -> tuple[pa.Table | None, list[str]]:
        """The rows of a batch body by body: an error or a skip in ``outcomes`` for the others;
        returns the rows and their outbox keys."""
        rows: list[dict[str, object]] = []
        keys: list[str] = []
        for i, (key, body) in enumerate(batch):
            try:
                fields = decode_prediction(body)
            except ValueError as exc:
                outcomes[i] = f"not a lakehouse prediction body: {exc}"
                continue
            if fields is None:
                self._counters["skipped"] += 1  # a drift alert: no row of these tables
                continue
            rows.append(fields)
            keys.append(key)
        return (predictions_table(rows) if rows else None), keys

    # -- telemetry -----------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            await asyncio.sleep(_DRAIN_EVERY_S)
            try:
                await self._append_telemetry()
            except OSError as exc:
                log.error("lakehouse_spool_failed", destination=self.name, error=str(exc))

    async def _append_telemetry(self, final: bool = False) -> None:
        if self._full():
            # The lake is away for long: the newest values are dropped, counted, not the
            # predictions (which wait in the outbox).
            self._buffer.drop_taken()
            return
        taken = self._buffer.swap()
        if not taken and not final and not self._buffer.open_windows:
            return
        spool = self._spools["telemetry"]

        def append() -> int:
            with self._rows_lock:
                rows = self._buffer.rows(taken, time.time(), final)
                if len(rows):
                    spool.append(rows.table())
                return len(rows)

        self._counters["telemetry_rows"] += await asyncio.to_thread(append)
        if self._buffer.new_tags and self._committer is not None:
            self._buffer.new_tags = False
            self._committer.context_changed()

    def _full(self) -> bool:
        size = sum(s.backlog()[2] for s in self._spools.values())
        full = size >= self.settings.max_spool_mb * _MB
        if full != self._spool_full:
            self._spool_full = full
            log.warning(
                "lakehouse_spool_full" if full else "lakehouse_spool_has_room",
                destination=self.name,
                spool_mb=round(size / _MB, 1),
                max_spool_mb=self.settings.max_spool_mb,
            )
        return full

    # -- context -------------------------------------------------------------------------------

    def _context_rows(self) -> list[dict[str, object]]:
        # The mapping's tags when the gateway told them (every tag of the tag table is one);
        # else the tag table's, and those only the feed showed so far (a tag never read has
        # no reading in the table yet).
        tags = {t.tag: t for t in list(self._buffer.tags.values())}
        if self._tag_reader is not None and not self._facts.tags:
            tags.update((t.tag, t) for t in self._tag_reader(0.0))
        return context_rows(self.settings, self._slots, tags.values(), self._facts)

    # -- health --------------------------------------------------------------------------------

    def _figures(self) -> dict[str, int]:
        figures = dict(self._counters)
        for table, spool in self._spools.items():
            segments, rows, size = spool.backlog()
            figures[f"{table}_backlog_segments"] = segments
            figures[f"{table}_backlog_rows"] = rows
            figures[f"{table}_spool_bytes"] = size
        committer = self._committer
        if committer is not None:
            for table, state in committer.states.items():
                figures[f"{table}_commits"] = state.commits
                figures[f"{table}_committed_rows"] = state.rows
            figures.update(committer.counters)
        figures["telemetry_buffered"] = self._buffer.buffered
        figures["late_samples"] = self._buffer.late
        figures["telemetry_dropped"] = self._buffer.dropped
        return figures

    def health(self) -> ComponentHealth:
        counters = self._figures()
        if self._closed:
            return ComponentHealth(self.name, "stopped", counters=counters)
        task = self._commit_task
        if task is None:
            return ComponentHealth(self.name, "starting", counters=counters)
        if task.done():
            return ComponentHealth(self.name, "down", "committer task ended", counters)
        errors = list(self._committer.errors()) if self._committer is not None else []
        if self._spool_full:
            errors.append("spool full: predictions wait in the outbox, telemetry is dropped")
        if errors:
            return ComponentHealth(self.name, "degraded", "; ".join(errors), counters)
        return ComponentHealth(self.name, "ok", counters=counters)


def _serving(status: ModelStatus) -> tuple[str, str, str, str, str]:
    """What of a model's status the context table shows."""
    return (
        status.active_version,
        status.active_sha256,
        status.candidate_version,
        status.candidate_sha256,
        status.candidate_mode,
    )
