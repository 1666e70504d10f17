"""The gateway's own audit entries and its runtime integrity check, on a real gateway over a real
SQLite store (no plant answers: every prediction is Bad "inputs missing", which is all these
tests need).

- A start, a reload and a stop leave ``gateway.started``, ``mapping.loaded``,
  ``mapping.reloaded`` (with the revisions and what changed), ``mapping.refused`` (an invalid
  file) and ``gateway.stopped``; the closing checkpoint is signed by the key the gateway made
  (0600), so the chain verifies with that key pinned; the mirror file holds the same entries
  and verifies on its own.
- A model file changed on disk under a production gateway: alert ``artifact_changed``, an
  ``integrity.mismatch`` entry, the model withheld (its predictions Bad with the reason); the
  file put back: released, ``integrity.restored``. The same change under the default profile is
  reported, the model keeps running. A mapping file edited but not reloaded is reported and
  never withholds anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pump_mapping import pump_mapping
from support import free_port, wait_until

from bridge.audit.exportfile import AuditFileError, entry_line, read_audit_file
from bridge.audit.ledger import gateway_key, trusted_keys
from bridge.audit.verify import verify_chain
from bridge.config.spec import AuditSettings
from bridge.ed25519 import public_key_text
from bridge.lifecycle.signature import generate_keypair, load_private_key, sign_model
from bridge.prepare import prepare
from bridge.runtime.integrity import ARTIFACT_LABEL, IntegrityWatch, file_sha256
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.runtime.runner import TickOutcome
from bridge.simulators.plant.model_variants import write_variants
from bridge.store import open_store
from bridge.store.alerts import AlertFilter, AlertRepository
from bridge.store.audit import AuditFilter, AuditRepository
from bridge.store.auditchain import NewAuditEntry

pytestmark = pytest.mark.timeout(120)


def _mapping(tmp: Path, *, profile: str = "default", extra: tuple[str, ...] = ()) -> Path:
    path = tmp / "mapping.yaml"
    path.write_text(
        pump_mapping(
            store=tmp / "bridge.db",
            model="models/pump_health_v1.onnx",
            gateway_id="audited",
            gateway=(
                "api: {enabled: false}",
                f"durability: {{profile: {profile}}}",
                "audit: {mirror: var/audit.jsonl, checkpoint_s: 60, integrity_s: 0}",
                *extra,
            ),
            port=free_port(),
            timing={"period_s": 0.2, "window_s": 10},
        )
    )
    return path


@contextlib.asynccontextmanager
async def _running(path: Path) -> AsyncIterator[Gateway]:
    gateway = await build_gateway(await asyncio.to_thread(prepare, path))
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        await asyncio.wait_for(gateway.started.wait(), 60)
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def _ledger(tmp: Path) -> AuditRepository:
    return AuditRepository(open_store(f"sqlite:///{tmp / 'bridge.db'}"), "reader")


def _actions(tmp: Path) -> list[str]:
    return [e.action for e in _ledger(tmp).iter_entries()]


async def test_start_reload_and_stop_are_entries_of_a_chain_signed_by_the_gateway(
    tmp_path: Path,
) -> None:
    write_variants(tmp_path / "models")
    path = _mapping(tmp_path)
    async with _running(path) as gateway:
        assert gateway.reloader is not None
        old = gateway.reloader.revision
        path.write_text(path.read_text().replace("period_s: 0.2", "period_s: 0.3"))
        summary = await gateway.reloader.reload("key:abcdef123456")
        # The files are checked again after a reload; editing the file under that check would
        # be (rightly) reported as a mapping nobody reloaded.
        (watch,) = _integrity(gateway)
        await wait_until(lambda: watch.checks >= 2, timeout=10)
        path.write_text(path.read_text() + "\nnot: [valid\n")
        with pytest.raises(Exception, match="mapping"):
            await gateway.reloader.reload()
    assert _actions(tmp_path) == [
        # The registry is seeded with the mapping's model before anything else starts.
        "model.registered",
        "model.activated",
        "gateway.started",
        "mapping.loaded",
        "mapping.reloaded",
        "mapping.refused",
        "gateway.stopped",
    ]
    ledger = _ledger(tmp_path)
    reloaded = ledger.page(AuditFilter(action="mapping.reloaded"), 10)[0]
    assert reloaded.actor == "key:abcdef123456" and reloaded.channel == "rest"
    assert reloaded.before == {"revision": old}
    assert reloaded.after["revision"] == summary.revision
    assert reloaded.after["changes"] == {"models.changed": ["pump-health"]}
    assert reloaded.after["restart_needed"] == []
    # The gateway stopped on the reloaded mapping (the refused one never ran).
    stopped = ledger.page(AuditFilter(action="gateway.stopped"), 10)[0]
    assert stopped.after == {"revision": summary.revision}
    refused = ledger.page(AuditFilter(action="mapping.refused"), 10)[0]
    assert refused.actor == "system" and "mapping.yaml" in refused.reason
    assert {e.gateway for e in ledger.iter_entries()} == {"audited"}

    key = tmp_path / "var" / "audit-ed25519.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "var" / "audit-ed25519.pem.pub").is_file()
    pinned = trusted_keys(AuditSettings(), tmp_path)
    checkpoints = ledger.checkpoints()
    # The closing checkpoint vouches for the last entry, gateway.stopped.
    assert checkpoints[-1].seq == 7 and checkpoints[-1].gateway == "audited"
    result = verify_chain(ledger.iter_entries(), checkpoints, pinned)
    assert result.ok and result.unsigned_tail == 0, result.to_json()

    mirror = read_audit_file(tmp_path / "var" / "audit.jsonl")
    assert [e.hash for e in mirror.entries] == [e.hash for e in ledger.iter_entries()]
    assert verify_chain(mirror.entries, mirror.checkpoints, pinned).ok


async def _predictions_reasons(gateway: Gateway, n: int) -> list[str]:
    """The reasons of the next ``n`` published predictions."""
    seen: list[str] = []
    runner = gateway.runners[0]

    def observe(outcome: TickOutcome) -> None:
        seen.extend(p.reason or "" for p in outcome.predictions)

    runner.observers.append(observe)
    try:
        await wait_until(lambda: len(seen) >= n, timeout=10)
    finally:
        runner.observers.remove(observe)
    return seen


@pytest.mark.parametrize("profile", ["production", "default"])
async def test_a_model_file_changed_on_disk_is_reported_and_withheld_in_production(
    tmp_path: Path, profile: str
) -> None:
    write_variants(tmp_path / "models")
    extra: tuple[str, ...] = ()
    if profile == "production":
        # The production profile wants signed models: sign the mapping's model.
        extra = ("models: {public_key: signing.pub}",)
        _sign(tmp_path)
    path = _mapping(tmp_path, profile=profile, extra=extra)
    model = tmp_path / "models" / "pump_health_v1.onnx"
    original = model.read_bytes()
    async with _running(path) as gateway:
        (watch,) = _integrity(gateway)
        assert watch.health().state == "ok"
        model.write_bytes(original + b"\x00")  # one byte more: not the approved file
        found = await watch.check()
        assert [m.artifact.subject for m in found] == ["model:pump-health/1"]
        runner = gateway.runners[0]
        reasons = await _predictions_reasons(gateway, 2)
        if profile == "production":
            assert runner.withheld.startswith("withheld: model file")
            assert all(r.startswith("withheld: model file") for r in reasons), reasons
        else:
            assert runner.withheld == ""
            assert not any(r.startswith("withheld") for r in reasons), reasons
        assert watch.health().state == "degraded"
        await watch.check()  # the same content again: no second alert, no second entry
        model.write_bytes(original)
        assert await watch.check() == []
        assert runner.withheld == ""
        assert watch.health().state == "ok"
    entries = [e for e in _ledger(tmp_path).iter_entries() if e.action.startswith("integrity.")]
    assert [(e.action, e.subject) for e in entries] == [
        ("integrity.mismatch", "model:pump-health/1"),
        ("integrity.restored", "model:pump-health/1"),
    ]
    assert entries[0].after["withheld"] is (profile == "production")
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    alerts = AlertRepository(store).page(AlertFilter(), 10)
    assert [a.label for a in alerts] == [ARTIFACT_LABEL]


async def test_a_mapping_edited_but_not_reloaded_is_reported_not_withheld(
    tmp_path: Path,
) -> None:
    write_variants(tmp_path / "models")
    path = _mapping(tmp_path)
    async with _running(path) as gateway:
        (watch,) = _integrity(gateway)
        path.write_text(path.read_text() + "\n# an edit nobody reloaded\n")
        found = await watch.check()
        assert [m.artifact.kind for m in found] == ["mapping"]
        assert gateway.runners[0].withheld == ""
    actions = _actions(tmp_path)
    assert "integrity.mismatch" in actions


def _integrity(gateway: Gateway) -> list[IntegrityWatch]:
    return [p for stage in gateway.stages for p in stage.parts if isinstance(p, IntegrityWatch)]


def _sign(tmp: Path) -> None:
    generate_keypair(tmp / "signing.key", tmp / "signing.pub")
    model = tmp / "models" / "pump_health_v1.onnx"
    signature = sign_model(
        load_private_key(tmp / "signing.key"), "pump-health", "1", file_sha256(model)
    )
    model.with_name(model.name + ".sig").write_text(signature)


def test_a_mirror_read_while_a_line_is_being_appended_reads_the_whole_lines(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    ledger = AuditRepository(store, "gw")
    for n in range(3):
        ledger.append(NewAuditEntry("system", "system", "gateway.started", f"gateway:{n}"))
    mirror = tmp_path / "audit.jsonl"
    mirror.write_text("".join(entry_line(e) for e in ledger.iter_entries()))
    with mirror.open("a") as f:
        f.write(entry_line(ledger.append(NewAuditEntry("system", "system", "x", "y")))[:40])
    read = read_audit_file(mirror)
    assert [e.seq for e in read.entries] == [1, 2, 3]
    assert verify_chain(read.entries, []).ok
    # A broken line in the middle is an error all the same, named with its line.
    mirror.write_text("{broken\n" + mirror.read_text())
    with pytest.raises(AuditFileError, match=r"audit\.jsonl:1: not JSON"):
        read_audit_file(mirror)


def test_gateways_started_together_from_one_folder_share_the_key_one_of_them_made(
    tmp_path: Path,
) -> None:
    # Three gateways of a fleet on one host started at once (seen: the two that lost the race
    # to create the key refused to start).
    settings = AuditSettings()
    barrier = threading.Barrier(6)

    def made() -> str:
        barrier.wait(timeout=10)
        return public_key_text(gateway_key(settings, tmp_path).public_key())

    with ThreadPoolExecutor(6) as pool:
        keys = list(pool.map(lambda _: made(), range(6)))
    assert len(set(keys)) == 1
    assert trusted_keys(settings, tmp_path) == keys[:1]
