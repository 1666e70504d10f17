"""The committer: the one owner of the lake's I/O and of its retries.

Every tick it seals the spool segments that are due (size or age), commits each table's sealed
segments in sequence order, writes the context table when it changed and runs compaction and
vacuum on their schedule. Before committing a table it asks the table which segment this spool
committed last (the Delta application transaction) and drops the segments the table already
holds: a crash between a commit and the segment's removal writes nothing twice.

A failure (object store away, a column whose type would change) keeps the segments and the
table waits with backoff (``bridge.retry.Backoff``) while the other tables go on; it is logged
once when it starts and once when the table recovers, and shown by health meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bridge.redact import redact_text
from bridge.retry import Backoff

from .config import LakehouseSettings
from .context import write_context
from .delta import DeltaTables, SchemaConflictError
from .sizing import SegmentSizing
from .spool import Segment, TableSpool, read_segment

__all__ = ["Committer", "KeptSegments"]

log = structlog.get_logger(__name__)

_TICK_S = 0.25
_MB = 1024 * 1024
# The largest segment, as a share of max_spool_mb: the open segments of both tables and a few
# sealed ones fit in the spool's bound.
_SEGMENT_SHARE_OF_SPOOL = 0.25


@dataclass(slots=True)
class _State:
    backoff: Backoff
    next_try: float = 0.0  # monotonic
    error: str = ""
    commits: int = 0
    rows: int = 0
    skipped: int = 0  # segments the table held already (a crash after their commit)
    next_optimize: float = 0.0
    next_vacuum: float = 0.0


@dataclass(slots=True)
class KeptSegments:
    """Committed segments kept in ``dir`` for the ids of their rows (``recent.py``): the
    newest ones holding at least ``rows_wanted`` rows."""

    dir: Path
    rows_wanted: int
    kept: deque[tuple[Path, int]] = field(default_factory=deque)

    def keep(self, path: Path, rows: int) -> None:
        self.kept.append((path, rows))
        total = sum(n for _, n in self.kept)
        while self.kept and total - self.kept[0][1] >= self.rows_wanted:
            old, n = self.kept.popleft()
            old.unlink(missing_ok=True)
            total -= n


class Committer:
    def __init__(
        self,
        name: str,
        settings: LakehouseSettings,
        tables: DeltaTables,
        spools: dict[str, TableSpool],
        app_id: str,
        kept: dict[str, KeptSegments],
        context_rows: Callable[[], list[dict[str, object]]],
    ) -> None:
        self.name = name
        self._settings = settings
        self._tables = tables
        self._spools = spools
        self._app_id = app_id
        self._kept = kept
        self._context_rows = context_rows
        self._context_due = True
        target = int(settings.flush.target_file_mb * _MB)
        cap = int(settings.max_spool_mb * _MB * _SEGMENT_SHARE_OF_SPOOL)
        self.sizing = {t: SegmentSizing(s.dir, target, cap) for t, s in spools.items()}
        # One Delta operation at a time, also when a cancelled tick's thread still runs while
        # the closing tick starts: two commits of one segment would both pass the check.
        self._io = threading.Lock()
        now = time.monotonic()
        every_opt = settings.optimize.every_s if settings.optimize else 0.0
        every_vac = settings.vacuum.every_s if settings.vacuum else 0.0
        self.states: dict[str, _State] = {
            table: self._state(now + every_opt, now + every_vac) for table in [*spools, "context"]
        }
        self.counters: dict[str, int] = {
            "optimized": 0,
            "vacuumed_files": 0,
            "context_closed": 0,
            "context_inserted": 0,
        }

    def _state(self, optimize_at: float, vacuum_at: float) -> _State:
        s = self._settings
        return _State(
            Backoff(s.initial_backoff_s, s.max_backoff_s),
            next_optimize=optimize_at,
            next_vacuum=vacuum_at,
        )

    def context_changed(self) -> None:
        """The slots or tags changed: the context table is written on the next tick."""
        self._context_due = True

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except OSError as exc:
                # The spool's own disk (sealing): keep going, the next tick tries again.
                log.error("lakehouse_spool_failed", destination=self.name, error=str(exc))
            await asyncio.sleep(_TICK_S)

    async def tick(self, final: bool = False) -> None:
        """One pass: seal what is due (everything when ``final``), commit, then the context
        and the maintenance that is due."""
        flush = self._settings.flush
        for table, spool in self._spools.items():
            if final:
                await asyncio.to_thread(spool.seal)
            else:
                max_bytes = self.sizing[table].seal_bytes
                await asyncio.to_thread(spool.seal_due, max_bytes, flush.max_age_s)
        for table in self._spools:
            if self._ready(table):
                await self._attempt(table, self._commit, table)
        if self._context_due and self._ready("context"):
            rows = self._context_rows()  # on the loop: it reads the gateway's state
            self._context_due = False
            if not await self._attempt("context", self._write_context, rows):
                self._context_due = True
        if not final:
            await self._maintain()

    def _ready(self, table: str) -> bool:
        return time.monotonic() >= self.states[table].next_try

    async def _attempt(self, table: str, work: Callable[..., None], *args: object) -> bool:
        state = self.states[table]
        try:
            await asyncio.to_thread(self._exclusive, work, *args)
        except Exception as exc:
            self._tables.forget(table)
            error = redact_text(f"{type(exc).__name__}: {exc}")
            wait = state.backoff.failed()
            state.next_try = time.monotonic() + wait
            if error != state.error:
                # Logged when it starts failing or fails another way, not at every retry.
                log.warning(
                    "lakehouse_commit_failing",
                    destination=self.name,
                    table=table,
                    error=error,
                    retry_in_s=round(wait, 2),
                    conflict=isinstance(exc, SchemaConflictError),
                )
            state.error = error
            return False
        if state.error:
            log.info(
                "lakehouse_commit_recovered",
                destination=self.name,
                table=table,
                after_error=state.error,
                failures=state.backoff.failures,
            )
            state.error = ""
        state.backoff.succeeded()
        return True

    # -- work in a worker thread ---------------------------------------------------------------

    def _exclusive(self, work: Callable[..., None], *args: object) -> None:
        with self._io:
            work(*args)

    def _commit(self, table: str) -> None:
        spool = self._spools[table]
        segments = spool.sealed()
        if not segments:
            return
        state = self.states[table]
        dt = self._tables.table(table)
        done = (dt.transaction_version(self._app_id) if dt is not None else None) or 0
        # Not found: the first commit creates the table, and fails if one is there after all
        # (an object store's wrong "not found" must not let a held segment be written again).
        create = dt is None
        sizing = self.sizing[table]
        for segment in segments:
            if segment.seq > done:
                data = read_segment(segment.path)
                if data is not None:
                    self._tables.check_schema(table, data.schema)
                    files = self._tables.append(
                        table, data, self._app_id, segment.seq, sizing.split_bytes, create=create
                    )
                    create = False
                    sizing.learn(segment.size, files)
                    state.commits += 1
                    state.rows += data.num_rows
                    log.debug(
                        "lakehouse_committed",
                        destination=self.name,
                        table=table,
                        segment=segment.seq,
                        rows=data.num_rows,
                    )
            else:
                state.skipped += 1
                log.info(
                    "lakehouse_segment_already_committed",
                    destination=self.name,
                    table=table,
                    segment=segment.seq,
                )
            self._leave(table, spool, segment)

    def _leave(self, table: str, spool: TableSpool, segment: Segment) -> None:
        kept = self._kept.get(table)
        if kept is None:
            spool.forget(segment)
        else:
            spool.forget(segment, keep_in=kept.dir)
            kept.keep(kept.dir / segment.path.name, segment.rows)

    def _write_context(self, rows: list[dict[str, object]]) -> None:
        change = write_context(
            self._tables.path("context"),
            self._settings.storage_options or None,
            rows,
            round(time.time() * 1_000_000),
        )
        self.counters["context_closed"] += change.closed
        self.counters["context_inserted"] += change.inserted
        if change.closed or change.inserted:
            log.info(
                "lakehouse_context_written",
                destination=self.name,
                closed=change.closed,
                inserted=change.inserted,
            )

    # -- maintenance -----------------------------------------------------------------------------

    async def _maintain(self) -> None:
        s = self._settings
        now = time.monotonic()
        for table in self.states:
            state = self.states[table]
            if state.error:
                continue
            if s.optimize is not None and now >= state.next_optimize:
                state.next_optimize = now + s.optimize.every_s
                target = int(s.optimize.target_file_mb * _MB)
                await self._attempt(table, self._optimize, table, target)
            if s.vacuum is not None and now >= state.next_vacuum:
                state.next_vacuum = now + s.vacuum.every_s
                await self._attempt(table, self._vacuum, table, s.vacuum.retention_hours)

    def _optimize(self, table: str, target: int) -> None:
        result = self._tables.optimize(table, target)
        if result is None:
            return
        self.counters["optimized"] += 1
        log.info(
            "lakehouse_optimized",
            destination=self.name,
            table=table,
            files_before=result.files_before,
            files_after=result.files_after,
            files_added=result.files_added,
            files_removed=result.files_removed,
        )

    def _vacuum(self, table: str, retention_hours: int) -> None:
        deleted = self._tables.vacuum(table, retention_hours)
        self.counters["vacuumed_files"] += len(deleted)
        log.info(
            "lakehouse_vacuumed",
            destination=self.name,
            table=table,
            files_deleted=len(deleted),
            files_now=self._tables.files(table),
            retention_hours=retention_hours,
        )

    # -- figures -----------------------------------------------------------------------------

    def errors(self) -> Sequence[str]:
        return [f"{t}: {s.error}" for t, s in self.states.items() if s.error]
