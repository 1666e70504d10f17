"""Audit ledger: the cost of an append, the speed of verification, and the prediction path with
the ledger on and off.

Three parts (``--parts append,verify,path``, all by default); the first two on each
``--backend`` (an SQLite file in a temporary directory with the store's default durability,
WAL + ``synchronous=NORMAL``; PostgreSQL at 127.0.0.1:5432, database ``test``, in a fresh schema
dropped afterwards, skipped with a message when the server does not answer):

``append``: ``--appends`` (2,000) entries appended one transaction each through
``AuditRepository.append`` (what every change and decision pays: lock the head row, hash, insert,
move the head), a realistic ``model.activated`` entry with before/after dicts: ms per append
(mean, p50, p99, max) and entries/s; then the same number again from ``--writers`` (4) threads
at once, each with a store and a repository of its own (as the gateways of a fleet on one
store): the appends wait for each other on the head row, so this shows what the one chain per
database costs. The chain is verified afterwards (it must be one valid sequence).

``verify``: the chain is extended to ``--chain`` (100,000) entries by a bulk insert of entries
built here with the chain's hashes (a mix of actions, before/after dicts), then one more entry
is appended through the repository (the head follows on) and one checkpoint signed. Timed:
reading every entry (``iter_entries``) alone, after one uncounted read, and ``verify_chain``
over ``iter_entries`` (what ``bridge audit verify`` does on the store); then the audit file:
``write_audit_file`` from the store, ``read_audit_file`` and ``verify_chain`` over what it read
(what ``bridge audit verify FILE`` does). Every verification must come out clean with every
entry and the checkpoint.

``path``: the end-to-end harness of ``bench.e2e`` (plant OPC UA server -> a real gateway built
by ``build_gateway`` -> echo model every 20 ms -> the gateway's OPC UA server -> a subscribed
HMI client, all in this process): ``--samples`` (200) input changes after 5 uncounted ones
(the first after the start takes ~1.5 s), a seeded random pause of 50-70 ms between them (so
they fall at every phase of the model period; bench.e2e's fixed 50 ms locks onto one phase a
run), latency from the write on the plant to the HMI notification, and this process's CPU over
the samples. ``--runs`` (4) runs, alternately with
``gateway.audit.enabled: false`` and ``true`` (``checkpoint_s`` ``--checkpoint-s``, 1 s, to be
pessimistic), each on a fresh store; while the ledger is on, ``--changes-per-s`` (1) entries a
second are appended through the gateway's own writer (``AuditLedger.record``), so every
checkpoint has something to sign (0: only the gateway's own entries, started and mapping
loaded). Figures per mode are the medians over its runs; the target is the ledger on <= 5 %
slower (median p50), p99 and CPU beside it. The relative phases of the gateway's timers (source
and HMI publishing every 10 ms, the model every 20 ms) are set at each start and move a run's
p50 by up to ~20 ms whatever the ledger does: a difference within the spread between runs of
one mode is reported as inconclusive (met "-"); more ``--runs`` narrow it, and the process CPU
is the steadier figure.

    python -m bench.audit [--backend sqlite,postgresql] [--appends 2000] [--writers 4]
                          [--chain 100000] [--samples 200] [--runs 4] [--checkpoint-s 1]
                          [--changes-per-s 1] [--parts append,verify,path] [--quick] [--out FILE]

``--quick`` (100 appends, a chain of 5,000, 40 samples, 2 runs: ~30 s) is a smoke run; its
figures are not the targets' figures. Prints a table and writes bench/results/audit.json
(stand-alone, not in ``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from asyncua.client.client import Client
from asyncua.server.server import Server
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, insert, select, text, update

from bench.common import free_port, percentile, row, table, write_result
from bench.e2e import (
    ECHO_MAPPING,
    HMI_PUBLISH_MS,
    MODEL_PERIOD_S,
    SOURCE_PUBLISH_MS,
    echo_model,
    gateway,
    probe_change,
)
from bridge.audit.checkpoints import sign_checkpoint
from bridge.audit.exportfile import read_audit_file, write_audit_file
from bridge.audit.verify import Verification, verify_chain
from bridge.connectors.opcua.convert import make_node_id
from bridge.ed25519 import public_key_text
from bridge.logging import configure_logging
from bridge.store.audit import AuditEntryRow, AuditHeadRow, AuditRepository
from bridge.store.auditchain import AuditEntry, NewAuditEntry, canonical, entry_hash, format_time
from bridge.store.db import Store, open_store

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
GATEWAY = "bench"
BULK_BATCH = 5000  # entries per transaction of the bulk insert
PAUSE_SEED = 7  # path: the pauses between input changes, the same in every run
WARMUP_PROBES = 5  # path: input changes before the counted ones, not counted
TARGET_SLOWER = 0.05  # the prediction path with the ledger on: at most 5 % slower


# --- entries ----------------------------------------------------------------------------------


def model_activated(k: int, gateway_id: str = GATEWAY) -> NewAuditEntry:
    """A realistic entry: a model version promoted over the REST API, what it replaced."""
    old, new = f"1.{k % 50}.{k % 7}", f"1.{k % 50}.{k % 7 + 1}"
    return NewAuditEntry(
        actor="key:ab12cd34ef56",
        channel="rest",
        action="model.activated",
        subject=f"model:pump-health/{new}",
        before={
            "state": "registered",
            "version": new,
            "sha256": f"{k:064x}",
            "active_version": old,
            "stage": "shadow",
            "gateway": gateway_id,
        },
        after={
            "state": "active",
            "version": new,
            "sha256": f"{k:064x}",
            "active_version": new,
            "stage": "production",
            "gateway": gateway_id,
        },
        reason=f"promoted after a shadow run: agreement 0.97 over 24 h (change {k})",
    )


def _filler(k: int) -> NewAuditEntry:
    """The bulk chain's entries: a mix of actions and shapes."""
    kind = k % 4
    if kind == 0:
        return model_activated(k)
    if kind == 1:
        return NewAuditEntry(
            "opcua:operator",
            "opcua",
            "alert.acknowledged",
            f"alert:{k}",
            {"state": "raised", "severity": "warning"},
            {"state": "acknowledged", "severity": "warning"},
            "checked on site",
        )
    if kind == 2:
        return NewAuditEntry(
            "cli:admin",
            "cli",
            "apikey.created",
            f"apikey:{k:012x}",
            None,
            {"name": f"mes-{k}", "scopes": ["read", "write"], "expires": None},
        )
    return NewAuditEntry(
        "system",
        "system",
        "mapping.reloaded",
        "mapping:plant.yaml",
        {"revision": f"{k:064x}"},
        {"revision": f"{k + 1:064x}", "changed": ["models", "outputs"]},
    )


# --- stores -----------------------------------------------------------------------------------


def pg_reachable() -> str | None:
    """None when PostgreSQL answers at 127.0.0.1:5432 (database test), else why not."""
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect means: skip PostgreSQL
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL at 127.0.0.1:5432 (database test) unreachable: {first}"
    finally:
        engine.dispose()
    return None


class Backend:
    """Where one backend's stores live: an SQLite file, or a fresh PostgreSQL schema."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.url = f"sqlite:///{workdir / 'audit.db'}"
        self.schema: str | None = None
        if name == "postgresql":
            self.url = PG_URL
            self.schema = f"bench_audit_{uuid.uuid4().hex[:10]}"

    def open(self) -> Store:
        """A store of its own on the same database (default durability)."""
        return open_store(self.url, schema=self.schema)


@contextlib.contextmanager
def backend(name: str, workdir: Path) -> Iterator[Backend]:
    b = Backend(name, workdir)
    if b.schema is None:
        yield b
        return
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{b.schema}"'))
        try:
            yield b
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{b.schema}" CASCADE'))
    finally:
        admin.dispose()


# --- 1. append --------------------------------------------------------------------------------


def _spread_ms(times_s: Sequence[float]) -> dict[str, float]:
    ms = [1000 * t for t in times_s]
    return {
        "mean_ms": round(statistics.fmean(ms), 3),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
    }


def append_part(b: Backend, appends: int, writers: int) -> dict[str, Any]:
    store = b.open()
    try:
        repo = AuditRepository(store, GATEWAY)
        for k in range(10):  # warm-up: connections, statement caches (not counted)
            repo.append(model_activated(k))
        times: list[float] = []
        t0 = time.perf_counter()
        for k in range(appends):
            a = time.perf_counter()
            repo.append(model_activated(k))
            times.append(time.perf_counter() - a)
        wall = time.perf_counter() - t0
        single = {
            "entries": appends,
            "entries_per_s": round(appends / wall),
            **_spread_ms(times),
        }
        print(
            f"[{b.name}] append, 1 writer: {single['entries_per_s']:,} entries/s; per append "
            f"mean {single['mean_ms']} ms, p50 {single['p50_ms']} ms, p99 {single['p99_ms']} ms",
            flush=True,
        )
        concurrent = _concurrent(b, appends, writers)
        print(
            f"[{b.name}] append, {writers} writers: {concurrent['entries_per_s']:,} entries/s in "
            f"all; per append mean {concurrent['mean_ms']} ms, p50 {concurrent['p50_ms']} ms, "
            f"p99 {concurrent['p99_ms']} ms",
            flush=True,
        )
        check = verify_chain(repo.iter_entries(), repo.checkpoints())
        expected = 10 + appends + writers + concurrent["entries"]  # warm-ups included
        if not check.ok or check.entries != expected:
            raise RuntimeError(
                f"{b.name}: the chain after the appends does not verify: {check.entries} entries "
                f"(expected {expected}), first problem {check.first_problem}"
            )
    finally:
        store.dispose()
    return {
        "single": single,
        "concurrent": concurrent,
        "ratio_concurrent_to_single": round(
            concurrent["entries_per_s"] / single["entries_per_s"], 3
        ),
        "chain_verified_entries": check.entries,
    }


def _concurrent(b: Backend, appends: int, writers: int) -> dict[str, Any]:
    """``appends`` entries from ``writers`` threads at once, each with its own store."""
    stores = [b.open() for _ in range(writers)]
    repos = [AuditRepository(s, f"{GATEWAY}-{i}") for i, s in enumerate(stores)]
    share = [appends // writers + (1 if i < appends % writers else 0) for i in range(writers)]
    times: list[list[float]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    gate = threading.Barrier(writers + 1)

    def work(i: int) -> None:
        repo, mine = repos[i], times[i]
        try:
            repo.append(model_activated(-1 - i, repo.gateway))  # its connection, warmed
        except BaseException as exc:  # reported once every thread is done
            errors.append(exc)
            gate.abort()
            return
        try:
            gate.wait()
            for k in range(share[i]):
                a = time.perf_counter()
                repo.append(model_activated(k, repo.gateway))
                mine.append(time.perf_counter() - a)
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), name=f"writer-{i}") for i in range(writers)]
    try:
        for t in threads:
            t.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        for s in stores:
            s.dispose()
    if errors:
        raise RuntimeError(f"{b.name}: a concurrent writer failed: {errors[0]!r}") from errors[0]
    flat = [t for per in times for t in per]
    return {
        "writers": writers,
        "entries": len(flat),
        "entries_per_s": round(len(flat) / wall),
        **_spread_ms(flat),
    }


# --- 2. verify --------------------------------------------------------------------------------


def extend_chain(store: Store, upto: int) -> int:
    """Bulk-insert entries after the chain's head until it holds ``upto`` entries, chained and
    hashed exactly as ``append_entry`` does, moving the head along; returns how many."""
    with store.sessions() as s:
        seq, prev = s.execute(
            select(AuditHeadRow.seq, AuditHeadRow.hash).where(AuditHeadRow.id == 1)
        ).one()
    seq = int(seq)
    start_us = round(time.time() * 1_000_000)
    added = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        with store.sessions.begin() as s:
            s.execute(insert(AuditEntryRow), batch)
            s.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=seq, hash=prev))
        batch.clear()

    while seq < upto:
        seq += 1
        new = _filler(seq)
        at_us = start_us + 1000 * added
        fields = AuditEntry(
            seq=seq,
            at=format_time(at_us),
            gateway=GATEWAY,
            actor=new.actor,
            channel=new.channel,
            action=new.action,
            subject=new.subject,
            before=new.before,
            after=new.after,
            reason=new.reason,
            prev_hash=prev,
            hash="",
        ).fields()
        digest = entry_hash(fields)
        batch.append(
            {
                "seq": seq,
                "at_us": at_us,
                "gateway": GATEWAY,
                "actor": new.actor,
                "channel": new.channel,
                "action": new.action,
                "subject": new.subject,
                "before": None if new.before is None else canonical(new.before).decode(),
                "after": None if new.after is None else canonical(new.after).decode(),
                "reason": new.reason,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
        added += 1
        if len(batch) >= BULK_BATCH:
            flush()
    if batch:
        flush()
    return added


def _clean(check: Verification, entries: int, where: str) -> None:
    if not check.ok or check.entries != entries or check.checkpoints != 1:
        raise RuntimeError(
            f"{where}: verification not clean: {check.entries} entries (expected {entries}), "
            f"{check.checkpoints} checkpoints, first problem {check.first_problem}"
        )


def verify_part(b: Backend, chain: int, workdir: Path) -> dict[str, Any]:
    store = b.open()
    try:
        repo = AuditRepository(store, GATEWAY)
        t0 = time.perf_counter()
        bulk = extend_chain(store, chain - 1)
        build_s = time.perf_counter() - t0
        last = repo.append(model_activated(chain))  # the head follows the bulk rows
        key = Ed25519PrivateKey.generate()
        repo.add_checkpoint(sign_checkpoint(key, last.seq, last.hash, last.at, GATEWAY))
        trusted = [public_key_text(key.public_key())]
        total = last.seq

        sum(1 for _ in repo.iter_entries())  # warm-up: the database's cache, not counted
        t0 = time.perf_counter()
        read = sum(1 for _ in repo.iter_entries())
        read_s = time.perf_counter() - t0
        if read != total:
            raise RuntimeError(f"{b.name}: read {read} entries, the chain holds {total}")
        t0 = time.perf_counter()
        check = verify_chain(repo.iter_entries(), repo.checkpoints(), trusted)
        verify_s = time.perf_counter() - t0
        _clean(check, total, f"{b.name} store")

        path = workdir / f"audit-{b.name}.jsonl"
        t0 = time.perf_counter()
        with path.open("w", encoding="utf-8") as out:
            write_audit_file(out, {"gateway": GATEWAY}, repo.iter_entries(), repo.checkpoints())
        export_s = time.perf_counter() - t0
    finally:
        store.dispose()
    t0 = time.perf_counter()
    loaded = read_audit_file(path)
    file_read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    file_check = verify_chain(loaded.entries, loaded.checkpoints, trusted)
    file_verify_s = time.perf_counter() - t0
    _clean(file_check, total, f"{b.name} audit file")
    size = path.stat().st_size
    path.unlink()
    figures: dict[str, Any] = {
        "entries": total,
        "bulk_inserted": bulk,
        "bulk_insert_s": round(build_s, 2),
        "store": {
            "read_s": round(read_s, 3),
            "read_entries_per_s": round(total / read_s),
            "verify_s": round(verify_s, 3),
            "verify_entries_per_s": round(total / verify_s),
        },
        "file": {
            "bytes": size,
            "bytes_per_entry": round(size / total),
            "export_s": round(export_s, 3),
            "read_s": round(file_read_s, 3),
            "verify_s": round(file_verify_s, 3),
            "read_and_verify_entries_per_s": round(total / (file_read_s + file_verify_s)),
            "verify_entries_per_s": round(total / file_verify_s),
        },
    }
    st, fi = figures["store"], figures["file"]
    print(
        f"[{b.name}] verify {total:,} entries from the store: {st['verify_entries_per_s']:,}/s "
        f"({st['verify_s']} s; reading alone {st['read_s']} s); audit file "
        f"({size / 1e6:.1f} MB): read + verify {fi['read_and_verify_entries_per_s']:,}/s "
        f"({fi['read_s']} + {fi['verify_s']} s), export {fi['export_s']} s",
        flush=True,
    )
    return figures


# --- 3. the prediction path, ledger on vs off -------------------------------------------------


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _prepare(work: Path, plant: int, hmi: int, audit: dict[str, Any]) -> Path:
    """A fresh directory with the echo model and bench.e2e's echo mapping with
    ``gateway.audit`` set (the store and the ledger's key are made in it)."""
    work.mkdir(parents=True)
    echo_model(work / "echo.onnx")
    doc = yaml.safe_load(
        ECHO_MAPPING.format(
            store=work / "echo.db",
            plant=plant,
            pub=SOURCE_PUBLISH_MS,
            model=work / "echo.onnx",
            period=MODEL_PERIOD_S,
            hmi=hmi,
        )
    )
    doc["gateway"]["audit"] = audit
    path = work / "echo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def path_run(
    on: bool, samples: int, work: Path, checkpoint_s: float, changes_per_s: float
) -> dict[str, Any]:
    """One run of bench.e2e's latency measurement with the ledger on or off."""
    plant_port, hmi_port = free_port(), free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{plant_port}")
    ns = await server.register_namespace("urn:bench:plant")
    var = await server.nodes.objects.add_variable(make_node_id("X", ns), "X", 0.0)
    audit = {"enabled": True, "checkpoint_s": checkpoint_s} if on else {"enabled": False}
    mapping = _prepare(work, plant_port, hmi_port, audit)
    seen: asyncio.Queue[tuple[float, float]] = asyncio.Queue()

    class Handler:
        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            if isinstance(val, float):
                seen.put_nowait((time.perf_counter(), val))

    lat_ms: list[float] = []
    changes = 0
    async with (
        server,
        gateway(mapping) as g,
        Client(f"opc.tcp://127.0.0.1:{hmi_port}", timeout=5) as client,
    ):
        if on != (g.audit is not None):
            raise RuntimeError(f"gateway.audit.enabled {on} but the gateway's ledger is {g.audit}")
        pns = await client.get_namespace_index("urn:bridge:predictions")
        node = client.get_node(make_node_id("Predictions.a1.echo.Value", pns))
        sub = await client.create_subscription(HMI_PUBLISH_MS, Handler())
        await sub.subscribe_data_change(node)
        await asyncio.sleep(1.0)

        async def change_loop() -> None:
            nonlocal changes
            assert g.audit is not None
            while True:
                await asyncio.sleep(1 / changes_per_s)
                changes += 1
                await g.audit.record(model_activated(changes, g.gateway_id))

        changer = asyncio.create_task(change_loop()) if on and changes_per_s > 0 else None
        for k in range(WARMUP_PROBES):  # the first change after the start takes ~1.5 s
            await probe_change(server, var, seen, float(-1 - k))
            await asyncio.sleep(0.05)
        # bench.e2e pauses a fixed 50 ms between changes: the changes then fall at one phase of
        # the 20 ms model period for a whole run, and its p50 is ~10 or ~29 ms from one run to
        # the next whatever the ledger does (measured). A seeded random pause of 50-70 ms
        # spreads them over the period, the same pauses in every run.
        pauses = random.Random(PAUSE_SEED)
        c0, t0 = _cpu(), time.perf_counter()
        for k in range(1, samples + 1):
            latency = await probe_change(server, var, seen, float(k))
            if latency is not None:
                lat_ms.append(latency)
            await asyncio.sleep(pauses.uniform(0.05, 0.05 + MODEL_PERIOD_S))
        cpu, wall = _cpu() - c0, time.perf_counter() - t0
        if changer is not None:
            changer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await changer
        await sub.delete()
        ledger = g.audit
    result: dict[str, Any] = {
        "ledger": "on" if on else "off",
        "samples": len(lat_ms),
        "lost": samples - len(lat_ms),
        "mean_ms": round(statistics.fmean(lat_ms), 2) if lat_ms else None,
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p95_ms": round(percentile(lat_ms, 95), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "max_ms": round(max(lat_ms), 2) if lat_ms else None,
        "process_cpu_percent": round(100 * cpu / wall, 1),
        "seconds": round(wall, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if ledger is not None:
        # What the ledger did meanwhile, and that what it wrote verifies.
        store = open_store(f"sqlite:///{work / 'echo.db'}")
        try:
            repo = AuditRepository(store, g.gateway_id)
            check = verify_chain(repo.iter_entries(), repo.checkpoints())
        finally:
            store.dispose()
        result.update(
            changes_appended=changes,
            ledger_appended=ledger.appended,
            ledger_checkpoints=ledger.checkpoints,
            ledger_failures=ledger.failures,
            chain_entries=check.entries,
            chain_checkpoints=check.checkpoints,
            chain_ok=check.ok,
        )
        if not check.ok or ledger.failures:
            raise RuntimeError(
                f"the gateway's ledger: {ledger.failures} failures, chain {check.to_json()}"
            )
    return result


async def path_part(
    samples: int, runs: int, checkpoint_s: float, changes_per_s: float, workdir: Path
) -> dict[str, Any]:
    done: list[dict[str, Any]] = []
    for k in range(runs):
        on = k % 2 == 1  # off, on, off, on, ...: drift hits both alike
        r = await path_run(on, samples, workdir / f"path-{k}", checkpoint_s, changes_per_s)
        done.append(r)
        extra = (
            f"; ledger: {r['ledger_appended']} appended, {r['ledger_checkpoints']} checkpoints"
            if on
            else ""
        )
        print(
            f"[path] run {k + 1}/{runs}, ledger {r['ledger']}: p50 {r['p50_ms']} ms, p99 "
            f"{r['p99_ms']} ms, mean {r['mean_ms']} ms, CPU {r['process_cpu_percent']} % "
            f"({r['samples']} samples, {r['lost']} lost){extra}",
            flush=True,
        )

    summary: dict[str, Any] = {}
    for key in ("p50_ms", "p99_ms", "mean_ms", "process_cpu_percent"):
        per = {m: [float(r[key]) for r in done if r["ledger"] == m] for m in ("off", "on")}
        off, on_ = (round(statistics.median(per[m]), 2) for m in ("off", "on"))
        # How far runs of one mode differ from each other: below this, a difference between
        # the modes is the harness's noise, not the ledger.
        spread = max(max(v) - min(v) for v in per.values())
        summary[key] = {
            "off": off,
            "on": on_,
            "slower_percent": round(100 * (on_ / off - 1), 1) if off else None,
            "same_mode_spread_percent": round(100 * spread / off, 1) if off else None,
            "runs": per,
        }
    return {
        "samples_per_run": samples,
        "runs": done,
        "median": summary,
        "checkpoint_s": checkpoint_s,
        "changes_per_s": changes_per_s,
        "source_publishing_interval_ms": SOURCE_PUBLISH_MS,
        "model_period_ms": MODEL_PERIOD_S * 1000,
        "hmi_publishing_interval_ms": HMI_PUBLISH_MS,
    }


# --- report -----------------------------------------------------------------------------------


def rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, a in figures.get("append", {}).items():
        if "skipped" in a:
            continue
        s, c = a["single"], a["concurrent"]
        out.append(
            row(
                f"audit append, {name}, 1 writer (ms per append, p50)",
                s["p50_ms"],
                None,
                "ms",
                "report",
                None,
                f"{s['entries']:,} model.activated entries, one transaction each: "
                f"{s['entries_per_s']:,} entries/s; mean {s['mean_ms']} ms, p99 {s['p99_ms']} "
                f"ms, max {s['max_ms']} ms",
            )
        )
        out.append(
            row(
                f"audit append, {name}, {c['writers']} writers at once (entries/s in all)",
                c["entries_per_s"],
                s["entries_per_s"],
                "entries/s",
                "report (floor: 1 writer)",
                None,
                f"{c['entries']:,} entries, a store each, serialised on the head row: per append "
                f"mean {c['mean_ms']} ms, p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, max "
                f"{c['max_ms']} ms; chain of "
                f"{a['chain_verified_entries']:,} verified clean afterwards",
            )
        )
    for name, v in figures.get("verify", {}).items():
        if "skipped" in v:
            continue
        st, fi = v["store"], v["file"]
        out.append(
            row(
                f"audit verify, {name} store, {v['entries']:,} entries (entries/s)",
                st["verify_entries_per_s"],
                st["read_entries_per_s"],
                "entries/s",
                "report (floor: reading alone)",
                None,
                f"verify_chain over iter_entries {st['verify_s']} s, reading alone "
                f"{st['read_s']} s; clean, 1 checkpoint; {v['bulk_inserted']:,} entries "
                f"bulk-inserted in {v['bulk_insert_s']} s",
            )
        )
        out.append(
            row(
                f"audit verify, exported file from {name}, {v['entries']:,} entries "
                "(entries/s, read + verify)",
                fi["read_and_verify_entries_per_s"],
                None,
                "entries/s",
                "report",
                None,
                f"{fi['bytes'] / 1e6:.1f} MB ({fi['bytes_per_entry']} B/entry): read_audit_file "
                f"{fi['read_s']} s, verify_chain {fi['verify_s']} s "
                f"({fi['verify_entries_per_s']:,}/s); write_audit_file from the store "
                f"{fi['export_s']} s",
            )
        )
    p = figures.get("path")
    if p:
        m50, m99 = p["median"]["p50_ms"], p["median"]["p99_ms"]
        cpu = p["median"]["process_cpu_percent"]
        n = {mode: sum(1 for r in p["runs"] if r["ledger"] == mode) for mode in ("off", "on")}
        slower, spread = m50["slower_percent"], m50["same_mode_spread_percent"]
        met: bool | None = slower is not None and slower <= 100 * TARGET_SLOWER
        verdict = ""
        if not met and spread is not None and slower is not None and slower <= spread:
            met, verdict = None, "; inconclusive: within the spread between runs of one mode"
        out.append(
            row(
                "prediction path, ledger on vs off: input change -> HMI, p50 (ms)",
                m50["on"],
                m50["off"],
                "ms",
                "<= 5% slower with the ledger on",
                met,
                f"medians of {n['off']} off / {n['on']} on runs alternated, {p['samples_per_run']} "
                f"samples each (bench.e2e's echo path): p50 {slower:+} % (runs of one mode differ "
                f"by up to {spread} %: off {m50['runs']['off']}, on {m50['runs']['on']} ms)"
                f"{verdict}; p99 {m99['off']} -> {m99['on']} ms ({m99['slower_percent']:+} %); "
                f"process CPU {cpu['off']} -> {cpu['on']} % ({cpu['slower_percent']:+} %, "
                f"spread {cpu['same_mode_spread_percent']} %); checkpoint_s "
                f"{p['checkpoint_s']:g}, {p['changes_per_s']:g} entries/s appended while on",
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", default="sqlite,postgresql")
    parser.add_argument("--parts", default="append,verify,path")
    parser.add_argument("--appends", type=int, default=2000, help="entries per append run")
    parser.add_argument("--writers", type=int, default=4, help="concurrent writers")
    parser.add_argument("--chain", type=int, default=100_000, help="entries verified")
    parser.add_argument("--samples", type=int, default=200, help="path: input changes per run")
    parser.add_argument("--runs", type=int, default=4, help="path: runs, off and on alternately")
    parser.add_argument("--checkpoint-s", type=float, default=1.0, help="path: ledger on")
    parser.add_argument("--changes-per-s", type=float, default=1.0, help="path: ledger on")
    parser.add_argument("--quick", action="store_true", help="smoke run (~30 s)")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of bench/results/")
    args = parser.parse_args()
    if args.quick:
        args.appends, args.chain = min(args.appends, 100), min(args.chain, 5000)
        args.samples, args.runs = min(args.samples, 40), min(args.runs, 2)
    args.runs = max(2, args.runs)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if unknown := parts - {"append", "verify", "path"}:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}")
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if unknown := set(backends) - {"sqlite", "postgresql"}:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}")
    configure_logging("warning", json=False)
    figures: dict[str, Any] = {"quick": args.quick, "command": " ".join(sys.argv)}
    load0, t_all = os.getloadavg()[0], time.perf_counter()
    skipped: dict[str, str] = {}
    if "postgresql" in backends and parts & {"append", "verify"}:
        why = pg_reachable()
        if why is not None:
            print(f"[postgresql] skipped: {why}", flush=True)
            skipped["postgresql"] = why
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in backends:
            if name in skipped:
                for part in parts & {"append", "verify"}:
                    figures.setdefault(part, {})[name] = {"skipped": skipped[name]}
                continue
            with backend(name, workdir) as b:
                if "append" in parts:
                    figures.setdefault("append", {})[name] = append_part(
                        b, args.appends, args.writers
                    )
                if "verify" in parts:
                    figures.setdefault("verify", {})[name] = verify_part(b, args.chain, workdir)
        if "path" in parts:
            figures["path"] = asyncio.run(
                path_part(args.samples, args.runs, args.checkpoint_s, args.changes_per_s, workdir)
            )
    figures["load_average_1m_start"] = round(load0, 2)
    figures["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    figures["seconds"] = round(time.perf_counter() - t_all, 1)
    figures["rows"] = rows(figures)
    print()
    print(table(figures["rows"]))
    path = write_result("audit", figures, args.out)
    print(f"\nwritten {path} in {figures['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
