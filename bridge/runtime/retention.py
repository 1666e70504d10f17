"""The retention job and the free-disk check (``gateway.retention``).

Every ``every_s`` the job deletes, per kind of row, what is older than its retention, in batches
with a pause between them (``bridge.store.retention``): history first (delivered outbox notes,
comparisons, drift events), then alerts and feedback, predictions last.

Every ``disk_check_s`` it reads the free disk under the store. Below ``min_free_mib`` or
``min_free_percent`` the disk is low: health is degraded, one ``disk_low`` alert is raised per
episode, and the job runs at every check with history cut to ``low_disk_history_days``, so
history goes before any prediction younger than ``predictions_days``. SQLite keeps the pages
of deleted rows for new rows instead of giving them back to the file system, so the file stops
growing rather than shrinking; the reading therefore stays low until someone makes room, and
the episode ends only once the free disk is 10 % above both thresholds (no alert per wobble).

The free-disk reading is a parameter (a function returning free and total bytes), so tests give
their own; the gateway's reads ``shutil.disk_usage`` of the store's folder.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bridge.config.spec import GatewaySettings, RetentionSettings
from bridge.drift.events import DRIFT_LABEL
from bridge.errors import BridgeError
from bridge.store.alerts import AlertRepository, NewAlert
from bridge.store.db import Store
from bridge.store.retention import HISTORY, TARGETS, RetentionStore, Target
from bridge.supervise import Supervised
from bridge.types import ComponentHealth

__all__ = [
    "DISK_LOW_LABEL",
    "DiskReading",
    "RetentionJob",
    "disk_usage_of",
    "retention_for",
    "watched_folder",
]

log = structlog.get_logger(__name__)

DISK_LOW_LABEL = "disk_low"
_MIB = 1024 * 1024
_DAY_S = 86400.0
# The disk counts as recovered only this far above the thresholds: one alert per episode.
_RECOVER_MARGIN = 1.10

# Free and total bytes of the disk that holds the store.
DiskReading = Callable[[], tuple[int, int]]
# Called after each committed batch with the kind of row and how many went (tests, benchmarks).
OnBatch = Callable[[str, int], Awaitable[None]]


def disk_usage_of(folder: Path) -> DiskReading:
    def read() -> tuple[int, int]:
        usage = shutil.disk_usage(folder)
        return usage.free, usage.total

    return read


def watched_folder(store_url: str, disk_path: str | None) -> Path | None:
    """The folder whose disk is checked: ``disk_path`` if set, else the SQLite file's folder;
    None for PostgreSQL (the disk is the database server's) or an in-memory SQLite."""
    if disk_path is not None:
        return Path(disk_path)
    try:
        url = make_url(store_url)
    except ArgumentError:
        return None
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return Path(database).resolve().parent


class RetentionJob:
    """Runs ``run_once`` every ``every_s`` and ``check_disk`` every ``disk_check_s``, supervised
    (restarted with backoff on any exception)."""

    def __init__(
        self,
        rows: RetentionStore,
        settings: RetentionSettings,
        alerts: AlertRepository,
        gateway_id: str,
        *,
        free_disk: DiskReading | None = None,
        where: str = "",
        clock: Callable[[], float] = time.time,
        on_batch: OnBatch | None = None,
    ) -> None:
        self.name = "retention"
        self._rows = rows
        self._settings = settings
        self._alerts = alerts
        self._gateway_id = gateway_id
        self._free_disk = free_disk
        self._where = where
        self._clock = clock
        self._on_batch = on_batch
        self._worker = Supervised("retention", self._loop)
        self._started = False
        self._closed = False
        self.low_disk = False
        self._low_detail = ""
        self._alert_pending: NewAlert | None = None
        self._last_error = ""
        self.counters: dict[str, int] = {
            "runs": 0,
            "batches": 0,
            **{f"deleted_{t.key}": 0 for t in TARGETS},
            "free_mib": -1,
            "low_disk_alerts": 0,
        }

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self._worker.start()

    async def close(self) -> None:
        self._closed = True
        await self._worker.stop()

    def health(self) -> ComponentHealth:
        problem = self._low_detail or self._last_error or self._worker.last_crash
        return ComponentHealth.of_worker(
            self.name,
            closed=self._closed,
            worker=self._worker if self._started else None,
            last_error=problem,
            counters={**self.counters, "restarts": self._worker.restarts},
        )

    async def check_disk(self) -> bool:
        """Read the free disk; True when it has just become low (a new episode)."""
        if self._free_disk is None:
            return False
        free, total = self._free_disk()
        s = self._settings
        free_mib = free // _MIB
        percent = 100.0 * free / total if total else 100.0
        self.counters["free_mib"] = free_mib
        below = free_mib < s.min_free_mib or percent < s.min_free_percent
        above = (
            free_mib >= s.min_free_mib * _RECOVER_MARGIN
            and percent >= s.min_free_percent * _RECOVER_MARGIN
        )
        started = False
        if below and not self.low_disk:
            self.low_disk = started = True
            now = self._clock()
            log.error(
                "disk_low",
                where=self._where,
                free_mib=free_mib,
                free_percent=round(percent, 2),
                min_free_mib=s.min_free_mib,
                min_free_percent=s.min_free_percent,
            )
            # A fresh id per episode; a retried write of the same episode reuses it.
            self._alert_pending = NewAlert(
                prediction_id=str(uuid.uuid4()),
                asset=self._gateway_id,
                model="store",
                label=DISK_LOW_LABEL,
                previous="",
                score=float(free_mib),
                raised_at=now,
            )
        elif self.low_disk and above:
            self.low_disk = False
            self._low_detail = ""
            log.info("disk_recovered", where=self._where, free_mib=free_mib)
        if self.low_disk:
            self._low_detail = (
                f"free disk {free_mib} MiB ({percent:.1f} %) at {self._where or 'the store'} "
                f"is below gateway.retention.min_free_mib {s.min_free_mib} or min_free_percent "
                f"{s.min_free_percent:g}: history is deleted early; make room or grow the disk"
            )
        await self._raise_pending()
        return started

    async def _raise_pending(self) -> None:
        alert = self._alert_pending
        if alert is None:
            return
        try:
            await asyncio.to_thread(self._alerts.add_many, [alert])
        except BridgeError as exc:
            # A full disk may refuse the alert too: it stays pending for the next check.
            log.warning("disk_low_alert_not_stored", error=str(exc))
            return
        self._alert_pending = None
        self.counters["low_disk_alerts"] += 1

    def _days(self, target: Target) -> float:
        days: float = getattr(self._settings, target.setting)
        if self.low_disk and target.key in HISTORY:
            return min(days, self._settings.low_disk_history_days)
        return days

    async def run_once(self) -> dict[str, int]:
        """Delete what is past its retention; returns the rows deleted per kind."""
        s = self._settings
        now = self._clock()
        deleted: dict[str, int] = {}
        started = time.monotonic()
        for target in TARGETS:
            before = now - self._days(target) * _DAY_S
            total = 0
            while True:
                n = await asyncio.to_thread(self._rows.delete_batch, target, before, s.batch_rows)
                total += n
                self.counters["batches"] += 1
                self.counters[f"deleted_{target.key}"] += n
                if n and self._on_batch is not None:
                    await self._on_batch(target.key, n)
                if n < s.batch_rows:
                    break
                # The store writer's turn (SQLite has one writer at a time).
                await asyncio.sleep(s.pause_s)
            deleted[target.key] = total
        self.counters["runs"] += 1
        log.info(
            "retention_run",
            low_disk=self.low_disk,
            seconds=round(time.monotonic() - started, 3),
            **{k: v for k, v in deleted.items() if v},
        )
        return deleted

    def follow(self, settings: RetentionSettings) -> None:
        """Use ``settings`` from the next check on (a mapping reload; ``disk_path`` excepted:
        the watched folder is chosen at start)."""
        self._settings = settings

    async def _loop(self) -> None:
        next_run = time.monotonic()
        while True:
            s = self._settings  # a reload may change them
            await self.check_disk()
            # While the disk is low the job runs at every check (history cut short).
            if self.low_disk or time.monotonic() >= next_run:
                try:
                    await self.run_once()
                    self._last_error = ""
                except BridgeError as exc:
                    # The store is down or busy: tried again at the next check.
                    self._last_error = f"retention run failed: {exc}"
                    log.warning("retention_run_failed", error=str(exc))
                next_run = time.monotonic() + s.every_s
            self._worker.ok()
            await asyncio.sleep(min(s.disk_check_s, max(0.0, next_run - time.monotonic())))


def retention_for(gateway: GatewaySettings, store: Store) -> RetentionJob:
    """The gateway's job: its settings, its store, the disk of the store's folder."""
    settings = gateway.retention
    folder = watched_folder(gateway.store, settings.disk_path)
    return RetentionJob(
        RetentionStore(store, DRIFT_LABEL),
        settings,
        AlertRepository(store, gateway=gateway.id),
        gateway.id,
        free_disk=None if folder is None else disk_usage_of(folder),
        where="" if folder is None else str(folder),
    )
