"""The heartbeat of a gateway in a fleet: the ONLY loop that renews, takes, claims and hands
over leases (``bridge.store.leases`` does one beat; this owns the timing and the retries).

Every ``heartbeat_s`` one beat runs off the event loop. A beat that fails (the database is
away) is logged and tried again at the next heartbeat; the shard then runs out on its own
deadline (``bridge.fleet.shard``), so the model runners stop publishing for assets whose
leases may be taken. A beat stuck on a connection that gives no answer is waited for, but the
deadline is still watched every heartbeat.

A gateway that joins (or comes back) hands over nothing and takes nothing at once: the assets
the rendezvous hash gives it are still held by live gateways, which go on publishing. It first
*listens*: its sources subscribe to those assets' tags, so their windows fill. It claims an
asset only once its windows are warm (``warm``: every model input of the asset has
``min_window_s`` of history and a fresh sample; without that check, after ``warm_s``). The
holder hands them over at its next beat, and meanwhile the claimant beats every
``CLAIM_POLL_S``, so it starts with warm windows and inside the model period of the hand-over.

Beats run on the wall clock at ``HANDOVER_PHASE`` of each heartbeat past its multiple, the
same phase on every gateway; period models tick on the multiples of their period. A hand-over
then lands a third of a period after the holder's tick (its predictions are committed under
their fencing token by then) and the claimant, polling, takes part in the next tick: one
prediction per asset and period, none missing. (When ``period_s`` is shorter than the time a
claimant needs to see a hand-over, about ``CLAIM_POLL_S`` plus one beat, a period may pass
without a prediction for the assets handed over.)

Listeners hear every change of what is served or listened to (sources re-subscribe, the HMI
mirror follows).

Stopping leaves the fleet (leases freed, membership deleted): the others take the assets at
their next beat instead of after ``lease_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from bridge.cancel import cancel_and_wait
from bridge.config.spec import FleetSettings
from bridge.errors import BridgeError
from bridge.store.leases import Beat, LeaseRepository
from bridge.types import ComponentHealth, HealthState

from .hashing import share
from .shard import Shard

__all__ = ["CLAIM_POLL_S", "HANDOVER_PHASE", "FleetLeases"]

log = structlog.get_logger(__name__)

CLAIM_POLL_S = 0.1
HANDOVER_PHASE = 0.3
_LEAVE_TIMEOUT_S = 5.0

Listener = Callable[[], None]


class FleetLeases:
    def __init__(
        self,
        repo: LeaseRepository,
        gateway_id: str,
        boot_id: str,
        assets: Sequence[str],
        settings: FleetSettings,
        shard: Shard | None = None,
        warm_s: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        warm: Callable[[str], bool] | None = None,
    ) -> None:
        self.name = "fleet"
        self._repo = repo
        self.gateway_id = gateway_id
        self._boot_id = boot_id
        self.assets = tuple(assets)
        self.settings = settings
        self.shard = shard if shard is not None else Shard()
        self.listeners: list[Listener] = []
        self.members: tuple[str, ...] = ()
        self.claiming: tuple[str, ...] = ()
        self.warm_s = warm_s
        self._warm = warm
        self._claimable: frozenset[str] = frozenset()
        self._wall = wall_clock
        self._started_at = wall_clock()
        self._served: frozenset[str] = frozenset()
        self._listening: frozenset[str] = frozenset()
        # Asset -> when this gateway began listening to it (monotonic), while another holds it.
        self._wanted_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._beat_job: asyncio.Future[Beat] | None = None
        self._beat_started = 0.0
        self._desired: set[str] = set()
        self._desired_for: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self.counters = {
            "beats": 0,
            "beat_failures": 0,
            "taken": 0,
            "handed_over": 0,
            "expired": 0,
            "last_beat_ms": 0,
        }
        self.last_error = ""

    def desired(self, members: tuple[str, ...]) -> set[str]:
        """This gateway's share among ``members`` (hashed again only when they or the assets
        change: 2,000 assets cost ~6,000 hashes)."""
        key = (members, self.assets)
        if key != self._desired_for:
            self._desired = share(self.gateway_id, self.assets, members)
            self._desired_for = key
        return self._desired

    def claimable(self, asset: str) -> bool:
        """Its windows are warm (decided on the event loop before the beat, which calls this
        in its thread)."""
        return asset in self._claimable

    def _warm_now(self) -> frozenset[str]:
        now = time.monotonic()
        if self._warm is not None:
            return frozenset(a for a in self._wanted_since if self._warm(a))
        return frozenset(a for a, t in self._wanted_since.items() if now - t >= self.warm_s)

    def follow(self, assets: Sequence[str]) -> None:
        """The mapping's assets changed (a reload): the next beat leases the new list."""
        self.assets = tuple(assets)

    async def start(self) -> None:
        """One beat before anything else starts, so sources subscribe to this gateway's share
        from the first connect. A database that is away is not fatal: the loop goes on trying
        and the gateway serves nothing until a beat succeeds."""
        await self._beat_once()
        self._task = asyncio.create_task(self._run(), name="fleet:leases")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        self.shard.clear()
        self._wanted_since = {}
        self._notify()
        if self._beat_job is not None and not self._beat_job.done():
            return  # the database does not answer: the leases run out on their own
        try:
            freed = await asyncio.wait_for(
                asyncio.to_thread(self._repo.leave, self.gateway_id), _LEAVE_TIMEOUT_S
            )
            log.info("fleet_left", gateway=self.gateway_id, leases_freed=freed)
        except (BridgeError, TimeoutError) as exc:
            log.warning("fleet_leave_failed", gateway=self.gateway_id, error=str(exc))

    async def _run(self) -> None:
        beat = self.settings.heartbeat_s
        while True:
            if self.claiming:
                wait = CLAIM_POLL_S
            else:  # the next beat at HANDOVER_PHASE past a multiple of the heartbeat
                wait = (HANDOVER_PHASE * beat - self._wall()) % beat or beat
            await asyncio.sleep(min(wait, beat))
            await self._beat_once()

    async def _beat_once(self) -> None:
        job = self._beat_job
        if job is None or job.done():
            self._claimable = self._warm_now()
            self._beat_started = time.monotonic()
            job = self._beat_job = asyncio.ensure_future(
                asyncio.to_thread(
                    self._repo.beat,
                    self.gateway_id,
                    self._boot_id,
                    self.assets,
                    self.settings.lease_s,
                    self.desired,
                    self._started_at,
                    self.claimable,
                )
            )
        # A beat that hangs (a connection that gives no answer) is waited for, but the
        # shard's deadline is checked every heartbeat meanwhile.
        while True:
            done, _ = await asyncio.wait({job}, timeout=self.settings.heartbeat_s)
            if done:
                break
            self._check_deadline()
        try:
            beat = job.result()
        except BridgeError as exc:
            self.counters["beat_failures"] += 1
            if str(exc) != self.last_error:
                log.error("fleet_heartbeat_failed", gateway=self.gateway_id, error=str(exc))
            self.last_error = str(exc)
            self._check_deadline()
            return
        self.last_error = ""
        self.counters["beats"] += 1
        started = self._beat_started
        self.counters["last_beat_ms"] = int((time.monotonic() - started) * 1000)
        valid_until = started + self.settings.lease_s - self.settings.heartbeat_s
        self.shard.update(beat.held, valid_until)
        self.members, self.claiming = beat.members, beat.claimed
        now = time.monotonic()
        self._wanted_since = {a: self._wanted_since.get(a, now) for a in beat.wanted}
        if beat.taken or beat.handed_over:
            self.counters["taken"] += len(beat.taken)
            self.counters["handed_over"] += len(beat.handed_over)
            log.info(
                "fleet_leases_changed",
                gateway=self.gateway_id,
                taken=len(beat.taken),
                handed_over=len(beat.handed_over),
                claimed=len(beat.claimed),
                serving=len(beat.held),
                members=list(beat.members),
                taken_assets=list(beat.taken[:20]),
            )
        self._notify()

    def _check_deadline(self) -> None:
        if self._served and not self.shard.valid:
            self.counters["expired"] += 1
            log.error(
                "fleet_leases_expired",
                gateway=self.gateway_id,
                assets=len(self._served),
                reason="the leases could not be renewed in time; publishing stopped for them",
                error=self.last_error,
            )
            self._notify()

    def _notify(self) -> None:
        served = self.shard.assets()
        listening = served | frozenset(self._wanted_since) if served or self.shard.valid else served
        if served == self._served and listening == self._listening:
            return
        self._served, self._listening = served, listening
        for listener in self.listeners:
            try:
                listener()
            except Exception:  # one listener's bug must not stop the heartbeat
                log.exception("fleet_listener_failed")

    @property
    def served(self) -> frozenset[str]:
        """The assets this gateway publishes for now."""
        return self._served

    @property
    def listening(self) -> frozenset[str]:
        """The assets whose tags this gateway's sources read: those it serves and those it is
        about to claim (their windows warm up first)."""
        return self._listening

    def health(self) -> ComponentHealth:
        state: HealthState = "ok"
        detail = f"serving {len(self.shard.fences())} of {len(self.assets)} assets"
        detail += f" with {len(self.members)} gateways"
        if self.last_error:
            state = "degraded"
            detail = f"{detail}; heartbeat failing: {self.last_error}"
        counters = {
            **self.counters,
            "members": len(self.members),
            "serving": len(self.shard.fences()),
            "claiming": len(self.claiming),
        }
        return ComponentHealth("fleet", state, detail, counters)
