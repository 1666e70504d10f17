"""The gateway's side of the audit ledger: its signing key, the entries it writes itself
(started, stopped, mapping loaded and reloaded), the checkpoints it signs and the mirror file.

Other parts append their entries in their own transactions (bridge.store.audit.append_entry);
this writer does not need to see them: the checkpoint loop signs whatever the chain's end is,
and the mirror copies every entry from the store, whoever wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.cancel import cancel_and_wait
from bridge.config.spec import AuditSettings
from bridge.ed25519 import (
    SignatureError,
    generate_keypair,
    load_private_key,
    load_public_key,
    public_key_text,
)
from bridge.errors import StoreError
from bridge.store.audit import AuditRepository
from bridge.store.auditchain import AuditCheckpoint, AuditEntry, NewAuditEntry, format_time
from bridge.types import ComponentHealth, HealthState

from .checkpoints import sign_checkpoint
from .exportfile import checkpoint_line, entry_line

__all__ = ["AuditLedger", "gateway_key", "open_ledger", "trusted_keys"]

log = structlog.get_logger(__name__)


# Gateways started together from one folder (a fleet on one host, tests) race to make the key:
# the one that loses loads the winner's, which may still be being written for a moment.
_KEY_WRITE_WAIT_S = 2.0


def gateway_key(settings: AuditSettings, base: Path) -> Ed25519PrivateKey:
    """The gateway's checkpoint key, made (0600, and its .pub) the first time."""
    path = base / settings.signing_key
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            generate_keypair(path, path.with_name(path.name + ".pub"))
            log.info("audit_key_created", path=str(path), public=str(path) + ".pub")
        except SignatureError:
            if not path.exists():
                raise
    deadline = time.monotonic() + _KEY_WRITE_WAIT_S
    while True:
        try:
            return load_private_key(path)
        except SignatureError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def trusted_keys(settings: AuditSettings, base: Path) -> list[str]:
    """Base64 raw public keys whose checkpoints count: this gateway's and the configured ones.
    The gateway's own is read from its public half (``<signing_key>.pub``) when that is there:
    whoever verifies need not be able to read the private key (0600), nor have it (an
    auditor's copy of the mapping and the .pub)."""
    keys: list[str] = []
    own = base / settings.signing_key
    public = own.with_name(own.name + ".pub")
    if public.exists():
        keys.append(public_key_text(load_public_key(public)))
    elif own.exists():
        keys.append(public_key_text(load_private_key(own).public_key()))
    for name in settings.trusted_keys:
        keys.append(public_key_text(load_public_key(base / name)))
    return keys


def _mirror_last_seq(path: Path) -> int:
    """The last entry's seq in the mirror file (0: none), reading only its tail."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(line)
            if "entry" in data:
                return int(data["entry"]["seq"])
    return 0


@dataclass
class AuditLedger:
    repository: AuditRepository
    key: Ed25519PrivateKey
    checkpoint_s: float
    mirror: Path | None = None
    appended: int = 0
    checkpoints: int = 0
    failures: int = 0
    last_error: str = ""
    _signed_seq: int = 0
    _mirrored_seq: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def gateway(self) -> str:
        return self.repository.gateway

    async def record(self, entry: NewAuditEntry) -> AuditEntry | None:
        """Append an entry of the gateway's own (a failure is logged and counted, never
        raised: the gateway's start or stop does not hang on the ledger)."""
        try:
            written = await asyncio.to_thread(self.repository.append, entry)
        except StoreError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error(
                "audit_append_failed", action=entry.action, subject=entry.subject, error=str(exc)
            )
            return None
        self.appended += 1
        return written

    async def checkpoint(self) -> AuditCheckpoint | None:
        """Sign the chain's end if it moved since this gateway's last checkpoint, and bring
        the mirror up to date."""
        head = await asyncio.to_thread(self.repository.head)
        made = None
        if head is not None and head[0] != self._signed_seq:
            seq, hash_ = head
            at = format_time(round(time.time() * 1_000_000))
            made = sign_checkpoint(self.key, seq, hash_, at, self.gateway)
            await asyncio.to_thread(self.repository.add_checkpoint, made)
            self._signed_seq = seq
            self.checkpoints += 1
        if self.mirror is not None:
            await asyncio.to_thread(self._copy_to_mirror, made)
        return made

    def _copy_to_mirror(self, checkpoint: AuditCheckpoint | None) -> None:
        assert self.mirror is not None
        with self.mirror.open("a", encoding="utf-8") as f:
            for entry in self.repository.iter_after(self._mirrored_seq):
                f.write(entry_line(entry))
                self._mirrored_seq = entry.seq
            if checkpoint is not None:
                f.write(checkpoint_line(checkpoint))
            f.flush()
            os.fsync(f.fileno())

    async def start(self) -> None:
        last = await asyncio.to_thread(self.repository.last_checkpoint, self.gateway)
        self._signed_seq = 0 if last is None else last.seq
        if self.mirror is not None:
            self.mirror.parent.mkdir(parents=True, exist_ok=True)
            self._mirrored_seq = await asyncio.to_thread(_mirror_last_seq, self.mirror)
        self._task = asyncio.create_task(self._loop(), name="audit:checkpoints")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._checkpoint_logged()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_s)
            await self._checkpoint_logged()

    async def _checkpoint_logged(self) -> None:
        try:
            await self.checkpoint()
            self.last_error = ""
        except (StoreError, OSError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("audit_checkpoint_failed", error=str(exc))

    def health(self) -> ComponentHealth:
        state: HealthState = "degraded" if self.last_error else "ok"
        return ComponentHealth(
            "audit",
            state,
            self.last_error,
            {"appended": self.appended, "checkpoints": self.checkpoints, "failures": self.failures},
        )


def open_ledger(settings: AuditSettings, base: Path, repository: AuditRepository) -> AuditLedger:
    try:
        key = gateway_key(settings, base)
    except SignatureError as exc:
        raise StoreError(f"gateway.audit.signing_key: {exc}") from exc
    mirror = None if settings.mirror is None else base / settings.mirror
    return AuditLedger(repository, key, settings.checkpoint_s, mirror)
