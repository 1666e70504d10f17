"""The web console under load: server render time of the Assets page, paint time in Chromium,
and the live rows (Server-Sent Events) fanned out to 10 open pages over 2,000 changing assets.

The gateway runs in a process of its own (multiprocessing, spawn): the real app of
``create_gateway_app`` (REST API + console) served by ``ApiServer`` (uvicorn), a real SQLite
store (the API key the console logs in with), and a view of ``--assets`` assets x 1 model x 5
tags whose predictions are all replaced once a second by a task on the server's loop (new
prediction ids, random-walk scores, fresh tag values), so every row changes every second and
the live stream has work. ``live_period_s`` is ``--live-period`` (1.0).

1. Render: ``GET /console/assets?size=2000`` (all rows) and the default page (``size=200``),
   ``--requests`` times each, one after another, with a session cookie (httpx): wall time per
   request on this side of the loopback (median, p95), the page's bytes, the gateway's CPU per
   request (its baseline rate taken off). Measured after the fan-out, so the sparklines hold
   their 60 points (fewer in ``--quick``).
2. Paint: Debian's Chromium (/usr/bin/chromium) through Playwright loads
   ``/console/assets?size=2000`` ``--loads`` times, each in a new browser context (cold cache,
   the session cookie set), after one load not counted: first paint and first contentful paint
   (``performance.getEntriesByType('paint')``), DOMContentLoaded and load (navigation timing);
   medians. Skipped with a note when Chromium or the playwright package is missing.
3. SSE fan-out: ``--clients`` streams of ``/console/live?view=assets&size=2000`` (a login each)
   held by one client process of its own (asyncio + httpx; its CPU is reported, not counted).
   The gateway process's CPU (user + system from /proc/<pid>/stat, 100 % = one core) over
   ``--seconds``, and over a baseline window of ``--baseline-s`` before it with the view
   updating and no page open: the streams' cost is the difference. Per client: events/s,
   rows/s, bytes/s, the longest gap between two events. Every ``--sample-s``: the gateway's
   RSS (/proc/<pid>/status VmRSS) and Python's allocated blocks (``sys.getallocatedblocks``,
   asked over a pipe; tracemalloc would slow the very process measured): start, end, max and
   the least-squares slope (MB per minute), over the whole window and once the sparklines are
   full (60 periods after the streams opened). ``--tracemalloc`` adds the traced MB (a
   diagnosis of memory: tracing slows the gateway, so its CPU figures do not count then).

    python -m bench.console [--assets 2000 --clients 10 --seconds 600 --baseline-s 60
                             --requests 30 --loads 5 --sample-s 10] [--quick] [--no-browser]
                            [--tracemalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import multiprocessing
import os
import random
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

import httpx

from bench.common import ROOT, free_port, percentile, proc_cpu_s, row, stop, write_result
from bridge.api import ApiServices
from bridge.api.sessions import SESSION_COOKIE
from bridge.api.view import ModelInfo, TagState
from bridge.auth.scopes import Scope
from bridge.cancel import cancel_and_wait
from bridge.config.spec import ApiSettings, ConsoleSettings
from bridge.console.app import create_gateway_app
from bridge.console.live import SPARK_POINTS, LiveHub
from bridge.logging import configure_logging
from bridge.runtime.apiserver import ApiServer
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import open_store
from bridge.types import ComponentHealth, InputSnapshot, Prediction, Quality

TARGET_CPU_ADDED = 10.0  # % of one core, for the whole fan-out
# "No growth of memory": the RSS fit once the sparklines are full, at most this (6 MB an hour).
TARGET_SLOPE_MB_PER_MIN = 0.1
TAGS = ("vibration", "bearing_temperature", "discharge_pressure", "speed", "running")
LABELS = ("healthy", "bearing_wear", "cavitation")
MODEL = "pump-health"
ASSETS_PATH = "/console/assets"
COOKIES_ENV = "BENCH_CONSOLE_COOKIES"
# As tests/browserkit.py launches it (bench does not import the tests, which need pytest).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --- the gateway's process -------------------------------------------------------------------


class ChangingView:
    """A ``GatewayView`` of ``assets`` pumps x 1 model x 5 tags; ``tick()`` replaces every
    prediction (new ids) and every tag value. ``tag_states()`` builds its list per call, as
    the runtime's ``TagTable.snapshot`` does."""

    def __init__(self, assets: int, seed: int = 17) -> None:
        self.gateway_id = "bench"
        self._rng = random.Random(seed)
        self._assets = [f"pump-{i:05d}" for i in range(1, assets + 1)]
        self._scores = [self._rng.uniform(0.6, 0.99) for _ in self._assets]
        self._labels = [
            LABELS[0] if self._rng.random() > 0.1 else self._rng.choice(LABELS[1:])
            for _ in self._assets
        ]
        # Per tag: [tag id, asset, name, value, quality, source time, received time].
        self._tags: list[list[Any]] = [
            [f"{a}.{t}", a, t, 0.0, Quality.GOOD, None, None] for a in self._assets for t in TAGS
        ]
        self._latest: list[Prediction] = []
        self._boot = time.time()
        self._models = [
            ModelInfo(
                MODEL,
                "1.0.0",
                "f" * 64,
                "pump_health.onnx",
                self._boot,
                tuple(self._assets),
                ("vibration.mean", "vibration.std", "bearing_temperature.mean"),
            )
        ]
        self.seq = 0
        self.ticks = 0
        self.tick_s_total = 0.0
        self.tick_s_max = 0.0
        self.tick()

    def tick(self) -> None:
        t0 = time.perf_counter()
        now = time.time()
        rng = self._rng
        for entry in self._tags:
            entry[3] = round(50.0 + rng.gauss(0, 5), 3)
            entry[4] = Quality.GOOD if rng.random() > 0.01 else Quality.UNCERTAIN
            entry[5], entry[6] = now - 0.05, now
        latest = []
        for i, asset in enumerate(self._assets):
            score = min(0.999, max(0.34, self._scores[i] + rng.gauss(0, 0.02)))
            self._scores[i] = score
            if rng.random() < 0.002:
                self._labels[i] = rng.choice(LABELS)
            tags = self._tags[i * len(TAGS) : (i + 1) * len(TAGS)]
            self.seq += 1
            latest.append(
                Prediction(
                    id=str(uuid.uuid4()),
                    seq=self.seq,
                    asset=asset,
                    model=MODEL,
                    version="1.0.0",
                    sha256="f" * 64,
                    value=self._labels[i],
                    score=score,
                    quality=max(t[4] for t in tags),
                    timestamp=now,
                    input_age_s=0.05,
                    inputs=tuple(InputSnapshot(t[0], t[3], t[4], t[5]) for t in tags),
                )
            )
        self._latest = latest  # replaced whole: a reader never sees half a tick
        spent = time.perf_counter() - t0
        self.ticks += 1
        self.tick_s_total += spent
        self.tick_s_max = max(self.tick_s_max, spent)

    def tag_states(self) -> Sequence[TagState]:
        return [
            TagState(
                tag=e[0],
                asset=e[1],
                name=e[2],
                source="plant",
                value=e[3],
                unit="",
                quality=e[4],
                source_time=e[5],
                server_time=e[5],
                received_time=e[6],
                reason="",
            )
            for e in self._tags
        ]

    def latest_predictions(self) -> Sequence[Prediction]:
        return self._latest

    def models(self) -> Sequence[ModelInfo]:
        return self._models

    def health(self) -> Sequence[ComponentHealth]:
        return [ComponentHealth("source:plant", "ok")]

    def started_at(self) -> float:
        return self._boot


async def _update(view: ChangingView, period_s: float) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        next_at += period_s
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        view.tick()


async def _serve_gateway(conn: Connection, port: int, assets: int, live_period_s: float) -> None:
    view = ChangingView(assets)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/console.db")
        settings = ApiSettings(console=ConsoleSettings(live_period_s=live_period_s))
        services = ApiServices.from_store(view, store, settings)
        app = create_gateway_app(services)
        hub = app.state.console_hub
        assert isinstance(hub, LiveHub)
        _, key = ApiKeyRepository(store).create("bench", Scope.READ)
        server = ApiServer(app, "127.0.0.1", port)
        await server.start()
        updater = asyncio.create_task(_update(view, 1.0), name="bench-view")
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_message() -> None:
            try:
                message = conn.recv()
            except EOFError:  # the parent is gone
                done.set()
                return
            if message != "stats":
                done.set()
                return
            conn.send(
                {
                    "streams": hub.streams,
                    "allocated_blocks": sys.getallocatedblocks(),
                    "traced_mb": round(tracemalloc.get_traced_memory()[0] / 1e6, 3)
                    if tracemalloc.is_tracing()
                    else None,
                    "sessions": len(services.sessions),
                    "ticks": view.ticks,
                    "tick_ms_mean": round(1000 * view.tick_s_total / max(1, view.ticks), 2),
                    "tick_ms_max": round(1000 * view.tick_s_max, 2),
                }
            )

        loop.add_reader(conn.fileno(), on_message)
        conn.send({"key": key, "pid": os.getpid(), "port": port})
        await done.wait()
        loop.remove_reader(conn.fileno())
        await server.stop()
        await cancel_and_wait(updater)
        store.dispose()


def _gateway_main(
    conn: Connection, port: int, assets: int, live_period_s: float, trace: bool
) -> None:
    configure_logging("warning")
    if trace:
        tracemalloc.start(1)
    asyncio.run(_serve_gateway(conn, port, assets, live_period_s))


class Gateway:
    """The gateway's process, seen from here: its pid, its API key, its stats over a pipe."""

    def __init__(self, assets: int, live_period_s: float, trace: bool = False) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = ctx.Process(
            target=_gateway_main,
            args=(child, self.port, assets, live_period_s, trace),
            name="bench-console-gateway",
            daemon=True,
        )
        self.proc.start()
        child.close()
        if not self.conn.poll(120):
            self.close()
            raise RuntimeError("the gateway's process did not start within 120 s")
        info = self.conn.recv()
        self.key: str = info["key"]
        self.pid: int = info["pid"]

    def stats(self) -> dict[str, Any]:
        self.conn.send("stats")
        if not self.conn.poll(30):
            raise RuntimeError("the gateway did not answer for its stats within 30 s")
        found: dict[str, Any] = self.conn.recv()
        return found

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send("stop")
            self.proc.join(20)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
        self.conn.close()


def login(base: str, key: str) -> str:
    """A console session: the login form posted with this server's Origin; its cookie."""
    with httpx.Client(base_url=base, timeout=30) as client:
        resp = client.post(
            "/console/login",
            data={"api_key": key, "next": ASSETS_PATH},
            headers={"Origin": base},
        )
        cookie = resp.cookies.get(SESSION_COOKIE)
        if resp.status_code != 303 or not cookie:
            raise RuntimeError(f"console login answered {resp.status_code}: {resp.text[:200]}")
        return cookie


# --- 1. render --------------------------------------------------------------------------------

_SPARK = re.compile(rb'class="spark-line"[^>]*points="([^"]*)"')


def render(
    gw: Gateway, cookie: str, size: int, requests: int, baseline_cpu: float
) -> dict[str, Any]:
    url = f"{ASSETS_PATH}?size={size}"
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    with httpx.Client(base_url=gw.base, headers=headers, timeout=120) as client:
        first = client.get(url)  # templates compiled, connection open
        if first.status_code != 200:
            raise RuntimeError(f"GET {url} answered {first.status_code} (not logged in?)")
        times: list[float] = []
        sizes: list[int] = []
        body = b""
        c0, t0 = gw.cpu_s(), time.perf_counter()
        for _ in range(requests):
            t = time.perf_counter()
            resp = client.get(url)
            times.append(1000 * (time.perf_counter() - t))
            if resp.status_code != 200:
                raise RuntimeError(f"GET {url} answered {resp.status_code}")
            body = resp.content
            sizes.append(len(body))
        c1, t1 = gw.cpu_s(), time.perf_counter()
    spark = _SPARK.search(body)
    cpu_ms = 1000 * max(0.0, (c1 - c0) - baseline_cpu / 100 * (t1 - t0)) / requests
    return {
        "path": url,
        "requests": requests,
        "rows": body.count(b"<tr data-key="),
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(percentile(times, 95), 2),
        "min_ms": round(min(times), 2),
        "max_ms": round(max(times), 2),
        "bytes": sizes[-1],
        "gateway_cpu_ms_per_request": round(cpu_ms, 2),
        "spark_points": len(spark.group(1).split()) if spark else 0,
    }


# --- 2. paint in Chromium ---------------------------------------------------------------------

_TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = {};
  for (const e of performance.getEntriesByType("paint")) paint[e.name] = e.startTime;
  return {
    first_paint_ms: paint["first-paint"] ?? null,
    first_contentful_paint_ms: paint["first-contentful-paint"] ?? null,
    response_start_ms: nav.responseStart,
    response_end_ms: nav.responseEnd,
    dom_content_loaded_ms: nav.domContentLoadedEventEnd,
    load_ms: nav.loadEventEnd,
    body_bytes: nav.decodedBodySize,
    rows: document.querySelectorAll("tr[data-key]").length,
  };
}"""
_LOADED = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  return nav && nav.loadEventEnd > 0
    && performance.getEntriesByType("paint").some((e) => e.name === "first-contentful-paint");
}"""


def browser_missing() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian's chromium package; scripts/setup installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (the dev extra: scripts/setup)"
    return None


def paint(base: str, cookie: str, size: int, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    path = f"{ASSETS_PATH}?size={size}"
    samples: list[dict[str, Any]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            version = browser.version
            for i in range(loads + 1):  # the first warms Chromium up and is not counted
                context = browser.new_context(base_url=base)
                try:
                    context.add_cookies([{"name": SESSION_COOKIE, "value": cookie, "url": base}])
                    page = context.new_page()
                    page.goto(path, wait_until="load", timeout=120_000)
                    page.wait_for_function(_LOADED, timeout=30_000)
                    found: dict[str, Any] = page.evaluate(_TIMINGS)
                finally:
                    context.close()
                if i:
                    samples.append(found)
        finally:
            browser.close()

    def med(name: str) -> float | None:
        values = [s[name] for s in samples if s[name] is not None]
        return round(statistics.median(values), 1) if values else None

    return {
        "path": path,
        "chromium": version,
        "loads": loads,
        "rows": samples[-1]["rows"] if samples else 0,
        "body_bytes": samples[-1]["body_bytes"] if samples else 0,
        **{
            f"{name}_median": med(name)
            for name in (
                "first_paint_ms",
                "first_contentful_paint_ms",
                "response_start_ms",
                "response_end_ms",
                "dom_content_loaded_ms",
                "load_ms",
            )
        },
        "samples": samples,
    }


# --- 3. SSE fan-out: the clients' process -----------------------------------------------------


@dataclass
class StreamCount:
    bytes: int = 0
    events: int = 0
    rows: int = 0
    max_gap_s: float = 0.0
    last_event: float | None = None
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    error: str = ""

    def mark(self) -> tuple[int, int, int]:
        return self.bytes, self.events, self.rows


def _count(tail: bytes, chunk: bytes, marker: bytes) -> int:
    """Occurrences of ``marker`` in ``chunk`` and across its boundary with the bytes before."""
    return (tail[-(len(marker) - 1) :] + chunk).count(marker)


async def _stream(client: httpx.AsyncClient, url: str, cookie: str, count: StreamCount) -> None:
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}", "Accept": "text/event-stream"}
    try:
        async with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"live stream answered {resp.status_code}")
            tail = b""
            async for chunk in resp.aiter_raw():
                count.bytes += len(chunk)
                if not count.hello.is_set() and b"event: hello" in tail + chunk:
                    count.hello.set()
                events = _count(tail, chunk, b"event: rows\n")
                if events:
                    now = time.monotonic()
                    if count.last_event is not None:
                        count.max_gap_s = max(count.max_gap_s, now - count.last_event)
                    count.last_event = now
                    count.events += events
                count.rows += _count(tail, chunk, b'{"k":')
                tail = (tail + chunk[-16:])[-16:]
    except Exception as exc:  # reported with the figures
        count.error = f"{type(exc).__name__}: {exc}"
        count.hello.set()
        raise


async def sse_clients(url: str, cookies: list[str]) -> None:
    """One stream per cookie; prints ``ready`` once every stream said hello, then counts from
    ``go`` to ``stop`` (lines on stdin) and prints the counts as JSON."""
    counts = [StreamCount() for _ in cookies]
    limits = httpx.Limits(max_connections=len(cookies) + 1)
    timeout = httpx.Timeout(30, read=120)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        pairs = zip(cookies, counts, strict=True)
        tasks = [asyncio.create_task(_stream(client, url, c, n)) for c, n in pairs]
        async with asyncio.timeout(60):
            for n in counts:
                await n.hello.wait()
        print("ready" if not any(n.error for n in counts) else "failed", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # go
        start = [n.mark() for n in counts]
        for n in counts:
            n.max_gap_s = 0.0
        t0 = time.monotonic()
        await asyncio.to_thread(sys.stdin.readline)  # stop
        span = time.monotonic() - t0
        end = [n.mark() for n in counts]
        for task in tasks:
            await cancel_and_wait(task)
    clients = [
        {
            "bytes_per_s": round((e[0] - s[0]) / span),
            "events_per_s": round((e[1] - s[1]) / span, 3),
            "rows_per_s": round((e[2] - s[2]) / span, 1),
            "max_gap_s": round(n.max_gap_s, 3),
            "error": n.error,
        }
        for s, e, n in zip(start, end, counts, strict=True)
    ]
    print(json.dumps({"span_s": round(span, 3), "clients": clients}), flush=True)


# --- 3. SSE fan-out: measured from here -------------------------------------------------------


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    stdout = proc.stdout
    assert stdout is not None
    ready, _, _ = select.select([stdout], [], [], timeout)
    if not ready:
        raise RuntimeError(f"the SSE client process said nothing within {timeout:g} s")
    line = stdout.readline()
    if not line:
        raise RuntimeError(f"the SSE client process exited ({proc.wait()})")
    return line.strip()


def _send(stdin: IO[str] | None, line: str) -> None:
    assert stdin is not None
    stdin.write(line + "\n")
    stdin.flush()


def _slope_mb_per_min(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    ts = [t for t, _ in points]
    vs = [v for _, v in points]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return None
    return round(60 * sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / var, 4)


def memory_summary(samples: list[dict[str, Any]], steady_from_s: float) -> dict[str, Any]:
    """RSS, allocated blocks (and traced MB with ``--tracemalloc``) over a window: start, end,
    max, slopes (whole window, and steady: once the sparklines are full)."""

    def series(name: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(s["t_s"], s[name] / scale) for s in samples if s[name] is not None]

    rss = series("rss_mb")
    steady_note = f"from {steady_from_s:g} s (sparklines full)"
    if sum(1 for t, _ in rss if t >= steady_from_s) < 3:
        steady_from_s = samples[-1]["t_s"] / 2
        steady_note = f"second half, from {steady_from_s:g} s (the sparklines were still filling)"

    def steady_slope(points: list[tuple[float, float]]) -> float | None:
        return _slope_mb_per_min([p for p in points if p[0] >= steady_from_s])

    traced = series("traced_mb")
    return {
        "rss_mb_start": round(rss[0][1], 1),
        "rss_mb_end": round(rss[-1][1], 1),
        "rss_mb_max": round(max(v for _, v in rss), 1),
        "rss_slope_mb_per_min": _slope_mb_per_min(rss),
        "rss_slope_steady_mb_per_min": steady_slope(rss),
        "allocated_blocks_start": samples[0]["allocated_blocks"],
        "allocated_blocks_end": samples[-1]["allocated_blocks"],
        "allocated_blocks_slope_steady_millions_per_min": steady_slope(
            series("allocated_blocks", 1e6)
        ),
        "traced_mb_start": samples[0]["traced_mb"],
        "traced_mb_end": samples[-1]["traced_mb"],
        "traced_slope_steady_mb_per_min": steady_slope(traced) if traced else None,
        "steady_window": steady_note,
        "samples": samples,
    }


def _window(gw: Gateway, seconds: float, sample_s: float) -> tuple[float, list[dict[str, Any]]]:
    """Gateway CPU (% of a core) over ``seconds``, with RSS and stats sampled every
    ``sample_s`` (the first at 0, the last at the end)."""
    samples: list[dict[str, Any]] = []
    c0, t0 = gw.cpu_s(), time.monotonic()

    def sample() -> None:
        t = time.monotonic() - t0
        stats = gw.stats()
        samples.append({"t_s": round(t, 1), "rss_mb": round(gw.rss_mb(), 2), **stats})

    sample()
    k = 1
    while True:
        next_at = min(k * sample_s, seconds)
        delay = next_at - (time.monotonic() - t0)
        if delay > 0:
            time.sleep(delay)
        if next_at >= seconds:
            break
        sample()
        k += 1
    c1, t1 = gw.cpu_s(), time.monotonic()
    sample()
    return 100 * (c1 - c0) / (t1 - t0), samples


def fanout(gw: Gateway, args: argparse.Namespace) -> dict[str, Any]:
    # Baseline: the view updating, no page open (the hub samples only while a page asks).
    base_cpu, base_samples = _window(gw, args.baseline_s, args.sample_s)
    cookies = [login(gw.base, gw.key) for _ in range(args.clients)]
    url = f"{gw.base}/console/live?view=assets&size={args.page_size}"
    env = {**os.environ, COOKIES_ENV: ",".join(cookies), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.console", "--sse-clients", url],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        if (said := _readline(proc, 90)) != "ready":
            raise RuntimeError(f"the SSE clients did not connect: {said}")
        time.sleep(args.warmup_s)  # every stream has had its first, full event
        streams = gw.stats()["streams"]
        _send(proc.stdin, "go")
        k0 = proc_cpu_s(proc.pid)
        cpu, samples = _window(gw, args.seconds, args.sample_s)
        k1 = proc_cpu_s(proc.pid)
        _send(proc.stdin, "stop")
        got = json.loads(_readline(proc, 120))
        proc.wait(60)
    finally:
        stop(proc)
    # The streams end with their clients: none is left open on the server.
    time.sleep(2 * args.live_period + 1)
    after = gw.stats()
    clients = got["clients"]
    # The sparklines hold SPARK_POINTS periods; the streams were open warmup_s before "go".
    steady_from = max(0.0, SPARK_POINTS * args.live_period - args.warmup_s) + args.sample_s

    def spread(name: str) -> dict[str, float]:
        values = [c[name] for c in clients]
        return {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
        }

    return {
        "clients": args.clients,
        "url_path": url.removeprefix(gw.base),
        "live_period_s": args.live_period,
        "seconds": round(got["span_s"], 1),
        "streams_open_on_server": streams,
        "streams_open_after_clients_left": after["streams"],
        "baseline_seconds": args.baseline_s,
        "baseline_cpu_percent": round(base_cpu, 2),
        "fanout_cpu_percent": round(cpu, 2),
        "cpu_added_percent": round(cpu - base_cpu, 2),
        "client_process_cpu_percent": round(100 * (k1 - k0) / got["span_s"], 1),
        "per_client": {
            "events_per_s": spread("events_per_s"),
            "rows_per_s": spread("rows_per_s"),
            "bytes_per_s": spread("bytes_per_s"),
            "max_gap_s": max(c["max_gap_s"] for c in clients),
        },
        "client_errors": [c["error"] for c in clients if c["error"]],
        "all_clients": clients,
        "view_tick_ms": {"mean": after["tick_ms_mean"], "max": after["tick_ms_max"]},
        "baseline_memory": memory_summary(base_samples, math.inf),
        "memory": memory_summary(samples, steady_from),
    }


# --- main -------------------------------------------------------------------------------------


def rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    n = figures["assets"]
    for r in figures["render"]:
        out.append(
            row(
                f"console {r['path']}, {r['rows']:,} of {n:,} rows: server response (ms, median)",
                r["median_ms"],
                None,
                "ms",
                "report",
                None,
                f"p95 {r['p95_ms']} ms over {r['requests']} requests, {r['bytes']:,} bytes, "
                f"gateway CPU {r['gateway_cpu_ms_per_request']} ms per request, sparklines of "
                f"{r['spark_points']} points",
            )
        )
    p = figures["paint"]
    if "skipped" not in p and "error" not in p:
        out.append(
            row(
                f"console {p['path']} in Chromium: first contentful paint (ms, median)",
                p["first_contentful_paint_ms_median"],
                None,
                "ms",
                "report",
                None,
                f"first paint {p['first_paint_ms_median']} ms, DOMContentLoaded "
                f"{p['dom_content_loaded_ms_median']} ms, load {p['load_ms_median']} ms, "
                f"response end {p['response_end_ms_median']} ms; {p['loads']} loads",
            )
        )
    f = figures["fanout"]
    pc = f["per_client"]
    met_cpu = f["cpu_added_percent"] < TARGET_CPU_ADDED and not f["client_errors"]
    out.append(
        row(
            f"console SSE fan-out, {f['clients']} pages x {n:,} rows at 1 Hz: gateway CPU "
            "added (% of a core)",
            f["cpu_added_percent"],
            None,
            "%",
            f"< {TARGET_CPU_ADDED:g} % of a core",
            met_cpu,
            f"{f['fanout_cpu_percent']} % with the streams, {f['baseline_cpu_percent']} % "
            f"baseline (view updating, no page); per client {pc['events_per_s']['median']} "
            f"events/s, {pc['rows_per_s']['median']:,} rows/s, "
            f"{pc['bytes_per_s']['median'] / 1e6:.2f} MB/s; over {f['seconds']} s",
        )
    )
    m = f["memory"]
    slope = m["rss_slope_steady_mb_per_min"]
    out.append(
        row(
            f"console SSE fan-out: gateway RSS slope, {m['steady_window']} (MB/min)",
            slope,
            None,
            "MB/min",
            f"no growth (<= {TARGET_SLOPE_MB_PER_MIN:g} MB/min)",
            slope is not None and slope <= TARGET_SLOPE_MB_PER_MIN,
            f"RSS {m['rss_mb_start']} -> {m['rss_mb_end']} MB (max {m['rss_mb_max']}) over "
            f"{f['seconds']} s, whole-window slope {m['rss_slope_mb_per_min']} MB/min; "
            f"Python blocks {m['allocated_blocks_start']:,} -> {m['allocated_blocks_end']:,}",
        )
    )
    return out


def _print(figures: dict[str, Any]) -> None:
    for r in figures["render"]:
        print(
            f"render {r['path']}: {r['rows']} rows, median {r['median_ms']} ms, p95 "
            f"{r['p95_ms']} ms (min {r['min_ms']}, max {r['max_ms']}), {r['bytes']:,} bytes, "
            f"gateway CPU {r['gateway_cpu_ms_per_request']} ms/request, sparklines "
            f"{r['spark_points']} points (target: report)"
        )
    p = figures["paint"]
    if "skipped" in p:
        print(f"paint: skipped: {p['skipped']}")
    elif "error" in p:
        print(f"paint: failed: {p['error']}")
    else:
        print(
            f"paint {p['path']} (Chromium {p['chromium']}, median of {p['loads']} loads, "
            f"{p['rows']} rows): first paint {p['first_paint_ms_median']} ms, first contentful "
            f"paint {p['first_contentful_paint_ms_median']} ms, DOMContentLoaded "
            f"{p['dom_content_loaded_ms_median']} ms, load {p['load_ms_median']} ms, response "
            f"start/end {p['response_start_ms_median']}/{p['response_end_ms_median']} ms "
            "(target: report)"
        )
    f = figures["fanout"]
    pc = f["per_client"]
    print(
        f"SSE fan-out {f['url_path']}, {f['clients']} clients, {f['seconds']} s: gateway CPU "
        f"{f['fanout_cpu_percent']} % with the streams, {f['baseline_cpu_percent']} % baseline "
        f"({f['baseline_seconds']} s, view updating, no page) -> added "
        f"{f['cpu_added_percent']} % of a core (target < {TARGET_CPU_ADDED:g} %: "
        f"{'met' if f['cpu_added_percent'] < TARGET_CPU_ADDED else 'NOT met'})"
    )
    print(
        f"  per client: events/s {pc['events_per_s']}, rows/s {pc['rows_per_s']}, bytes/s "
        f"{pc['bytes_per_s']}, longest gap {pc['max_gap_s']} s; client process CPU "
        f"{f['client_process_cpu_percent']} %; streams open {f['streams_open_on_server']}, "
        f"after the clients left {f['streams_open_after_clients_left']}; errors "
        f"{f['client_errors'] or 'none'}; view tick {f['view_tick_ms']} ms"
    )
    m = f["memory"]
    slope = m["rss_slope_steady_mb_per_min"]
    print(
        f"  gateway RSS: start {m['rss_mb_start']} MB, end {m['rss_mb_end']} MB, max "
        f"{m['rss_mb_max']} MB, slope {m['rss_slope_mb_per_min']} MB/min (whole), {slope} "
        f"MB/min ({m['steady_window']}) (target: no growth, <= {TARGET_SLOPE_MB_PER_MIN:g} "
        f"MB/min: {'met' if slope is not None and slope <= TARGET_SLOPE_MB_PER_MIN else 'NOT met'}"
        f"); Python blocks {m['allocated_blocks_start']:,} -> {m['allocated_blocks_end']:,}, "
        f"slope {m['allocated_blocks_slope_steady_millions_per_min']} M/min"
    )
    if m["traced_mb_start"] is not None:
        print(
            f"  tracemalloc (CPU figures do not count): traced {m['traced_mb_start']} -> "
            f"{m['traced_mb_end']} MB, steady slope {m['traced_slope_steady_mb_per_min']} MB/min"
        )
    b = f["baseline_memory"]
    print(f"  baseline window RSS {b['rss_mb_start']} -> {b['rss_mb_end']} MB")
    print(
        f"load average (1 min) {figures['load_average_1m_start']} -> "
        f"{figures['load_average_1m_end']}"
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    gw = Gateway(args.assets, args.live_period, args.tracemalloc)
    try:
        cookie = login(gw.base, gw.key)
        # Templates compiled and the hub sampled once before any window.
        with httpx.Client(base_url=gw.base, timeout=120) as client:
            client.get(
                f"{ASSETS_PATH}?size={args.page_size}",
                headers={"Cookie": f"{SESSION_COOKIE}={cookie}"},
            ).raise_for_status()
        fan = fanout(gw, args)
        renders = [
            render(gw, cookie, size, args.requests, fan["baseline_cpu_percent"])
            for size in (args.page_size, 200)
        ]
        missing = "--no-browser" if args.no_browser else browser_missing()
        painted: dict[str, Any]
        if missing is not None:
            painted = {"skipped": missing}
        else:
            try:
                painted = paint(gw.base, cookie, args.page_size, args.loads)
            except Exception as exc:  # the other figures still count
                painted = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        gw.close()
    return {
        "quick": args.quick,
        "tracemalloc": args.tracemalloc,
        "assets": args.assets,
        "tags_per_asset": len(TAGS),
        "live_period_s": args.live_period,
        "load_average_1m_start": round(load0, 2),
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "render": renders,
        "paint": painted,
        "fanout": fan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=600, help="the fan-out window")
    parser.add_argument("--baseline-s", type=float, default=60)
    parser.add_argument("--warmup-s", type=float, default=5, help="streams open, not counted")
    parser.add_argument("--sample-s", type=float, default=10, help="RSS sampling period")
    parser.add_argument("--requests", type=int, default=30, help="per page size rendered")
    parser.add_argument("--loads", type=int, default=5, help="Chromium loads of the page")
    parser.add_argument("--page-size", type=int, default=2000, choices=(50, 200, 500, 2000))
    parser.add_argument("--live-period", type=float, default=1.0, help="live_period_s")
    parser.add_argument("--no-browser", action="store_true", help="leave the paint part out")
    parser.add_argument("--quick", action="store_true", help="smoke run, ~1 minute")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the gateway's Python allocations (traced MB in the samples; a diagnosis "
        "of memory: tracing slows the process, its CPU figures do not count)",
    )
    parser.add_argument("--sse-clients", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sse_clients:
        asyncio.run(sse_clients(args.sse_clients, os.environ[COOKIES_ENV].split(",")))
        return
    if args.quick:
        args.seconds, args.baseline_s = min(args.seconds, 20), min(args.baseline_s, 8)
        args.sample_s, args.warmup_s = min(args.sample_s, 5), min(args.warmup_s, 3)
        args.requests, args.loads = min(args.requests, 5), min(args.loads, 2)
    configure_logging("warning")
    figures = measure(args)
    figures["rows"] = rows(figures)
    _print(figures)
    print(f"written {write_result('console', figures)}")


if __name__ == "__main__":
    main()
