"""A file trust store for peer certificates: ``<pki>/trusted`` and ``<pki>/rejected``.

A certificate is trusted when the same DER bytes are in ``trusted/``. An unknown one is refused
and copied into ``rejected/`` (so an operator can move it to ``trusted/`` after checking it) unless
trust on first use is enabled, in which case it is stored in ``trusted/`` and accepted. The
rejected folder is capped: a peer presenting a new certificate on every attempt must not fill
the disk, so the oldest files are removed beyond ``rejected_cap``.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from connectors.opcua.certs import load_der, thumbprint

__all__ = ["TrustStore", "UntrustedCertificate"]

log = structlog.get_logger(__name__)


class UntrustedCertificate(Exception):
    """The peer's certificate is not in the trust store."""


class TrustStore:
    def __init__(self, pki_dir: Path, *, trust_on_first_use: bool = False, rejected_cap: int = 100):
        self.trusted_dir = pki_dir / "trusted"
        self.rejected_dir = pki_dir / "rejected"
        self.trust_on_first_use = trust_on_first_use
        self.rejected_cap = rejected_cap

    def _trusted(self) -> set[bytes]:
        if not self.trusted_dir.is_dir():
            return set()
        found: set[bytes] = set()
        for path in self.trusted_dir.iterdir():
            if path.suffix.lower() in (".der", ".pem", ".crt", ".cer"):
                try:
                    found.add(load_der(path))
                except (OSError, ValueError) as exc:
                    log.warning("unreadable_trusted_certificate", path=str(path), error=repr(exc))
        return found

    def check(self, der: bytes) -> None:
        """Accept ``der`` or raise ``UntrustedCertificate`` (after filing it under rejected/)."""
        if der in self._trusted():
            return
        name = f"{thumbprint(der)}.der"
        if self.trust_on_first_use:
            self.trusted_dir.mkdir(parents=True, exist_ok=True)
            (self.trusted_dir / name).write_bytes(der)
            log.warning("certificate_trusted_on_first_use", file=str(self.trusted_dir / name))
            return
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        (self.rejected_dir / name).write_bytes(der)
        self._enforce_cap()
        raise UntrustedCertificate(
            f"certificate {thumbprint(der)} is not trusted: copied to {self.rejected_dir}; "
            f"move it to {self.trusted_dir} to trust it"
        )

    def _enforce_cap(self) -> None:
        files = sorted(self.rejected_dir.glob("*.der"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - self.rejected_cap)]:
            old.unlink(missing_ok=True)
