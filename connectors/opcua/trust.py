"""The trust list of OPC UA peer certificates: one module for the server (HMI clients that connect
to us, ``pki/clients``) and for the client side (servers we connect to, ``pki/servers``).

Folder layout under ``pki_dir`` (the OPC UA Part 12 names; ``certs/`` subfolders also work)::

    trusted/        certificates trusted as they are: application certificates or CA certificates
    trusted/crl/    revocation lists of the CAs in trusted/
    issuers/        CA certificates that only complete a chain (not trusted by themselves)
    issuers/crl/    revocation lists of those CAs
    rejected/       refused certificates, ``<thumbprint>.der``, at most ``rejected_cap`` files

A certificate is trusted when a chain from it ends in a certificate of ``trusted/`` (the
certificate itself, or its CA), every certificate of the chain is valid now, and none is listed
in a revocation list signed by its issuer. A CA without a revocation list revokes nothing. The
chain is checked with cryptography's X.509 verifier and asyncua's CA rule, as asyncua's
``TrustStore`` does; asyncua's store is not used itself because it cannot be built over an empty
folder (``ValueError("can't create an empty store")``), takes no intermediate certificates,
matches revocation lists by serial number only (whoever issued them) and reads its folders once.

An empty or missing ``trusted/`` refuses every certificate. ``trust_on_first_use`` accepts and
stores a certificate only while ``trusted/`` is empty (commissioning the first peer), never later.
The folders are watched, no restart needed: a refusal always reads a changed folder first, and an
acceptance relies on a listing at most one second old.

Where each certificate was seen is recorded in ``seen/<thumbprint>.json`` (``bridge.pki.seen``):
every refusal, and an acceptance at most once a minute per certificate, with the peer the caller
names. ``bridge certs list`` and ``GET /api/v1/certificates`` show it (``bridge.pki``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog
from asyncua.crypto.truststore import basic_ca_validator
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.x509 import verification

from bridge.pki.certificates import (
    CERTIFICATE_SUFFIXES,
    load_certificates,
    subject_of,
    thumbprint_of,
    write_certificate,
)
from bridge.pki.seen import Outcome, record_seen

__all__ = [
    "CERTIFICATE_SUFFIXES",
    "TrustList",
    "UntrustedCertificate",
    "load_certificates",
    "subject_of",
    "thumbprint_of",
    "trust_command",
]

log = structlog.get_logger(__name__)

Purpose = Literal["clients", "servers"]
_CRL_SUFFIXES = (".crl", ".der", ".pem")
# How often the folders are looked at for changes (one listing per interval at most).
_RELOAD_INTERVAL_S = 1.0
# An accepted certificate is checked on every session (three times per HMI login): its
# where-seen record is written at most this often per certificate, the count kept meanwhile.
_ACCEPTED_RECORD_INTERVAL_S = 60.0
_ACCEPTED_PENDING_CAP = 1000


def trust_command(thumbprint: str, pki_dir: Path) -> str:
    return f"bridge certs trust {thumbprint} --pki-dir {pki_dir}"


class UntrustedCertificate(Exception):
    """A peer certificate the trust list refuses; the message says how to trust it.

    ``status`` is the OPC UA status code to answer with (BadCertificateUntrusted,
    BadCertificateTimeInvalid, BadCertificateRevoked).
    """

    def __init__(
        self, *, thumbprint: str, subject: str, reason: str, command: str, status: int
    ) -> None:
        self.thumbprint = thumbprint
        self.subject = subject
        self.reason = reason
        self.command = command
        self.status = status
        super().__init__(
            f"certificate {thumbprint} ({subject}) is not trusted: {reason}; "
            f"to trust it run: {command}"
        )


@dataclass(frozen=True)
class _Snapshot:
    """The folders' content at one moment (certificates parsed once per change)."""

    trusted: tuple[x509.Certificate, ...] = ()
    issuers: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    stamp: tuple[tuple[str, int, int], ...] = field(default=())


class TrustList:
    """Peer certificates trusted by the files under ``pki_dir`` (see the module docstring)."""

    def __init__(
        self,
        pki_dir: Path,
        *,
        trust_on_first_use: bool = False,
        rejected_cap: int = 100,
        purpose: Purpose,
    ) -> None:
        self.pki_dir = Path(pki_dir)
        self.trusted_dir = self.pki_dir / "trusted"
        self.issuers_dir = self.pki_dir / "issuers"
        self.rejected_dir = self.pki_dir / "rejected"
        self.trust_on_first_use = trust_on_first_use
        self.rejected_cap = rejected_cap
        self.purpose = purpose
        self._snapshot: _Snapshot | None = None
        self._looked_at = 0.0
        self._lock = asyncio.Lock()
        # thumbprint -> (acceptances not yet recorded, their last peer, when last recorded)
        self._accepted: dict[str, tuple[int, str | None, float]] = {}

    async def check(self, certificate: x509.Certificate, peer: str | None = None) -> None:
        """Return if ``certificate`` is trusted; else file it under rejected/ and raise
        ``UntrustedCertificate``. ``peer`` (a server's endpoint URL, a client's address) goes
        into the where-seen record (``bridge.pki.seen``)."""
        async with self._lock:
            snapshot = await self._current()
            failure = _verify(snapshot, certificate, datetime.now(UTC))
            if failure is not None:
                # A refusal looks at the folders again at once: a certificate trusted a moment
                # ago must count now (a listing per refusal; refusals are rare and throttled).
                self._looked_at = 0.0
                snapshot = await self._current()
                failure = _verify(snapshot, certificate, datetime.now(UTC))
            if failure is None:
                await self._accepted_now(certificate, peer)
                return
            reason, status = failure
            if self.trust_on_first_use and not snapshot.trusted and status == _UNTRUSTED:
                await asyncio.to_thread(self._store, self.trusted_dir, certificate)
                self._looked_at = 0.0  # read the new file before the next check
                log.warning(
                    "certificate_trusted_on_first_use",
                    peer_kind=self.purpose,
                    thumbprint=thumbprint_of(certificate),
                    subject=subject_of(certificate),
                    folder=str(self.trusted_dir),
                )
                await self._accepted_now(certificate, peer)
                return
            await asyncio.to_thread(self._reject, certificate, peer, reason)
        error = UntrustedCertificate(
            thumbprint=thumbprint_of(certificate),
            subject=subject_of(certificate),
            reason=reason,
            command=trust_command(thumbprint_of(certificate), self.pki_dir),
            status=status,
        )
        log.warning(
            "certificate_rejected",
            peer_kind=self.purpose,
            thumbprint=error.thumbprint,
            subject=error.subject,
            reason=reason,
            filed=str(self.rejected_dir / f"{error.thumbprint}.der"),
            trust_with=error.command,
            **({"peer": peer} if peer else {}),
        )
        raise error

    async def _current(self) -> _Snapshot:
        now = time.monotonic()
        if self._snapshot is not None and now - self._looked_at < _RELOAD_INTERVAL_S:
            return self._snapshot
        self._looked_at = now
        stamp = await asyncio.to_thread(_stamp, self._folders())
        if self._snapshot is None or stamp != self._snapshot.stamp:
            self._snapshot = await asyncio.to_thread(self._load, stamp)
        return self._snapshot

    def _folders(self) -> list[Path]:
        folders = []
        for base in (self.trusted_dir, self.issuers_dir):
            folders += [base, base / "certs", base / "crl"]
        return folders

    def _load(self, stamp: tuple[tuple[str, int, int], ...]) -> _Snapshot:
        trusted = load_certificates([self.trusted_dir, self.trusted_dir / "certs"])
        issuers = load_certificates([self.issuers_dir, self.issuers_dir / "certs"])
        crls = _load_crls([self.trusted_dir / "crl", self.issuers_dir / "crl"])
        log.info(
            "trust_list_loaded",
            peer_kind=self.purpose,
            pki_dir=str(self.pki_dir),
            trusted=len(trusted),
            issuers=len(issuers),
            crls=len(crls),
        )
        return _Snapshot(tuple(trusted), tuple(issuers), tuple(crls), stamp)

    def _store(self, folder: Path, certificate: x509.Certificate) -> Path:
        return write_certificate(folder, certificate)

    def _reject(self, certificate: x509.Certificate, peer: str | None, reason: str) -> None:
        try:
            self._store(self.rejected_dir, certificate)
            files = sorted(self.rejected_dir.glob("*.der"), key=lambda p: p.stat().st_mtime_ns)
            for old in files[: max(0, len(files) - self.rejected_cap)]:
                old.unlink(missing_ok=True)
        except OSError as exc:  # a full or read-only disk must not turn a refusal into a crash
            log.warning("rejected_certificate_not_filed", error=repr(exc))
        self._record(thumbprint_of(certificate), "refused", peer, reason, 1)

    async def _accepted_now(self, certificate: x509.Certificate, peer: str | None) -> None:
        tp = thumbprint_of(certificate)
        now = time.monotonic()
        count, last_peer, recorded = self._accepted.get(tp, (0, None, -_ACCEPTED_RECORD_INTERVAL_S))
        count, last_peer = count + 1, peer or last_peer
        if now - recorded < _ACCEPTED_RECORD_INTERVAL_S:
            self._accepted[tp] = (count, last_peer, recorded)
            return
        if len(self._accepted) >= _ACCEPTED_PENDING_CAP:
            self._accepted.clear()  # counts not yet recorded are lost; the records stay
        self._accepted[tp] = (0, None, now)
        await asyncio.to_thread(self._record, tp, "accepted", last_peer, "", count)

    def _record(
        self, thumbprint: str, outcome: Outcome, peer: str | None, reason: str, times: int
    ) -> None:
        try:
            record_seen(self.pki_dir, thumbprint, outcome, peer=peer, reason=reason, times=times)
        except OSError as exc:  # where it was seen is a help to the operator, not a condition
            log.warning("certificate_sighting_not_recorded", error=repr(exc))


_UNTRUSTED = StatusCodes.BadCertificateUntrusted


def _verify(
    snapshot: _Snapshot, certificate: x509.Certificate, now: datetime
) -> tuple[str, int] | None:
    """None if trusted, else (reason, OPC UA status code)."""
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        return (
            f"outside its validity ({certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d})",
            StatusCodes.BadCertificateTimeInvalid,
        )
    if not snapshot.trusted:
        return "the trust list is empty", _UNTRUSTED
    builder = (
        verification.PolicyBuilder()
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.permit_all().require_present(
                x509.BasicConstraints, verification.Criticality.AGNOSTIC, basic_ca_validator
            ),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .store(verification.Store(list(snapshot.trusted)))
        .time(now.replace(tzinfo=None))
    )
    try:
        verified = builder.build_client_verifier().verify(certificate, list(snapshot.issuers))
    except verification.VerificationError as exc:
        log.debug("certificate_chain_not_verified", error=str(exc))
        return "neither it nor a CA that issued it is in trusted/", _UNTRUSTED
    revoked = _revoked(verified.chain, snapshot.crls)
    if revoked is not None:
        return f"{revoked} is revoked", StatusCodes.BadCertificateRevoked
    return None


def _revoked(
    chain: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]
) -> str | None:
    """The subject of the first certificate of ``chain`` that its issuer's CRL revokes."""
    for cert, issuer in itertools.pairwise(chain):
        for crl in crls:
            if crl.issuer != cert.issuer or not _signed_by(crl, issuer):
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                return subject_of(cert)
    return None


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return bool(crl.is_signature_valid(issuer.public_key()))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _files(folders: Iterable[Path], suffixes: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        found += [p for p in entries if p.suffix.lower() in suffixes and p.is_file()]
    return found


def _stamp(folders: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file is added, removed or replaced in ``folders``."""
    entries = []
    for folder in folders:
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    info = entry.stat()
                    entries.append((entry.path, info.st_mtime_ns, info.st_size))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return tuple(sorted(entries))


def _load_crls(folders: Iterable[Path]) -> list[x509.CertificateRevocationList]:
    found: list[x509.CertificateRevocationList] = []
    for path in _files(folders, _CRL_SUFFIXES):
        try:
            data = path.read_bytes()
            if b"-----BEGIN" in data:
                found.append(x509.load_pem_x509_crl(data))
            else:
                found.append(x509.load_der_x509_crl(data))
        except (OSError, ValueError) as exc:
            log.warning("unreadable_crl", path=str(path), error=repr(exc))
    return found
