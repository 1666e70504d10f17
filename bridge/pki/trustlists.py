"""What an operator does with trust lists: list their certificates, trust, reject or remove one
(by its thumbprint, or a unique prefix of it), add a certificate file.

A trust list is a folder (``TrustDir``) with ``trusted/``, ``issuers/`` and ``rejected/`` (their
``certs/`` subfolders are read too); its ``side`` says whose certificates it holds: ``servers``
(servers the gateway connects to, ``pki/servers`` by default) or ``clients`` (clients of the
gateway's own server, ``pki/clients``). An operation looks for the thumbprint in every trust list
it is given and changes each one that holds the certificate, but refuses when those trust lists
are of different sides: trusting a server should never make it a trusted client as well.

Each change moves whole certificates: written to the new folder first (``<thumbprint>.der``,
aside and renamed), then taken out of the old one, so an interruption leaves a copy too many,
never none. A certificate inside a PEM file of several is taken out by rewriting that file with
the others. Nothing here records who did it: the CLI and the API write the audit entries from
``Change.audit()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from .certificates import (
    application_uri_of,
    certificate_files,
    is_ca,
    parse_certificates,
    subject_of,
    thumbprint_of,
    write_atomically,
    write_certificate,
)
from .seen import Sighting, forget_seen, read_seen

__all__ = [
    "SIDES",
    "STATES",
    "AlreadyInState",
    "AmbiguousCertificate",
    "Change",
    "Listed",
    "PkiError",
    "Side",
    "State",
    "TrustDir",
    "UnknownCertificate",
    "default_dirs",
    "list_certificates",
    "normalize_thumbprint",
    "reject",
    "remove",
    "revocation_lists",
    "side_of_path",
    "trust",
    "trust_file",
]

Side = Literal["servers", "clients"]
State = Literal["trusted", "issuers", "rejected"]
SIDES: tuple[Side, ...] = ("servers", "clients")
STATES: tuple[State, ...] = ("trusted", "issuers", "rejected")
# A prefix shorter than this would match by chance in a list of a few hundred certificates.
MIN_PREFIX = 8


class PkiError(Exception):
    """An operation that cannot be done; the message says why and what to do instead."""


class UnknownCertificate(PkiError):
    """No certificate of the trust lists has that thumbprint."""


class AmbiguousCertificate(PkiError):
    """The prefix names several certificates, or the certificate is in trust lists of
    different sides."""


class AlreadyInState(PkiError):
    """The certificate is already where the operation would put it."""


@dataclass(frozen=True, slots=True)
class TrustDir:
    path: Path
    side: Side | None = None  # None: a folder named by its path only
    used_by: tuple[str, ...] = ()  # the mapping's sources / outputs that use it

    @property
    def label(self) -> str:
        return self.side or str(self.path)


def default_dirs() -> list[TrustDir]:
    """The folders of a mapping that does not set ``pki_dir``, relative to the working directory
    as the gateway takes them."""
    return [TrustDir(Path("pki/servers"), "servers"), TrustDir(Path("pki/clients"), "clients")]


def side_of_path(path: Path) -> Side | None:
    """``pki/servers`` and ``pki/clients`` (the defaults) name their side; other folders don't."""
    name = path.name
    return "servers" if name == "servers" else "clients" if name == "clients" else None


@dataclass(frozen=True, slots=True)
class Listed:
    """One certificate file of a trust list (a PEM file of several gives one each)."""

    trust_dir: TrustDir
    state: State
    path: Path
    thumbprint: str
    subject: str
    issuer: str
    application_uri: str | None
    not_before: datetime
    not_after: datetime
    is_ca: bool
    seen: Sighting | None

    def expired(self, now: datetime | None = None) -> bool:
        return self.not_after < (now or datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        return {
            "side": self.trust_dir.side,
            "pki_dir": str(self.trust_dir.path),
            "state": self.state,
            "thumbprint": self.thumbprint,
            "subject": self.subject,
            "issuer": self.issuer,
            "application_uri": self.application_uri,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "expired": self.expired(),
            "is_ca": self.is_ca,
            "file": self.path.name,
            "seen": None if self.seen is None else self.seen.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Change:
    """What one operation did to one trust list."""

    trust_dir: TrustDir
    thumbprint: str
    subject: str
    before: State | None  # None: added from a file
    after: State | None  # None: removed
    files: tuple[Path, ...] = field(default=())  # written (or, for a removal, deleted)

    @property
    def action(self) -> str:
        if self.after is None:
            return "certificate.removed"
        return {"trusted": "certificate.trusted", "issuers": "certificate.issuer_added"}.get(
            self.after, "certificate.rejected"
        )

    def audit(self) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
        """(action, subject, before, after) of its audit ledger entry."""
        where = {"side": self.trust_dir.side, "pki_dir": str(self.trust_dir.path)}
        return (
            self.action,
            f"certificate:{self.thumbprint}",
            {**where, "state": self.before, "subject": self.subject},
            {**where, "state": self.after},
        )


@dataclass(frozen=True, slots=True)
class _Copy:
    trust_dir: TrustDir
    state: State
    path: Path
    certificate: x509.Certificate
    thumbprint: str


def normalize_thumbprint(text: str) -> str:
    """Lower-case hex without separators (``AB:CD:...`` as tools print it is accepted)."""
    wanted = text.strip().lower().replace(":", "").replace(" ", "")
    if not MIN_PREFIX <= len(wanted) <= 40 or any(c not in "0123456789abcdef" for c in wanted):
        raise PkiError(f"{text!r} is not a thumbprint (at least {MIN_PREFIX} hex digits)")
    return wanted


def list_certificates(dirs: Iterable[TrustDir]) -> list[Listed]:
    listed: list[Listed] = []
    for copy in _scan(dirs):
        cert = copy.certificate
        listed.append(
            Listed(
                trust_dir=copy.trust_dir,
                state=copy.state,
                path=copy.path,
                thumbprint=copy.thumbprint,
                subject=subject_of(cert),
                issuer=_common_name(cert.issuer),
                application_uri=application_uri_of(cert),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                is_ca=is_ca(cert),
                seen=read_seen(copy.trust_dir.path, copy.thumbprint),
            )
        )
    return listed


def revocation_lists(trust_dir: TrustDir) -> int:
    folders = [trust_dir.path / state / "crl" for state in ("trusted", "issuers")]
    return sum(1 for f in folders if f.is_dir() for p in f.iterdir() if p.is_file())


def trust(dirs: Sequence[TrustDir], thumbprint: str) -> list[Change]:
    """Move the certificate from ``rejected/`` (or ``issuers/``) to ``trusted/``."""
    return _move(dirs, thumbprint, "trusted", ("rejected", "issuers"))


def reject(dirs: Sequence[TrustDir], thumbprint: str) -> list[Change]:
    """Move the certificate from ``trusted/`` (or ``issuers/``) to ``rejected/``: refused from
    the next check on, and everything a CA among them issued with it."""
    return _move(dirs, thumbprint, "rejected", ("trusted", "issuers"))


def remove(dirs: Sequence[TrustDir], thumbprint: str) -> list[Change]:
    """Delete every copy of the certificate, and where it was seen."""
    tp, copies = _resolve(dirs, thumbprint)
    changes = []
    for trust_dir in _dirs_of(copies):
        here = [c for c in copies if c.trust_dir == trust_dir]
        files = _take_out(here, tp)
        forget_seen(trust_dir.path, tp)
        changes.append(
            Change(trust_dir, tp, subject_of(here[0].certificate), _first_state(here), None, files)
        )
    return changes


def trust_file(trust_dir: TrustDir, source: Path, *, issuer: bool = False) -> list[Change]:
    """Copy the certificate(s) of ``source`` (DER or PEM) to ``trusted/`` (``issuers/`` with
    ``issuer``); a copy of one in ``rejected/`` is taken out."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {source}: {exc.strerror}") from exc
    try:
        certificates = parse_certificates(data)
    except ValueError as exc:
        raise PkiError(f"{source} is not a certificate (DER or PEM)") from exc
    after: State = "issuers" if issuer else "trusted"
    rejected = [c for c in _scan([trust_dir]) if c.state == "rejected"]
    changes = []
    for cert in certificates:
        tp = thumbprint_of(cert)
        written = write_certificate(trust_dir.path / after, cert)
        was = [c for c in rejected if c.thumbprint == tp]
        _take_out(was, tp)
        before: State | None = "rejected" if was else None
        changes.append(Change(trust_dir, tp, subject_of(cert), before, after, (written,)))
    return changes


def _move(
    dirs: Sequence[TrustDir], thumbprint: str, target: State, sources: tuple[State, ...]
) -> list[Change]:
    tp, copies = _resolve(dirs, thumbprint)
    changes = []
    for trust_dir in _dirs_of(copies):
        here = [c for c in copies if c.trust_dir == trust_dir]
        moving = [c for c in here if c.state in sources]
        if not moving:
            continue
        cert = moving[0].certificate
        present = [c.path for c in here if c.state == target]
        written = present[:1] or [write_certificate(trust_dir.path / target, cert)]
        _take_out(moving, tp)
        changes.append(
            Change(trust_dir, tp, subject_of(cert), _first_state(moving), target, tuple(written))
        )
    if not changes:
        where = ", ".join(str(d.path) for d in _dirs_of(copies))
        raise AlreadyInState(f"certificate {tp} is {target} already ({where})")
    return changes


def _resolve(dirs: Sequence[TrustDir], thumbprint: str) -> tuple[str, list[_Copy]]:
    """The one thumbprint ``thumbprint`` starts, and every copy of that certificate."""
    wanted = normalize_thumbprint(thumbprint)
    copies = _scan(dirs)
    found = sorted({c.thumbprint for c in copies if c.thumbprint.startswith(wanted)})
    if not found:
        where = ", ".join(str(d.path) for d in dirs) or "no trust list"
        rejected = sorted({c.thumbprint[:12] for c in copies if c.state == "rejected"})
        known = ", ".join(rejected[:10]) or "none"
        raise UnknownCertificate(f"no certificate {wanted} in {where} (rejected ones: {known})")
    if len(found) > 1:
        names = ", ".join(tp[:16] for tp in found[:10])
        raise AmbiguousCertificate(
            f"{wanted} matches {len(found)} certificates ({names}): give more digits"
        )
    tp = found[0]
    mine = [c for c in copies if c.thumbprint == tp]
    groups = {c.trust_dir.side or str(c.trust_dir.path) for c in mine}
    if len(groups) > 1:
        where = ", ".join(str(d.path) for d in _dirs_of(mine))
        raise AmbiguousCertificate(
            f"certificate {tp} is in trust lists of different sides ({where}): name the one "
            "to change (--pki-dir)"
        )
    return tp, mine


def _scan(dirs: Iterable[TrustDir]) -> list[_Copy]:
    copies: list[_Copy] = []
    for trust_dir in dirs:
        for state in STATES:
            base = trust_dir.path / state
            for path in certificate_files([base, base / "certs"]):
                try:
                    certificates = parse_certificates(path.read_bytes())
                except (OSError, ValueError):
                    continue  # the trust list logs unreadable files; a listing skips them
                copies += [
                    _Copy(trust_dir, state, path, cert, thumbprint_of(cert))
                    for cert in certificates
                ]
    return copies


def _take_out(copies: Sequence[_Copy], thumbprint: str) -> tuple[Path, ...]:
    """Delete the files holding the certificate; a PEM file that holds others too is rewritten
    with the others."""
    paths = sorted({c.path for c in copies})
    for path in paths:
        try:
            others = [
                c for c in parse_certificates(path.read_bytes()) if thumbprint_of(c) != thumbprint
            ]
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            others = []
        if others:
            write_atomically(path, b"".join(c.public_bytes(Encoding.PEM) for c in others))
        else:
            path.unlink(missing_ok=True)
    return tuple(paths)


def _dirs_of(copies: Iterable[_Copy]) -> list[TrustDir]:
    seen: dict[TrustDir, None] = {}
    for c in copies:
        seen.setdefault(c.trust_dir)
    return list(seen)


def _first_state(copies: Sequence[_Copy]) -> State:
    """The state an audit entry names as "before": rejected first, it is why one asks."""
    states = {c.state for c in copies}
    order: tuple[State, ...] = ("rejected", "trusted", "issuers")
    return next(s for s in order if s in states)


def _common_name(name: x509.Name) -> str:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else name.rfc4514_string()
