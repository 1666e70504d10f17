"""Soak: the demo plant for hours while its servers fail on a schedule, with the gateway's
resources sampled throughout; least-squares slopes after a warm-up show whether anything grows.

    python -m bench.soak [--hours 1] [--rate 10] [--restart-every-s 300] [--sample-s 10]
                         [--warmup-s S] [--out FILE] [--report FILE] [--workdir DIR]
    python -m bench.soak --refit bench/results/soak.json [--warmup-s S]   # judge a run again

Processes as deployed, all on 127.0.0.1 on free ports (a `bridge demo` can run beside it): the
plant OPC UA simulator, the Modbus PLC simulator and the MES receiver (``bridge simulate
plant|plc|mes``), and the gateway (``bridge run``) on the demo mapping (``mappings/demo.yaml``:
8 pumps, a Modbus line, the bundled pump model, the gateway's OPC UA server and an MES output)
with its SQLite store in a work directory. ``--rate`` compresses time: the plant's updates, the
OPC UA publishing interval, the Modbus poll interval and the model period are all ``--rate``
times the demo's (10: 4,000 plant values/s, 80 predictions and MES events/s), so an hour carries
the traffic of ``rate`` hours of the demo.

Faults, on a fixed schedule counted from the moment the gateway is ready:

- OPC UA server restart every ``--restart-every-s`` (300 s): the plant simulator is killed
  (SIGKILL, as a crash) and started again on the same port ``--plant-down-s`` (2 s) later;
- Modbus drop every ``--modbus-every-s`` (420 s) for ``--modbus-down-s`` (20 s): the PLC
  simulator is killed, then started again;
- MES outage every ``--mes-every-s`` (660 s) for ``--mes-down-s`` (60 s): the MES receiver is
  stopped (its port refuses connections); the outbox keeps the events and catches up.

Every ``--sample-s`` (10 s) the gateway's resident set size (``VmRSS``), open file descriptors
(``/proc/<pid>/fd``) and threads (``Threads``) are read from ``/proc/<pid>``, and its asyncio
tasks (``bridge_asyncio_tasks``, the least of 3 reads 0.2 s apart: the MES relay's in-flight
requests come and go), predictions, outbox backlog and deliveries, tag updates and source
reconnects from its ``/metrics``. A sample is *steady* when no fault is in progress and
the last fault ended ``--settle-s`` (30 s) ago or more.

Slopes: per resource, a least-squares line through the steady samples after the warm-up
(``--warmup-s``; default 300 s, or until every kind of fault has happened once and settled if
that is later, at most 60 % of the run; all samples after it when fewer than 5 are steady), per
hour. The residual standard deviation around the line is the noise. The
verdict is *flat* when the line's change over the fitted span, ``|slope x span|``, is within
``max(2 x residual std, floor)``, the floors being 5 MB, 3 fds, 2 threads and 3 tasks (the
smallest change read as growth when the samples do not move at all); else *rising* or
*falling*.

Work done: predictions made (steady rates against the expected ``8 x rate`` per second), MES
deliveries, source reconnects against the faults injected. At the end every fault is over, the
bench waits (``--settle-timeout-s``, 300 s) for both sources to be connected and the outbox to
be empty, stops the gateway (SIGTERM) and compares the store with what the MES received: every
stored prediction must have reached the MES (its Idempotency-Key in the MES log) or still be in
the outbox (kept for the next start); none may be missing. The exit status is 1 when one is
missing, 0 otherwise: resource figures are reported, never asserted.

Writes ``bench/results/soak.json`` (every sample, the fits, the faults, the loss check) and a
markdown report ``bench/results/soak.md``. Every process it starts it stops, also on Ctrl+C, an
exception or SIGTERM; the children are killed by the kernel if the bench itself is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.common import RESULTS, ROOT, free_port, proc_cpu_s, write_result

DEMO_MAPPING = ROOT / "mappings" / "demo.yaml"
PUMPS = 8  # the demo plant's, as mappings/demo.yaml maps them
FAULTY = "3"
# The demo's own intervals, divided by --rate.
DEMO_PLANT_INTERVAL_S = 0.1
DEMO_PUBLISHING_MS = 100.0
DEMO_POLL_MS = 500
DEMO_PERIOD_S = 1.0
# The smallest change over the fitted span read as growth when the samples do not move.
FLOORS = {"rss_mb": 5.0, "fds": 3.0, "threads": 2.0, "tasks": 3.0}
UNITS = {"rss_mb": "MB", "fds": "fds", "threads": "threads", "tasks": "tasks"}
# RSS split by kind of mapping, fitted like the rest but not judged: it says where growth is.
MEMORY_PARTS = {"heap_mb": "main heap", "anon_mmap_mb": "anonymous mappings", "file_mb": "files"}
MIN_STEADY = 5
SCRAPE_TIMEOUT_S = 10.0
TASK_READS = 3
TASK_READ_GAP_S = 0.2
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: a bench killed with SIGKILL (a test's timeout)
    # cannot stop its children, so the kernel does.
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Child:
    """One process of the setup, started again after each fault; its output goes to ``log``."""

    name: str
    argv: list[str]
    log: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, within_s: float = 60.0) -> None:
        # A restarted server can lose the race for its port (TIME_WAIT, a slow exit): retry.
        for _ in range(3):
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    preexec_fn=_die_with_parent,  # the bench runs no threads
                )
            if self._listening(within_s):
                self.starts += 1
                return
            self.stop()
            time.sleep(1.0)
        raise RuntimeError(f"{self.name} did not listen on port {self.port}: see {self.log}")

    def _listening(self, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0),
            ):
                return True
            time.sleep(0.2)
        return False

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL after ``grace_s``; the exit status (None if it was not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode


@dataclass(frozen=True)
class Fault:
    name: str  # "plant restart", "modbus drop", "mes outage"
    child: str
    every_s: float
    down_s: float
    how: str  # "kill" (a crash) or "stop" (SIGTERM)


@dataclass(frozen=True)
class Event:
    at_s: float
    up: bool
    fault: Fault


def default_warmup(faults: list[Fault], duration_s: float, settle_s: float) -> float:
    """300 s, or until every fault has happened once and settled if that is later, at most
    60 % of the run. The first outage of a kind sets high-water marks (the allocator's, the
    store's caches during a backlog) that the next ones reuse: a leak is growth that repeats."""
    first_round = max(
        (f.every_s + f.down_s + settle_s for f in faults if 0 < f.every_s < duration_s),
        default=0.0,
    )
    return min(max(300.0, first_round), 0.6 * duration_s)


def schedule(faults: list[Fault], duration_s: float) -> list[Event]:
    """Every fault's down and up events within ``duration_s``, in time order (up before down at
    the same instant). A fault whose next start falls inside its own outage is skipped."""
    events: list[Event] = []
    for f in faults:
        if f.every_s <= 0:
            continue
        k = 1
        while k * f.every_s < duration_s:
            start = k * f.every_s
            events += [Event(start, False, f), Event(min(start + f.down_s, duration_s), True, f)]
            k += 1
            if f.down_s >= f.every_s:
                break
    return sorted(events, key=lambda e: (e.at_s, not e.up))


def soak_mapping(
    work: Path, rate: float, plant: int, plc: int, mes: int, api: int, hmi: int
) -> dict[str, Any]:
    """The demo mapping, on these ports, with its intervals divided by ``rate``."""
    doc: dict[str, Any] = yaml.safe_load(DEMO_MAPPING.read_text())
    gw = doc["gateway"]
    gw["store"] = f"sqlite:///{work / 'soak.db'}"
    gw["api"] = {"host": "127.0.0.1", "port": api}
    gw["audit"] = {"signing_key": str(work / "audit-ed25519.pem")}
    src = doc["sources"]
    src["plant"]["endpoint"] = f"opc.tcp://127.0.0.1:{plant}"
    src["plant"]["publishing_interval_ms"] = DEMO_PUBLISHING_MS / rate
    src["line-plc"]["port"] = plc
    src["line-plc"]["poll_interval_ms"] = max(10, round(DEMO_POLL_MS / rate))
    model = doc["models"]["pump-health"]
    for key in ("file", "reference"):
        model[key] = str((DEMO_MAPPING.parent / model[key]).resolve())
    model["period_s"] = DEMO_PERIOD_S / rate
    outputs = doc["outputs"]
    outputs["hmi"]["endpoint"] = f"opc.tcp://127.0.0.1:{hmi}"
    outputs["mes"]["url"] = f"http://127.0.0.1:{mes}/api/v1/predictions"
    return doc


# --- sampling ---------------------------------------------------------------------------------

MetricSamples = list[tuple[str, dict[str, str], float]]


def scrape(api_port: int) -> MetricSamples | None:
    """The gateway's /metrics as (name, labels, value); None when it did not answer in time."""
    url = f"http://127.0.0.1:{api_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: MetricSamples | None, name: str, **labels: str) -> float | None:
    """The sum of the series of ``name`` carrying ``labels``; None when there is none."""
    if samples is None:
        return None
    values = [
        v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items())
    ]
    return sum(values) if values else None


def proc_status(pid: int) -> dict[str, float]:
    """RSS (MB), threads and open file descriptors of ``pid`` from /proc."""
    status: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            status["rss_mb"] = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            status["threads"] = int(line.split()[1])
    status["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    status.update(memory_parts(pid))
    return status


def memory_parts(pid: int) -> dict[str, float]:
    """Where the resident memory is (MB), from /proc/<pid>/smaps: the main heap (``[heap]``,
    grown by brk: the main thread's malloc arena), anonymous mappings (other threads' malloc
    arenas, large allocations, the interpreter's arenas) and file-backed pages (libraries, the
    store's shared memory). A leak in native code shows in one of the first two; the cure
    differs (a smaller SQLite cache, fewer malloc arenas, a fix in a library)."""
    parts = {"heap_mb": 0.0, "anon_mmap_mb": 0.0, "file_mb": 0.0}
    kind = "file_mb"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
            name = head[5].strip() if len(head) > 5 else ""
            if name == "[heap]":
                kind = "heap_mb"
            elif not name or name.startswith("[anon"):
                kind = "anon_mmap_mb"
            elif name.startswith("["):  # [stack], [vvar], [vdso]
                kind = ""
            else:
                kind = "file_mb"
        elif head and head[0] == "Rss:" and kind:
            parts[kind] += int(head[1]) / 1024
    return {k: round(v, 2) for k, v in parts.items()}


def file_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 1e6


def take_sample(
    t_s: float, gateway: Child, api_port: int, db: Path, active: list[str], steady: bool
) -> dict[str, Any]:
    status = proc_status(gateway.pid)
    metrics = scrape(api_port)
    # The relay's in-flight POSTs come and go between two scrapes (29 or 40 tasks a moment
    # apart): the least of a few quick reads is the count that a leak would raise.
    tasks = [total(metrics, "bridge_asyncio_tasks")]
    for _ in range(TASK_READS - 1):
        time.sleep(TASK_READ_GAP_S)
        tasks.append(total(scrape(api_port), "bridge_asyncio_tasks"))
    counted = [n for n in tasks if n is not None]
    sample: dict[str, Any] = {
        "t_s": round(t_s, 1),
        "phase": ", ".join(active) or "running",
        "steady": steady,
        "load_1m": round(os.getloadavg()[0], 2),
        **status,
        "cpu_s": proc_cpu_s(gateway.pid),
        "scraped": metrics is not None,
        "tasks": min(counted) if counted else None,
        "tasks_max": max(counted) if counted else None,
        "predictions": total(metrics, "bridge_predictions_total"),
        "delivered": total(metrics, "bridge_outbox_delivered_total", destination="mes"),
        "backlog": total(metrics, "bridge_outbox_backlog", destination="mes"),
        "retries": total(metrics, "bridge_outbox_retries_total", destination="mes"),
        "tag_updates": total(metrics, "bridge_tag_updates_applied_total"),
        "plant_connected": total(metrics, "bridge_source_connected", source="plant"),
        "plc_connected": total(metrics, "bridge_source_connected", source="line-plc"),
        "plant_reconnects": total(metrics, "bridge_source_reconnects_total", source="plant"),
        "plc_reconnects": total(metrics, "bridge_source_reconnects_total", source="line-plc"),
        "store_mb": round(file_mb(db, db.with_name(db.name + "-wal")), 2),
    }
    sample["rss_mb"] = round(sample["rss_mb"], 2)
    return sample


# --- slopes -----------------------------------------------------------------------------------


def fit(points: list[tuple[float, float]], floor: float) -> dict[str, Any]:
    """Least-squares line through (seconds, value): slope per hour, residual std, verdict."""
    n = len(points)
    if n < 3:
        return {"samples": n, "verdict": "too few samples"}
    t = np.array([p[0] for p in points]) / 3600.0
    y = np.array([p[1] for p in points], dtype=float)
    slope, intercept = np.polyfit(t, y, 1)
    residuals = y - (slope * t + intercept)
    noise = float(np.sqrt(np.sum(residuals**2) / (n - 2)))
    span_h = float(t[-1] - t[0])
    change = float(slope * span_h)
    band = max(2 * noise, floor)
    verdict = "flat" if abs(change) <= band else ("rising" if change > 0 else "falling")
    return {
        "samples": n,
        "first": round(float(y[0]), 2),
        "last": round(float(y[-1]), 2),
        "min": round(float(y.min()), 2),
        "max": round(float(y.max()), 2),
        "slope_per_h": round(float(slope), 3),
        "residual_std": round(noise, 3),
        "span_h": round(span_h, 3),
        "change_over_span": round(change, 3),
        "band": round(band, 3),
        "floor": floor,
        "verdict": verdict,
    }


def slopes(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    after = [s for s in samples if s["t_s"] >= warmup_s]
    steady = [s for s in after if s["steady"]]
    chosen, which = (
        (steady, f"the {len(steady)} steady")
        if len(steady) >= MIN_STEADY
        else (after, f"all {len(after)} (too few steady)")
    )
    fits: dict[str, Any] = {"fitted_on": which, "warmup_s": warmup_s}
    for key, floor in FLOORS.items():
        points = [(s["t_s"], s[key]) for s in chosen if s.get(key) is not None]
        fits[key] = fit(points, floor)
        # Every sample after the warm-up too, faults and all: the noise they add is shown.
        every = [(s["t_s"], s[key]) for s in after if s.get(key) is not None]
        fits[key]["all_samples"] = fit(every, floor)
    for key in MEMORY_PARTS:
        points = [(s["t_s"], s[key]) for s in chosen if s.get(key) is not None]
        fits[key] = fit(points, FLOORS["rss_mb"])
    return fits


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Setup:
    work: Path
    rate: float
    ports: dict[str, int]
    children: dict[str, Child]
    mes_log: Path
    db: Path

    @classmethod
    def make(cls, work: Path, rate: float) -> Setup:
        ports = {name: free_port() for name in ("plant", "plc", "mes", "api", "hmi")}
        mapping = work / "soak.yaml"
        doc = soak_mapping(work, rate, **ports)
        mapping.write_text(yaml.safe_dump(doc, sort_keys=False))
        py = [sys.executable, "-m", "bridge"]
        mes_log = work / "mes-calls.jsonl"
        plant = ["--port", str(ports["plant"]), "--pumps", str(PUMPS), "--faulty", FAULTY]
        plant += ["--interval", f"{DEMO_PLANT_INTERVAL_S / rate:g}"]
        children = {
            "plant": Child(
                "plant",
                [*py, "simulate", "plant", *plant],
                work / "plant.log",
                ports["plant"],
            ),
            "plc": Child(
                "plc",
                [*py, "simulate", "plc", "--port", str(ports["plc"])],
                work / "plc.log",
                ports["plc"],
            ),
            "mes": Child(
                "mes",
                [*py, "simulate", "mes", "--port", str(ports["mes"]), "--log", str(mes_log)],
                work / "mes.log",
                ports["mes"],
            ),
            "gateway": Child(
                "gateway", [*py, "run", str(mapping)], work / "gateway.log", ports["api"]
            ),
        }
        return cls(work, rate, ports, children, mes_log, work / "soak.db")


def wait_ready(api_port: int, gateway: Child, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    url = f"http://127.0.0.1:{api_port}/readyz"
    while time.monotonic() < deadline:
        if gateway.proc is None or gateway.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited: see {gateway.log}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=5) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the gateway was not ready within {within_s:g} s: see {gateway.log}")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    setup = Setup.make(work, args.rate)
    ch = setup.children
    faults = [
        Fault("plant restart", "plant", args.restart_every_s, args.plant_down_s, "kill"),
        Fault("modbus drop", "plc", args.modbus_every_s, args.modbus_down_s, "kill"),
        Fault("mes outage", "mes", args.mes_every_s, args.mes_down_s, "stop"),
    ]
    duration_s = args.hours * 3600
    warmup_s = args.warmup_s
    if warmup_s is None:
        warmup_s = default_warmup(faults, duration_s, args.settle_s)
    events = schedule(faults, duration_s)
    injected = {f.name: 0 for f in faults}
    samples: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        # Stopped in reverse: the gateway first, then what it talks to.
        for name in ("mes", "plc", "plant", "gateway"):
            child = ch[name]
            stack.callback(child.stop)
            child.start(120 if name == "gateway" else 60)
        wait_ready(setup.ports["api"], ch["gateway"], 180)
        t0 = time.monotonic()
        print(
            f"gateway ready (pid {ch['gateway'].pid}); soaking {duration_s:g} s at rate "
            f"{args.rate:g}, {len(events) // 2} faults scheduled, work dir {work}",
            flush=True,
        )
        active: list[Fault] = []
        last_change = -float("inf")
        next_sample = 0.0
        # Until the end, and until every fault scheduled before it was injected: a slow sample
        # (a scrape on a loaded machine) must not skip the last faults of the schedule.
        while (now := time.monotonic() - t0) < duration_s or events:
            while events and events[0].at_s <= now:
                ev = events.pop(0)
                child = ch[ev.fault.child]
                if ev.up:
                    child.start()
                    active.remove(ev.fault)
                elif ev.fault.how == "kill":
                    child.kill()
                else:
                    child.stop()
                if not ev.up:
                    active.append(ev.fault)
                    injected[ev.fault.name] += 1
                last_change = now
                print(f"[{now:7.1f} s] {ev.fault.name}: {'up' if ev.up else 'down'}", flush=True)
            if now >= next_sample:
                steady = not active and now - last_change >= args.settle_s
                names = [f.name for f in active]
                s = take_sample(now, ch["gateway"], setup.ports["api"], setup.db, names, steady)
                samples.append(s)
                next_sample += args.sample_s
                print(
                    f"[{now:7.1f} s] rss {s['rss_mb']:.1f} MB, fds {s['fds']:g}, threads "
                    f"{s['threads']:g}, tasks {_n(s['tasks'])}, predictions "
                    f"{_n(s['predictions'])}, backlog {_n(s['backlog'])} ({s['phase']})",
                    flush=True,
                )
            wake = min([duration_s, next_sample] + [e.at_s for e in events[:1]])
            time.sleep(min(1.0, max(0.05, wake - (time.monotonic() - t0))))
        # Every fault over, then the gateway must catch up: both sources back, outbox empty.
        for fault in active:
            ch[fault.child].start()
        settled, settle_s = settle(setup, args.settle_timeout_s)
        final = scrape(setup.ports["api"])
        end = take_sample(
            time.monotonic() - t0, ch["gateway"], setup.ports["api"], setup.db, [], True
        )
        gateway_exit = ch["gateway"].stop(60)
    # Once the MES receiver has stopped too: it logs the duplicates it answered as it stops.
    loss = loss_check(setup)
    return {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "expected_predictions_per_s": PUMPS / (DEMO_PERIOD_S / args.rate),
        "offered_plant_values_per_s": PUMPS * 5 / (DEMO_PLANT_INTERVAL_S / args.rate),
        "faults": [f.__dict__ for f in faults],
        "injected": injected,
        "reconnects": {
            "plant": total(final, "bridge_source_reconnects_total", source="plant"),
            "line-plc": total(final, "bridge_source_reconnects_total", source="line-plc"),
        },
        "starts": {name: c.starts for name, c in ch.items()},
        "settled": settled,
        "settle_s": round(settle_s, 1),
        "end": end,
        "gateway_exit": gateway_exit,
        "loss": loss,
        "fits": slopes(samples, warmup_s),
        "work": work_figures(samples, final),
        "samples": samples,
    }


def settle(setup: Setup, within_s: float) -> tuple[bool, float]:
    """Wait for both sources connected and an empty outbox; (done, seconds waited)."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        m = scrape(setup.ports["api"])
        if (
            total(m, "bridge_source_connected", source="plant") == 1
            and total(m, "bridge_source_connected", source="line-plc") == 1
            and total(m, "bridge_outbox_backlog", destination="mes") == 0
        ):
            return True, time.monotonic() - started
        time.sleep(1.0)
    return False, time.monotonic() - started


def loss_check(setup: Setup) -> dict[str, Any]:
    """The stopped gateway's store against the MES log: nothing stored may be missing."""
    con = sqlite3.connect(setup.db)
    try:
        stored = {r[0] for r in con.execute("SELECT prediction_id FROM predictions")}
        pending = {
            r[0] for r in con.execute("SELECT event_id FROM outbox WHERE destination = 'mes'")
        }
        dead = con.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    finally:
        con.close()
    calls = 0
    received: set[str] = set()
    if setup.mes_log.exists():
        with setup.mes_log.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    calls += 1
                    received.add(json.loads(line)["idempotency_key"])
    missing = stored - received - pending
    # A key logged twice came again after a receiver restart; one sent again to the same
    # receiver is answered "duplicate" and counted in the receiver's stop line instead.
    answered = 0
    log = setup.children["mes"].log
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if '"mes_receiver_stopped"' in line:
            answered += int(json.loads(line).get("duplicates", 0))
    return {
        "stored_predictions": len(stored),
        "mes_calls": calls,
        "mes_unique_keys": len(received),
        "mes_duplicates": calls - len(received) + answered,
        "pending_in_outbox_at_stop": len(pending),
        "dead_letters": dead,
        "missing": len(missing),
        "missing_examples": sorted(missing)[:5],
        "unknown_at_mes": len(received - stored),
        "no_loss": not missing and len(stored) > 0,
    }


def work_figures(samples: list[dict[str, Any]], final: MetricSamples | None) -> dict[str, Any]:
    """Rates between consecutive samples: predictions/s over steady intervals, CPU, ingest."""
    pred_rates: list[float] = []
    for a, b in itertools.pairwise(samples):
        if a["steady"] and b["steady"] and None not in (a["predictions"], b["predictions"]):
            pred_rates.append((b["predictions"] - a["predictions"]) / (b["t_s"] - a["t_s"]))
    first, last = (samples[0], samples[-1]) if samples else ({}, {})
    span = (last.get("t_s", 0) - first.get("t_s", 0)) or float("nan")

    def per_s(key: str) -> float | None:
        if first.get(key) is None or last.get(key) is None:
            return None
        return round(float(last[key] - first[key]) / span, 1)

    return {
        "predictions_total": total(final, "bridge_predictions_total"),
        "delivered_total": total(final, "bridge_outbox_delivered_total", destination="mes"),
        "retries_total": total(final, "bridge_outbox_retries_total", destination="mes"),
        "steady_prediction_rate_median": round(statistics.median(pred_rates), 1)
        if pred_rates
        else None,
        "steady_prediction_rate_min": round(min(pred_rates), 1) if pred_rates else None,
        "steady_intervals": len(pred_rates),
        "predictions_per_s": per_s("predictions"),
        "tag_updates_per_s": per_s("tag_updates"),
        "gateway_cpu_percent": round(100 * (last["cpu_s"] - first["cpu_s"]) / span, 1)
        if samples
        else None,
        "store_mb_first": first.get("store_mb"),
        "store_mb_last": last.get("store_mb"),
        "scrape_failures": sum(1 for s in samples if not s["scraped"]),
        "max_backlog": max((s["backlog"] or 0 for s in samples), default=0),
    }


# --- report -----------------------------------------------------------------------------------


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(figures: dict[str, Any]) -> str:
    fits, work, loss, args = figures["fits"], figures["work"], figures["loss"], figures["args"]
    lines = [
        "# Soak run",
        "",
        f"{figures['duration_s'] / 3600:g} h at rate {args['rate']:g} (plant "
        f"{figures['offered_plant_values_per_s']:,.0f} values/s offered, "
        f"{figures['expected_predictions_per_s']:g} predictions/s expected); samples every "
        f"{args['sample_s']:g} s; slopes fitted on {fits['fitted_on']} samples after a "
        f"{figures['warmup_s']:g} s warm-up.",
        "",
        "| resource | samples | first -> last (min-max) | slope per hour | residual std | "
        "change over fit | band | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, unit in UNITS.items():
        f = fits[key]
        if "slope_per_h" not in f:
            lines.append(f"| {key} | {f['samples']} | - | - | - | - | - | {f['verdict']} |")
            continue
        every = f["all_samples"]
        lines.append(
            f"| {key} ({unit}) | {f['samples']} | {f['first']:g} -> {f['last']:g} "
            f"({f['min']:g}-{f['max']:g}) | {f['slope_per_h']:+.2f} {unit}/h | "
            f"{f['residual_std']:.2f} | {f['change_over_span']:+.2f} over "
            f"{f['span_h'] * 60:.1f} min | {f['band']:.2f} | **{f['verdict']}** (all samples: "
            f"{every.get('slope_per_h', 0):+.2f}/h, {every['verdict']}) |"
        )
    parts = [(key, label, fits.get(key, {})) for key, label in MEMORY_PARTS.items()]
    if any("slope_per_h" in f for _, _, f in parts):
        lines += [
            "",
            "| RSS part (MB) | first -> last (min-max) | slope per hour | residual std |",
            "|---|---|---|---|",
        ]
        for _, label, f in parts:
            if "slope_per_h" in f:
                lines.append(
                    f"| {label} | {f['first']:g} -> {f['last']:g} ({f['min']:g}-{f['max']:g}) "
                    f"| {f['slope_per_h']:+.2f} MB/h | {f['residual_std']:.2f} |"
                )
    inj, rec = figures["injected"], figures["reconnects"]
    lines += [
        "",
        "| work | figure |",
        "|---|---|",
        f"| faults injected | plant restarts {inj['plant restart']}, Modbus drops "
        f"{inj['modbus drop']}, MES outages {inj['mes outage']} |",
        f"| source reconnects seen by the gateway | plant {_n(rec['plant'])}, line-plc "
        f"{_n(rec['line-plc'])} |",
        f"| predictions made | {_n(work['predictions_total'])} "
        f"({work['predictions_per_s']} /s over the run; steady intervals median "
        f"{work['steady_prediction_rate_median']} /s, min {work['steady_prediction_rate_min']} "
        f"/s) |",
        f"| delivered to the MES | {_n(work['delivered_total'])} (retries "
        f"{_n(work['retries_total'])}, largest backlog sampled {_n(work['max_backlog'])}) |",
        f"| tag updates applied | {work['tag_updates_per_s']} /s |",
        f"| gateway CPU | {work['gateway_cpu_percent']} % of one core |",
        f"| store (SQLite + WAL) | {work['store_mb_first']} -> {work['store_mb_last']} MB |",
        f"| after the last fault | settled {figures['settled']} in {figures['settle_s']} s; "
        f"gateway exit status {figures['gateway_exit']} |",
        f"| loss check | {loss['stored_predictions']:,} stored, {loss['mes_unique_keys']:,} "
        f"received by the MES ({loss['mes_duplicates']:,} duplicates), "
        f"{loss['pending_in_outbox_at_stop']} still in the outbox at stop, "
        f"{loss['dead_letters']} dead letters, **{loss['missing']} missing** |",
        "",
        "Verdict rule: flat when |slope x span| <= max(2 x residual std, floor); floors "
        + ", ".join(f"{k} {v:g}" for k, v in FLOORS.items())
        + ". Method: bench/soak.py's docstring and docs/soak.md.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=1.0, help="length of the run")
    parser.add_argument("--rate", type=float, default=10.0, help="plant speed-up over the demo")
    parser.add_argument("--restart-every-s", type=float, default=300, help="plant restarts")
    parser.add_argument("--plant-down-s", type=float, default=2, help="plant down per restart")
    parser.add_argument("--modbus-every-s", type=float, default=420, help="PLC drops")
    parser.add_argument("--modbus-down-s", type=float, default=20, help="PLC down per drop")
    parser.add_argument("--mes-every-s", type=float, default=660, help="MES outages")
    parser.add_argument("--mes-down-s", type=float, default=60, help="MES down per outage")
    parser.add_argument("--sample-s", type=float, default=10, help="sampling period")
    parser.add_argument(
        "--warmup-s",
        type=float,
        help="samples left out of the fits (default: 300 s or the first round of faults)",
    )
    parser.add_argument(
        "--settle-s", type=float, default=30, help="steady: this long after the last fault"
    )
    parser.add_argument(
        "--settle-timeout-s", type=float, default=300, help="wait at the end for catch-up"
    )
    parser.add_argument("--out", type=Path, help="JSON (default bench/results/soak.json)")
    parser.add_argument("--report", type=Path, help="markdown (default bench/results/soak.md)")
    parser.add_argument("--workdir", type=Path, help="keep store and logs here (default: temp)")
    parser.add_argument(
        "--refit", type=Path, help="no run: fit and report again the samples of this JSON"
    )
    args = parser.parse_args()
    if args.refit is not None:
        return refit(args.refit, args.warmup_s, args.out or args.refit, args.report)
    if args.workdir is not None and (args.workdir / "soak.db").exists():
        # The loss check compares the store with the MES log: an old run's rows would count.
        parser.error(f"{args.workdir} holds an earlier run's store: give a new directory")
    # SIGTERM unwinds like Ctrl+C, so every child is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with _workdir(args.workdir) as work:
        figures = run(args, work)
    out = write_result("soak", figures, args.out)
    return _report(figures, out, args.report)


def refit(source: Path, warmup_s: float | None, out: Path, report_path: Path | None) -> int:
    """The fits and report of a finished run again, with the current rules (or another
    warm-up); the run's samples, time and machine are kept."""
    doc = json.loads(source.read_text())
    figures = doc["figures"]
    if warmup_s is None:
        faults = [Fault(**f) for f in figures["faults"]]
        warmup_s = default_warmup(faults, figures["duration_s"], figures["args"]["settle_s"])
    figures["warmup_s"] = warmup_s
    figures["fits"] = slopes(figures["samples"], warmup_s)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return _report(figures, out, report_path)


def _report(figures: dict[str, Any], out: Path, report_path: Path | None) -> int:
    path = report_path or RESULTS / "soak.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = report(figures)
    path.write_text(text)
    print()
    print(text)
    print(f"written {out} and {path}")
    return 0 if figures["loss"]["no_loss"] else 1


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="bridge-soak-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    sys.exit(main())
