"""Fleet: the take-over of a killed gateway's assets, and the steady-state cost of the leases.

Two parts (``--parts takeover,leases``, both by default), each on a fresh PostgreSQL schema at
127.0.0.1:5432 (database ``test``), dropped afterwards:

``takeover``: three ``bridge run`` processes (``bridge.simulators.fleet``: one fleet mapping,
heartbeat_s 1, lease_s 5, period_s 1, outbox lease 5 s) on the plant simulator (``--pumps`` 12
pumps, updated every 0.1 s) and a real MES receiver, both on this process's event loop. Once
every asset is held by its rendezvous owner, ``--kills`` (20) times, after ``--dwell-s`` (3)
plus a random part of a heartbeat (so the kills fall at every phase of the beats), a gateway
(round robin, or ``--order random --seed N``) is killed with SIGKILL; for each of its assets the
time from the kill to the first prediction of any quality from another gateway and to the first
Good one, read from what the MES received, **by the prediction's period timestamp** (the tick it
was made for, as tests/integration/test_fleet_failover.py measures; by receive time in the notes
and the JSON); then it is started again and the time until every asset is back at its rendezvous
owner is measured (``joined``: its member row is live; ``rebalanced``: the leases are all where
the hash says). At the end, what the MES received is checked period by period: two predictions
for one asset and period (duplicates), and periods with no prediction, sorted into the expected
take-over gap of the killed gateway's assets (from its last prediction to the first of another
gateway) and the unexpected ones (a survivor's asset while a gateway is down, any asset during
the hand-back or in the steady state between kills); predictions not Good are sorted the same
way (the new holder's first ones after a take-over are expected). From the returning gateway's
log: when it had started, when its source connected, and whether its assets were handed back
before that. Gateway logs and what the MES received (``mes-received.jsonl``) are kept in
``bench/results/fleet-logs/`` (overwritten by the next run); the logs are scanned for errors.

``leases``: the lease machinery alone, without the data path: three processes (multiprocessing,
spawn) each running a ``FleetLeases`` heartbeat loop (default ``FleetSettings``: heartbeat 1 s,
lease 5 s; ``--warm-s`` 2, what a gateway whose models have ``min_window_s`` 1 uses) over the
same ``--assets`` (2,000) names against one schema. Measured: the settle from a cold start (the
three start their loops at once; time until every asset is held by its rendezvous owner); then
over ``--seconds`` (60) of steady state: each process's CPU, SQL statements (SQLAlchemy's
``before_cursor_execute`` on the store's engine: BEGIN/COMMIT and the pool's pre-ping are not
statements here), transactions and beats per second, the time one beat takes (``LeaseRepository
.beat``, in its thread) and per statement (cursor execute to its return), the CPU of the
PostgreSQL backends serving the three (found by ``application_name`` in ``pg_stat_activity``,
read from /proc) and the ``xact_commit`` delta of the database (every client of the database
counts there, other tests included); finally one process is killed with SIGKILL and the time
until its share is held by the other two.

    python -m bench.fleet [--parts takeover,leases] [--kills 20] [--pumps 12]
                          [--order round-robin|random] [--seed 1] [--dwell-s 3]
                          [--assets 2000] [--seconds 60] [--warm-s 2] [--quick]

Prints a table and writes bench/results/fleet.json (stand-alone, not in ``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from bench.common import PUMP_MODEL, RESULTS, free_port, percentile, proc_cpu_s, row, write_result
from bridge.config.spec import FleetSettings
from bridge.fleet.hashing import owner
from bridge.fleet.leases import FleetLeases
from bridge.logging import configure_logging
from bridge.simulators.fleet import GatewayProcess, fleet_mapping, pump_ids
from bridge.simulators.mes.server import MesReceiver, ReceivedCall
from bridge.simulators.plant.server import PlantSimulator
from bridge.store import open_store
from bridge.store.leases import Beat, LeaseRepository

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
GATEWAYS = ("gw-a", "gw-b", "gw-c")
MODEL = "pump-health"
PERIOD_S = 1.0  # the fleet mapping's defaults: model period, heartbeat, lease
HEARTBEAT_S = 1.0
LEASE_S = 5.0
OUTBOX_LEASE_S = 5.0  # MES events a killed gateway had claimed go out after this
TAKEOVER_LIMIT_S = 10.0  # the integration test's bound
LOGS = RESULTS / "fleet-logs"


# --- shared -----------------------------------------------------------------------------------


@contextlib.contextmanager
def pg_schema(prefix: str) -> Iterator[str]:
    """A fresh schema in the ``test`` database, dropped afterwards with everything in it."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield schema
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def schema_url(schema: str, application_name: str = "") -> str:
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    return f"{url}&application_name={application_name}" if application_name else url


def holders(repo: LeaseRepository) -> dict[str, str]:
    """Asset -> holder of its unexpired lease (the database is on this host: one clock)."""
    now = time.time()
    return {lease.asset: lease.holder for lease in repo.leases() if lease.expires_at > now}


def spread(values: Sequence[float], digits: int = 2) -> dict[str, Any]:
    if not values:
        return {"n": 0, "min": None, "median": None, "p90": None, "p99": None, "max": None}
    return {
        "n": len(values),
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "p90": round(percentile(list(values), 90), digits),
        "p99": round(percentile(list(values), 99), digits),
        "max": round(max(values), digits),
    }


def _s(d: dict[str, Any], unit: str = " s") -> str:
    if not d["n"]:
        return "none"
    return f"min {d['min']}, median {d['median']}, p90 {d['p90']}, max {d['max']}{unit}"


# --- 1. take-over over N kills ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Got:
    """One prediction the MES received."""

    asset: str
    gateway: str
    good: bool
    when: float  # the start of its model period (epoch s)
    received: float


def _got(call: ReceivedCall) -> Got | None:
    body = call.body
    if not isinstance(body, dict) or body.get("model") != MODEL:
        return None
    stamp = datetime.fromisoformat(body["timestamp"]).timestamp()
    slot = math.floor(stamp / PERIOD_S + 1e-6)
    return Got(
        body["asset"],
        body["gateway_id"],
        body["quality"] == "Good",
        slot * PERIOD_S,
        call.received_at,
    )


@dataclass
class Cycle:
    """One kill and the return of the killed gateway (epoch seconds)."""

    index: int
    victim: str
    assets: list[str]
    settled_before: float
    killed: float
    leases_moved: float | None = None
    restarted: float = 0.0
    joined: float | None = None
    settled: float | None = None
    takeover_timed_out: list[str] = field(default_factory=list)


async def _until(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]],
    timeout_s: float,
    every_s: float,
) -> float | None:
    """The time (epoch s) ``condition`` first held, polled every ``every_s``; None on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if not isinstance(found, bool):
            found = await found
        if found:
            return time.time()
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(every_s)


def _settled_check(
    repo: LeaseRepository, expected: dict[str, str]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await asyncio.to_thread(holders, repo) == expected

    return check


def _log_findings(path: Path) -> dict[str, Any]:
    """Errors, warnings and tracebacks in a gateway's log (JSON lines; a killed process may
    leave half a line)."""
    levels: Counter[str] = Counter()
    events: Counter[str] = Counter()
    examples: list[str] = []
    tracebacks = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if "Traceback" in line:
            tracebacks += 1
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        level = str(record.get("level", ""))
        if level in ("warning", "error", "critical"):
            levels[level] += 1
            events[f"{level}: {record.get('event')}"] += 1
            if level != "warning" and len(examples) < 10:
                examples.append(line[:600])
    return {
        "lines": len(lines),
        "levels": dict(levels),
        "events": dict(events.most_common(20)),
        "tracebacks": tracebacks,
        "error_examples": examples,
    }


def analyse(
    got: Sequence[Got],
    cycles: Sequence[Cycle],
    assets: Sequence[str],
    settled_first: float,
    until: float,
) -> dict[str, Any]:
    """Take-over times, duplicates, missing periods and predictions not Good, from what the MES
    received between ``settled_first`` (the fleet first settled) + one period and ``until``."""
    since = settled_first + PERIOD_S
    by_asset: dict[str, list[Got]] = defaultdict(list)
    for g in got:
        by_asset[g.asset].append(g)
    per_asset: list[dict[str, Any]] = []
    first_any: dict[tuple[int, str], float] = {}
    first_good: dict[tuple[int, str], float] = {}
    for c in cycles:
        for a in c.assets:
            others = [g for g in by_asset[a] if g.gateway != c.victim and g.when > c.settled_before]
            good = [g for g in others if g.good]
            before = [g.when for g in by_asset[a] if g.gateway == c.victim and g.when <= c.killed]
            entry: dict[str, Any] = {"kill": c.index, "victim": c.victim, "asset": a}
            if others:
                first = min(g.when for g in others)
                first_any[(c.index, a)] = first
                entry["any_s"] = round(first - c.killed, 3)
                entry["any_received_s"] = round(min(g.received for g in others) - c.killed, 3)
                entry["by"] = min(others, key=lambda g: g.when).gateway
                if before:
                    entry["gap_periods"] = round((first - max(before)) / PERIOD_S) - 1
            if good:
                first_good[(c.index, a)] = min(g.when for g in good)
                entry["good_s"] = round(first_good[(c.index, a)] - c.killed, 3)
                entry["good_received_s"] = round(min(g.received for g in good) - c.killed, 3)
            per_asset.append(entry)

    slots: dict[tuple[str, int], list[Got]] = defaultdict(list)
    for g in got:
        slots[(g.asset, round(g.when / PERIOD_S))].append(g)

    def phase(when: float) -> tuple[int | None, str]:
        """Which kill's window a period falls in, and where in it."""
        index = None
        for c in cycles:
            if when >= c.killed - PERIOD_S:
                index = c.index
        if index is None:
            return None, "initial" if when <= settled_first + 2 * PERIOD_S else "steady"
        c = cycles[index]
        if when < c.restarted:
            return index, "gateway_down"
        if c.settled is None or when <= c.settled + 2 * PERIOD_S:
            return index, "hand_back"
        return index, "steady"

    duplicates = []
    for (a, slot), items in sorted(slots.items()):
        when = slot * PERIOD_S
        if len(items) > 1 and since <= when <= until + 30:
            index, where = phase(when)
            duplicates.append(
                {
                    "asset": a,
                    "period": when,
                    "gateways": [g.gateway for g in items],
                    "kill": index,
                    "phase": where,
                }
            )
    missing: Counter[str] = Counter()
    unexpected = []
    for a in assets:
        for slot in range(math.ceil(since / PERIOD_S), math.floor(until / PERIOD_S) + 1):
            if (a, slot) in slots:
                continue
            when = slot * PERIOD_S
            index, where = phase(when)
            if index is not None and where == "gateway_down":
                c = cycles[index]
                taken = first_any.get((index, a))
                if a in c.assets and (taken is None or when < taken):
                    missing["takeover_gap"] += 1
                    continue
            missing[where] += 1
            unexpected.append({"asset": a, "period": when, "kill": index, "phase": where})
    not_good: Counter[str] = Counter()
    not_good_unexpected = []
    for g in got:
        if g.good or not since <= g.when <= until:
            continue
        index, where = phase(g.when)
        if index is not None and where == "gateway_down":
            c = cycles[index]
            good_at = first_good.get((index, g.asset))
            if (
                g.asset in c.assets
                and g.gateway != c.victim
                and (good_at is None or g.when < good_at)
            ):
                not_good["takeover"] += 1
                continue
        not_good[where] += 1
        not_good_unexpected.append(
            {
                "asset": g.asset,
                "period": g.when,
                "gateway": g.gateway,
                "kill": index,
                "phase": where,
            }
        )
    return {
        "per_asset": per_asset,
        "duplicates": duplicates,
        "missing_by_phase": dict(missing),
        "missing_unexpected": unexpected,
        "not_good_by_phase": dict(not_good),
        "not_good_unexpected": not_good_unexpected,
    }


def _log_events(path: Path, names: set[str]) -> list[tuple[float, str, dict[str, Any]]]:
    """(epoch s, event, record) of the log lines whose event is one of ``names``."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line)
                if record["event"] in names:
                    when = datetime.fromisoformat(record["timestamp"]).timestamp()
                    out.append((when, str(record["event"]), record))
    return out


def _restart_timeline(cycles: Sequence[Cycle]) -> list[dict[str, Any]]:
    """Per return of a killed gateway, from the logs: when it had started, when its source was
    connected, and when the others handed its assets back (seconds after the restart)."""
    events = {
        gid: _log_events(LOGS / f"{gid}.log", {"gateway_started", "source_connected"})
        for gid in GATEWAYS
    }
    changes = {gid: _log_events(LOGS / f"{gid}.log", {"fleet_leases_changed"}) for gid in GATEWAYS}
    out = []
    for c in cycles:
        if c.settled is None:
            continue
        own = [(t, e) for t, e, _ in events[c.victim] if t >= c.restarted]
        started = min((t for t, e in own if e == "gateway_started"), default=None)
        connected = min((t for t, e in own if e == "source_connected"), default=None)
        handed = [
            t
            for gid in GATEWAYS
            if gid != c.victim
            for t, _, r in changes[gid]
            if c.restarted <= t <= c.settled and r.get("handed_over")
        ]
        back = max(handed, default=None)
        out.append(
            {
                "kill": c.index,
                "victim": c.victim,
                "gateway_started_s": _round(started, c.restarted),
                "source_connected_s": _round(connected, c.restarted),
                "handed_back_s": _round(back, c.restarted),
                "handed_back_before_source_connected": back is not None
                and (connected is None or back < connected),
            }
        )
    return out


async def takeover(args: argparse.Namespace) -> dict[str, Any]:
    assets = pump_ids(args.pumps)
    everyone = {a: owner(a, GATEWAYS) for a in assets}
    LOGS.mkdir(parents=True, exist_ok=True)
    for gid in GATEWAYS:
        (LOGS / f"{gid}.log").unlink(missing_ok=True)
    rng = random.Random(args.seed)
    jitter = random.Random(args.seed + 1)
    t_start = time.time()
    with pg_schema("bench_fleet") as schema, tempfile.TemporaryDirectory() as tmp:
        url = schema_url(schema)
        store = open_store(url)  # migrated before the gateways start
        repo = LeaseRepository(store)
        plant = PlantSimulator(port=free_port(), pumps=args.pumps, update_interval_s=0.1)
        gateways: dict[str, GatewayProcess] = {}
        cycles: list[Cycle] = []
        calls: list[ReceivedCall] = []
        error, redelivered = "", 0
        first: float | None = None
        first_settle_s = math.nan
        until = time.time()
        try:
            async with MesReceiver(port=free_port()) as mes:
                calls = mes.calls  # the list itself: still readable once the receiver stopped
                await plant.start()
                mapping = fleet_mapping(
                    Path(tmp) / "fleet.yaml",
                    store=url,
                    plant=plant.port,
                    mes=mes.port,
                    model=PUMP_MODEL,
                    pumps=args.pumps,
                    outbox_lease_s=OUTBOX_LEASE_S,
                )
                for gid in GATEWAYS:
                    g = GatewayProcess(gid, mapping, LOGS / f"{gid}.log", free_port(), free_port())
                    await g.start()
                    gateways[gid] = g
                started = time.time()
                first = await _until(_settled_check(repo, everyone), args.settle_timeout_s, 0.2)
                if first is None:
                    raise RuntimeError(
                        f"the three gateways did not settle within {args.settle_timeout_s:g} s"
                    )
                first_settle_s = first - started
                print(f"takeover: three gateways settled {first_settle_s:.1f} s after start")
                settled_before = first
                for i in range(args.kills):
                    # A random phase of the kill against the heartbeat (settling is seen just
                    # after a beat: a kill a fixed time later would always hit the same phase).
                    await asyncio.sleep(args.dwell_s + jitter.uniform(0, HEARTBEAT_S))
                    dead = [gid for gid, g in gateways.items() if not g.running]
                    if dead:
                        raise RuntimeError(f"gateway(s) {dead} ended on their own")
                    if args.order == "random":
                        victim = rng.choice(GATEWAYS)
                    else:
                        victim = GATEWAYS[i % len(GATEWAYS)]
                    mine = sorted(a for a in assets if everyone[a] == victim)
                    survivors = tuple(gid for gid in GATEWAYS if gid != victim)
                    others = {a: owner(a, survivors) for a in assets}
                    c = Cycle(i, victim, mine, settled_before, time.time())
                    cycles.append(c)
                    seen = len(mes.calls)
                    await gateways[victim].kill()
                    pending = set(mine)

                    def resumed(victim: str = victim, pending: set[str] = pending) -> bool:
                        nonlocal seen
                        calls = mes.calls
                        for call in calls[seen:]:
                            g = _got(call)
                            if g is not None and g.gateway != victim and g.good:
                                pending.discard(g.asset)
                        seen = len(calls)
                        return not pending

                    moved, served = await asyncio.gather(
                        _until(_settled_check(repo, others), args.takeover_timeout_s, 0.2),
                        _until(resumed, args.takeover_timeout_s, 0.1),
                    )
                    c.leases_moved = moved
                    c.takeover_timed_out = sorted(pending)
                    await asyncio.sleep(args.dwell_s)  # the survivors serve every asset
                    c.restarted = time.time()
                    await gateways[victim].start()

                    async def joined(victim: str = victim) -> bool:
                        members = await asyncio.to_thread(repo.members)
                        return victim in {m.gateway_id for m in members}

                    c.joined, c.settled = await asyncio.gather(
                        _until(joined, args.settle_timeout_s, 0.2),
                        _until(_settled_check(repo, everyone), args.settle_timeout_s, 0.2),
                    )
                    print(
                        f"kill {i + 1}/{args.kills} {victim} ({len(mine)} assets): leases "
                        f"moved {_rel(moved, c.killed)}, every asset Good from another "
                        f"{_rel(served, c.killed)}; back: joined {_rel(c.joined, c.restarted)}, "
                        f"rebalanced {_rel(c.settled, c.restarted)}",
                        flush=True,
                    )
                    if c.settled is None:
                        raise RuntimeError(
                            f"{victim} restarted but the fleet did not settle within "
                            f"{args.settle_timeout_s:g} s"
                        )
                    settled_before = c.settled
                # The outbox rows a killed gateway had claimed are sent once their lease ends.
                await asyncio.sleep(args.dwell_s + OUTBOX_LEASE_S + 3)
                until = time.time() - OUTBOX_LEASE_S - 3
                redelivered = mes.duplicate_count
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            until = time.time() - 1
            print(f"takeover: {error}", file=sys.stderr)
            for g in gateways.values():
                print(f"--- {g.gateway_id}\n{g.tail(30)}", file=sys.stderr)
        finally:
            await asyncio.gather(*(g.stop() for g in gateways.values()))
            await plant.stop()
            store.dispose()
    findings = {gid: _log_findings(LOGS / f"{gid}.log") for gid in GATEWAYS}
    done = [c for c in cycles if c.settled is not None]
    if len(done) < len(cycles):  # stopped inside a kill: checked up to that kill only
        until = min(until, cycles[len(done)].killed - 2 * PERIOD_S)
    got = [g for g in map(_got, list(calls)) if g is not None]
    result = analyse(got, done, assets, first, until) if first and got else {}
    # What the MES received, for a closer look (gitignored, overwritten by the next run).
    with (LOGS / "mes-received.jsonl").open("w") as out:
        for r in got:
            out.write(json.dumps([r.asset, r.gateway, r.good, r.when, r.received]) + "\n")
    per = result.get("per_asset", [])
    restarts = _restart_timeline(done)
    fig: dict[str, Any] = {
        "error": error,
        "pumps": args.pumps,
        "gateways": list(GATEWAYS),
        "kills": len(done),
        "kills_asked": args.kills,
        "order": args.order,
        "seed": args.seed,
        "settings": {
            "heartbeat_s": HEARTBEAT_S,
            "lease_s": LEASE_S,
            "period_s": PERIOD_S,
            "outbox_lease_s": OUTBOX_LEASE_S,
        },
        "first_settle_s": round(first_settle_s, 2),
        "takeover_any_s": spread([p["any_s"] for p in per if "any_s" in p]),
        "takeover_good_s": spread([p["good_s"] for p in per if "good_s" in p]),
        "takeover_any_received_s": spread(
            [p["any_received_s"] for p in per if "any_received_s" in p]
        ),
        "takeover_good_received_s": spread(
            [p["good_received_s"] for p in per if "good_received_s" in p]
        ),
        "takeover_gap_periods": spread([p["gap_periods"] for p in per if "gap_periods" in p]),
        "assets_never_taken_over": [p for p in per if "good_s" not in p],
        "leases_moved_s": spread([c.leases_moved - c.killed for c in done if c.leases_moved]),
        "joined_s": spread([c.joined - c.restarted for c in done if c.joined]),
        "rebalanced_s": spread([c.settled - c.restarted for c in done if c.settled]),
        "duplicates": result.get("duplicates", []),
        "redelivered_to_mes": redelivered,
        "received_by_mes": len(calls),
        "missing_by_phase": result.get("missing_by_phase", {}),
        "missing_unexpected": result.get("missing_unexpected", []),
        "not_good_by_phase": result.get("not_good_by_phase", {}),
        "not_good_unexpected": result.get("not_good_unexpected", [])[:100],
        "restarts": restarts,
        "restart_gateway_started_s": _spread_of(restarts, "gateway_started_s"),
        "restart_source_connected_s": _spread_of(restarts, "source_connected_s"),
        "restart_handed_back_s": _spread_of(restarts, "handed_back_s"),
        "per_asset": per,
        "cycles": [
            {
                "kill": c.index,
                "victim": c.victim,
                "assets": c.assets,
                "killed_at": round(c.killed, 3),
                "leases_moved_s": _round(c.leases_moved, c.killed),
                "restarted_at": round(c.restarted, 3),
                "joined_s": _round(c.joined, c.restarted),
                "rebalanced_s": _round(c.settled, c.restarted),
                "takeover_timed_out": c.takeover_timed_out,
            }
            for c in cycles
        ],
        "gateway_logs": findings,
        "seconds": round(time.time() - t_start, 1),
    }
    return fig


def _spread_of(items: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    return spread([r[key] for r in items if r.get(key) is not None])


def _rel(at: float | None, since: float) -> str:
    return "TIMED OUT" if at is None else f"{at - since:.1f} s"


def _round(at: float | None, since: float) -> float | None:
    return None if at is None else round(at - since, 2)


# --- 2. the leases alone at 2,000 assets ------------------------------------------------------


class TimedLeases(LeaseRepository):
    """The store's lease repository, each beat timed in the thread that runs it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []
        self.errors: list[str] = []

    def beat(self, *args: Any, **kwargs: Any) -> Beat:
        t0 = time.perf_counter()
        try:
            return super().beat(*args, **kwargs)
        except Exception as exc:
            self.errors.append(f"{time.time():.3f} {exc}"[:400])
            raise
        finally:
            self.durations.append(time.perf_counter() - t0)


_STATEMENT_KEY = 90  # characters of a statement that name it in the per-statement times


def asset_names(n: int) -> list[str]:
    return [f"asset-{i:04d}" for i in range(n)]


async def _lease_worker(
    conn: Connection, url: str, gateway_id: str, assets: int, warm_s: float
) -> None:
    store = open_store(url)
    counts = {"statements": 0, "commits": 0}

    # Statement -> [executions, seconds from before to after cursor execute (client side)].
    spent: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def on_execute(conn: Any, *_: Any) -> None:
        counts["statements"] += 1
        conn.info["bench_t0"] = time.perf_counter()

    def on_executed(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        key = " ".join(statement.split())[:_STATEMENT_KEY]
        entry = spent[key]
        entry[0] += 1
        entry[1] += time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())

    def on_commit(*_: Any) -> None:
        counts["commits"] += 1

    event.listen(store.engine, "before_cursor_execute", on_execute)
    event.listen(store.engine, "after_cursor_execute", on_executed)
    event.listen(store.engine, "commit", on_commit)
    repo = TimedLeases(store)
    leases = FleetLeases(
        repo,
        gateway_id,
        uuid.uuid4().hex,
        asset_names(assets),
        FleetSettings(enabled=True),
        warm_s=warm_s,
    )
    go, done = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_message() -> None:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            message = "stop"
        if message == "go":
            go.set()
        elif message == "snap":
            conn.send(
                {
                    "cpu_s": time.process_time(),
                    "statements": counts["statements"],
                    "commits": counts["commits"],
                    "beats": leases.counters["beats"],
                    "beat_failures": leases.counters["beat_failures"],
                    "durations": list(repo.durations),
                    "errors": list(repo.errors),
                    "spent": {k: list(v) for k, v in spent.items()},
                    "serving": len(leases.served),
                    "members": len(leases.members),
                }
            )
        else:
            go.set()
            done.set()

    loop.add_reader(conn.fileno(), on_message)
    conn.send({"pid": os.getpid()})
    await go.wait()
    if not done.is_set():
        await leases.start()
        await done.wait()
    loop.remove_reader(conn.fileno())
    await leases.close()
    store.dispose()


def _lease_main(conn: Connection, url: str, gateway_id: str, assets: int, warm_s: float) -> None:
    configure_logging("warning")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_lease_worker(conn, url, gateway_id, assets, warm_s))


class LeaseProcess:
    """One process running a heartbeat loop, seen from here: its pid and its counters."""

    def __init__(self, url: str, gateway_id: str, assets: int, warm_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.gateway_id = gateway_id
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_lease_main,
            args=(child, url, gateway_id, assets, warm_s),
            name=f"bench-fleet-{gateway_id}",
            daemon=True,
        )
        self.proc.start()
        child.close()
        self.pid = 0

    def ready(self, timeout_s: float) -> None:
        if not self.conn.poll(timeout_s):
            raise RuntimeError(f"{self.gateway_id}'s process did not start in {timeout_s:g} s")
        self.pid = int(self.conn.recv()["pid"])

    def send(self, message: str) -> None:
        self.conn.send(message)

    def snap(self) -> dict[str, Any]:
        self.conn.send("snap")
        if not self.conn.poll(30):
            raise RuntimeError(f"{self.gateway_id} did not answer within 30 s")
        found: dict[str, Any] = self.conn.recv()
        found["proc_cpu_s"] = proc_cpu_s(self.pid)
        return found

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(10)

    def close(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send("stop")
            self.proc.join(20)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        self.conn.close()


def _statement_times(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Statement -> executions and milliseconds per beat over a window (from cursor execute
    to its return, this side of the connection: the server's work and the round trip)."""
    beats = max(1, after["beats"] - before["beats"])
    out = {}
    for key, (n, seconds) in after["spent"].items():
        n0, s0 = before["spent"].get(key, (0, 0.0))
        if n > n0:
            out[key] = {
                "per_beat": round((n - n0) / beats, 2),
                "ms_per_beat": round(1000 * (seconds - s0) / beats, 2),
            }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms_per_beat"]))


def _backends(admin: Engine, prefix: str) -> dict[str, list[int]]:
    """application_name -> pids of the PostgreSQL backends serving it."""
    with admin.begin() as conn:
        found = conn.execute(
            text(
                "SELECT application_name, pid FROM pg_stat_activity "
                "WHERE application_name LIKE :p ORDER BY pid"
            ),
            {"p": f"{prefix}%"},
        ).all()
    out: dict[str, list[int]] = defaultdict(list)
    for name, pid in found:
        out[str(name)].append(int(pid))
    return dict(out)


def _xact(admin: Engine) -> tuple[int, int]:
    with admin.begin() as conn:
        commits, rollbacks = conn.execute(
            text(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        ).one()
    return int(commits), int(rollbacks)


def _cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += proc_cpu_s(pid)
    return total


def _postgres_pids() -> list[int]:
    """Every process of the PostgreSQL server on this machine (its comm is ``postgres``)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    out.append(int(entry.name))
    return out


def _wait_settled(
    repo: LeaseRepository, expected: dict[str, str], timeout_s: float, every_s: float = 0.25
) -> float | None:
    deadline = time.monotonic() + timeout_s
    while True:
        if holders(repo) == expected:
            return time.time()
        if time.monotonic() > deadline:
            return None
        time.sleep(every_s)


def leases_part(args: argparse.Namespace) -> dict[str, Any]:
    names = asset_names(args.assets)
    everyone = {a: owner(a, GATEWAYS) for a in names}
    token = uuid.uuid4().hex[:8]
    prefix = f"bench-fleet-{token}-"
    t_start = time.time()
    with pg_schema("bench_fleet_leases") as schema:
        url = schema_url(schema)
        store = open_store(url)  # migrated once, before the three start
        repo = LeaseRepository(store)
        admin = create_engine(PG_URL)
        procs = [
            LeaseProcess(schema_url(schema, prefix + gid), gid, args.assets, args.warm_s)
            for gid in GATEWAYS
        ]
        try:
            for p in procs:
                p.ready(120)
            # 1. cold start: the three loops start together.
            t0 = time.time()
            for p in procs:
                p.send("go")
            settled = _wait_settled(repo, everyone, args.settle_timeout_s)
            if settled is None:
                raise RuntimeError(f"no settle within {args.settle_timeout_s:g} s of a cold start")
            cold_s = settled - t0
            cold = [p.snap() for p in procs]
            cold_failures = {p.gateway_id: c["errors"] for p, c in zip(procs, cold, strict=True)}
            print(
                f"leases: cold start of 3 x {args.assets:,} assets settled in {cold_s:.2f} s; "
                f"failed beats {sum(len(v) for v in cold_failures.values())}",
                flush=True,
            )
            time.sleep(args.dwell_s)
            # 2. steady state over args.seconds: nothing here touches the database meanwhile.
            backends = _backends(admin, prefix)
            pg_all = _postgres_pids()
            x0, b0, a0 = _xact(admin), {k: _cpu(v) for k, v in backends.items()}, _cpu(pg_all)
            s0 = [p.snap() for p in procs]
            w0 = time.monotonic()
            time.sleep(args.seconds)
            s1 = [p.snap() for p in procs]
            w1 = time.monotonic()
            x1, b1, a1 = _xact(admin), {k: _cpu(v) for k, v in backends.items()}, _cpu(pg_all)
            later = _backends(admin, prefix)
            window = w1 - w0
            per: dict[str, Any] = {}
            for p, before, after in zip(procs, s0, s1, strict=True):
                beats = after["durations"][len(before["durations"]) :]
                app = prefix + p.gateway_id
                per[p.gateway_id] = {
                    "cpu_percent": round(
                        100 * (after["proc_cpu_s"] - before["proc_cpu_s"]) / window, 2
                    ),
                    "cpu_percent_process_time": round(
                        100 * (after["cpu_s"] - before["cpu_s"]) / window, 2
                    ),
                    "statements_per_s": round(
                        (after["statements"] - before["statements"]) / window, 1
                    ),
                    "commits_per_s": round((after["commits"] - before["commits"]) / window, 2),
                    "beats_per_s": round((after["beats"] - before["beats"]) / window, 2),
                    "beat_failures": after["beat_failures"] - before["beat_failures"],
                    "statements_per_beat": round(
                        (after["statements"] - before["statements"])
                        / max(1, after["beats"] - before["beats"]),
                        1,
                    ),
                    "beat_ms": spread([1000 * d for d in beats], 1),
                    "statements_ms_per_beat": _statement_times(before, after),
                    "serving": after["serving"],
                    "backend_pids": backends.get(app, []),
                    "backend_cpu_percent": round(
                        100 * (b1.get(app, 0.0) - b0.get(app, 0.0)) / window, 2
                    ),
                }
            all_beats = [
                1000 * d
                for before, after in zip(s0, s1, strict=True)
                for d in after["durations"][len(before["durations"]) :]
            ]
            steady = {
                "seconds": round(window, 1),
                "per_gateway": per,
                "cpu_percent_total": round(sum(g["cpu_percent"] for g in per.values()), 2),
                "statements_per_s_total": round(
                    sum(g["statements_per_s"] for g in per.values()), 1
                ),
                "commits_per_s_total": round(sum(g["commits_per_s"] for g in per.values()), 2),
                "beats_per_s_total": round(sum(g["beats_per_s"] for g in per.values()), 2),
                "beat_ms": spread(all_beats, 1),
                "backend_cpu_percent_total": round(
                    sum(g["backend_cpu_percent"] for g in per.values()), 2
                ),
                "backends_changed": later != backends,
                "postgres_all_processes_cpu_percent": round(100 * (a1 - a0) / window, 2),
                "postgres_processes": len(pg_all),
                "db_xact_commit_per_s": round((x1[0] - x0[0]) / window, 2),
                "db_xact_rollback_per_s": round((x1[1] - x0[1]) / window, 2),
            }
            print(
                f"leases: steady {window:.0f} s: CPU per process "
                + ", ".join(f"{k} {v['cpu_percent']} %" for k, v in per.items())
                + f"; {steady['statements_per_s_total']} statements/s, "
                f"{steady['beats_per_s_total']} beats/s in all; beat {_s(steady['beat_ms'], ' ms')}"
                f"; backends {steady['backend_cpu_percent_total']} %; database "
                f"{steady['db_xact_commit_per_s']} commits/s",
                flush=True,
            )
            # 3. one process killed: its share held by the other two.
            victim = procs[-1]
            survivors = tuple(p.gateway_id for p in procs[:-1])
            theirs = {a: owner(a, survivors) for a in names}
            share = sum(1 for a in names if everyone[a] == victim.gateway_id)
            t_kill = time.time()
            victim.kill()
            moved = _wait_settled(repo, theirs, args.takeover_timeout_s)
            after_kill = [p.snap() for p in procs[:-1]]
            last = [*after_kill, s1[-1]]  # the killed one's as of the end of the steady window
            kill_beats = [
                1000 * d
                for before, after in zip(s1[:-1], after_kill, strict=True)
                for d in after["durations"][len(before["durations"]) :]
            ]
            kill = {
                "victim": victim.gateway_id,
                "assets_moved": share,
                "seconds": _round(moved, t_kill),
                "survivors_beat_ms_since_steady": spread(kill_beats, 1),
            }
            print(
                f"leases: kill -9 of {victim.gateway_id}: its {share} assets held by the other "
                f"two after {_rel(moved, t_kill)}",
                flush=True,
            )
        finally:
            for p in procs:
                p.close()
            admin.dispose()
            store.dispose()
    return {
        "assets": args.assets,
        "gateways": list(GATEWAYS),
        "settings": {"heartbeat_s": HEARTBEAT_S, "lease_s": LEASE_S, "warm_s": args.warm_s},
        "cold_start_settle_s": round(cold_s, 2),
        "cold_start_failed_beats": cold_failures,
        "failed_beats_in_all": {p: s["errors"] for p, s in zip(GATEWAYS, last, strict=True)},
        "steady": steady,
        "kill": kill,
        "note": "xact_commit counts every client of the database (other tests running on it "
        "count too); statements are those SQLAlchemy sends (BEGIN, COMMIT and the pool's "
        "pre-ping not counted)",
        "seconds": round(time.time() - t_start, 1),
    }


# --- report -----------------------------------------------------------------------------------


def rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    t = figures.get("takeover")
    if t and t["kills"]:
        n = f"{t['takeover_good_s']['n']} assets over {t['kills']} kills of 1 of 3 gateways"
        good = t["takeover_good_s"]
        out.append(
            row(
                "fleet kill -9 -> first prediction from another gateway (s, median)",
                t["takeover_any_s"]["median"],
                None,
                "s",
                "report",
                None,
                f"{_s(t['takeover_any_s'])}; by period timestamp, {n}; by receive time "
                f"{_s(t['takeover_any_received_s'])}",
            )
        )
        out.append(
            row(
                "fleet kill -9 -> first Good prediction from another gateway (s, max)",
                good["max"],
                None,
                "s",
                f"<= {TAKEOVER_LIMIT_S:g} s",
                good["max"] is not None
                and good["max"] <= TAKEOVER_LIMIT_S
                and not t["assets_never_taken_over"],
                f"{_s(good)}; by period timestamp, {n}; by receive time "
                f"{_s(t['takeover_good_received_s'])}; periods without a prediction per asset "
                f"taken over: {_s(t['takeover_gap_periods'], '')}",
            )
        )
        out.append(
            row(
                "fleet kill -9 -> the survivors hold every lease (s, median)",
                t["leases_moved_s"]["median"],
                None,
                "s",
                "report",
                None,
                _s(t["leases_moved_s"]),
            )
        )
        out.append(
            row(
                "fleet gateway restarted -> every asset at its rendezvous owner (s, median)",
                t["rebalanced_s"]["median"],
                None,
                "s",
                "report",
                None,
                f"{_s(t['rebalanced_s'])}; its member row live after {_s(t['joined_s'])} "
                "(process start included)",
            )
        )
        missing = t["missing_by_phase"]
        unexpected = len(t["missing_unexpected"])
        out.append(
            row(
                "fleet: periods with two predictions / periods missed outside the take-over gap",
                len(t["duplicates"]),
                unexpected,
                "count",
                "0 / 0",
                not t["duplicates"] and not unexpected,
                f"missed by phase {missing or '{}'} (takeover_gap: the killed gateway's assets "
                f"until another's first prediction, expected); {t['redelivered_to_mes']} "
                f"redeliveries answered 'duplicate' by the MES (same key); "
                f"{t['received_by_mes']} predictions received",
            )
        )
        early = [r for r in t["restarts"] if r["handed_back_before_source_connected"]]
        not_good = t["not_good_by_phase"]
        out.append(
            row(
                "fleet: predictions not Good outside the take-over / hand-backs before the "
                "returning gateway's source connected",
                sum(n for k, n in not_good.items() if k != "takeover"),
                len(early),
                "count",
                "0 / 0",
                not early and not any(k != "takeover" for k in not_good),
                f"not Good by phase {not_good or '{}'} (takeover: another gateway's first "
                f"predictions of a taken asset, before its first Good one, expected); returning "
                f"gateway, seconds after its start (from the logs): gateway_started "
                f"{_s(t['restart_gateway_started_s'])}; source connected "
                f"{_s(t['restart_source_connected_s'])}; its last asset handed back "
                f"{_s(t['restart_handed_back_s'])}",
            )
        )
    elif t:
        out.append(row("fleet take-over", None, None, "", "", False, t.get("error", "")))
    le = figures.get("leases")
    if le:
        s = le["steady"]
        n = f"{le['assets']:,} assets, 3 processes, {s['seconds']:g} s"
        per = s["per_gateway"]
        out.append(
            row(
                f"fleet leases alone, {n}: CPU per process (% of a core, mean of 3)",
                round(s["cpu_percent_total"] / 3, 2),
                None,
                "%",
                "report",
                None,
                ", ".join(f"{k} {v['cpu_percent']} %" for k, v in per.items()),
            )
        )
        out.append(
            row(
                f"fleet leases alone, {n}: SQL statements/s in all",
                s["statements_per_s_total"],
                None,
                "/s",
                "report",
                None,
                ", ".join(
                    f"{k} {v['statements_per_s']}/s ({v['statements_per_beat']} per beat)"
                    for k, v in per.items()
                )
                + f"; transactions {s['commits_per_s_total']}/s, beats {s['beats_per_s_total']}/s",
            )
        )
        out.append(
            row(
                f"fleet leases alone, {n}: one beat (ms, p99)",
                s["beat_ms"]["p99"],
                None,
                "ms",
                "report",
                None,
                f"{_s(s['beat_ms'], ' ms')}; per process: "
                + "; ".join(
                    f"{k} median {v['beat_ms']['median']} ms, statements "
                    f"{_top(v['statements_ms_per_beat'])}"
                    for k, v in per.items()
                ),
            )
        )
        out.append(
            row(
                f"fleet leases alone, {n}: PostgreSQL backends of the 3 (% of a core)",
                s["backend_cpu_percent_total"],
                None,
                "%",
                "report",
                None,
                ", ".join(f"{k} {v['backend_cpu_percent']} %" for k, v in per.items())
                + f"; all PostgreSQL processes {s['postgres_all_processes_cpu_percent']} %; "
                f"database xact_commit {s['db_xact_commit_per_s']}/s (every client of the "
                "database counts)",
            )
        )
        out.append(
            row(
                f"fleet leases, {le['assets']:,} assets: cold start of 3 -> settled (s)",
                le["cold_start_settle_s"],
                None,
                "s",
                "report",
                None,
                f"warm_s {le['settings']['warm_s']:g}; failed beats meanwhile "
                f"{sum(len(v) for v in le['cold_start_failed_beats'].values())}, in the whole "
                f"part {sum(len(v) for v in le['failed_beats_in_all'].values())} (see the JSON)",
            )
        )
        k = le["kill"]
        out.append(
            row(
                f"fleet leases, {le['assets']:,} assets: kill -9 -> its {k['assets_moved']} "
                "held by the other two (s)",
                k["seconds"],
                None,
                "s",
                "report",
                None,
                f"survivors' beats meanwhile {_s(k['survivors_beat_ms_since_steady'], ' ms')}",
            )
        )
    return out


def _top(times: dict[str, Any], n: int = 3) -> str:
    """The statements that take longest per beat, shortened."""
    return ", ".join(f"[{key[:48]}...] {t['ms_per_beat']} ms" for key, t in list(times.items())[:n])


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(found: list[dict[str, Any]]) -> str:
    head = ("measure", "figure", "floor", "target", "met")
    lines = [
        (
            r["measure"],
            _fmt(r["bridge"]),
            _fmt(r["floor"]),
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r["met"]],
        )
        for r in found
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i in (0, 3) else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    notes = [f"  {r['measure']}: {r['note']}" for r in found if r.get("note")]
    return "\n".join([*out, "notes:", *notes])


def _print_findings(t: dict[str, Any]) -> None:
    for d in t["duplicates"][:20]:
        print(f"  duplicate: {d}")
    for m in t["missing_unexpected"][:20]:
        print(f"  missed: {m}")
    for p in t["assets_never_taken_over"]:
        print(f"  never taken over with a Good prediction: {p}")
    for n in t["not_good_unexpected"][:20]:
        print(f"  not Good: {n}")
    for r in t["restarts"]:
        if r["handed_back_before_source_connected"]:
            print(f"  handed back before the returning gateway's source connected: {r}")
    for gid, f in t["gateway_logs"].items():
        if f["levels"] or f["tracebacks"]:
            print(f"  {gid} log: {f['levels']}, {f['tracebacks']} tracebacks; {f['events']}")
            for line in f["error_examples"][:5]:
                print(f"    {line}")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--parts", default="takeover,leases")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--pumps", type=int, default=12)
    parser.add_argument("--order", choices=("round-robin", "random"), default="round-robin")
    parser.add_argument("--seed", type=int, default=1, help="for --order random")
    parser.add_argument("--dwell-s", type=float, default=3.0, help="settled before each kill")
    parser.add_argument("--takeover-timeout-s", type=float, default=30.0)
    parser.add_argument("--settle-timeout-s", type=float, default=90.0)
    parser.add_argument("--assets", type=int, default=2000, help="leases part")
    parser.add_argument("--seconds", type=float, default=60.0, help="leases: steady window")
    parser.add_argument("--warm-s", type=float, default=2.0, help="leases: FleetLeases warm_s")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 kills, 10 s window")
    args = parser.parse_args()
    if args.quick:
        args.kills, args.seconds = min(args.kills, 2), min(args.seconds, 10.0)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if unknown := parts - {"takeover", "leases"}:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}")
    configure_logging("warning", json=False)
    figures: dict[str, Any] = {"quick": args.quick, "command": " ".join(sys.argv)}
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    if "takeover" in parts:
        figures["takeover"] = asyncio.run(takeover(args))
        write_result("fleet", figures)
    if "leases" in parts:
        figures["leases"] = leases_part(args)
    figures["load_average_1m_start"] = round(load0, 2)
    figures["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    figures["rows"] = rows(figures)
    print()
    print(table(figures["rows"]))
    if "takeover" in figures:
        _print_findings(figures["takeover"])
    path = write_result("fleet", figures)
    print(f"\nwritten {path} in {figures['seconds']} s")
    return 1 if figures.get("takeover", {}).get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
