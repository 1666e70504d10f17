"""``bridge certs list|trust|reject|remove``: the trust lists of peer certificates (both sides:
servers the gateway connects to, clients that connect to it) from the command line.

The ``certs`` group itself is the OPC UA connector's (``bridge certs create`` makes an OPC UA
application certificate); these commands are the core's because they work on ``bridge.pki``
and write the audit ledger, which the connector does not reach.

Which trust lists: ``--pki-dir`` (repeatable), else the mapping's (``--mapping``), else
``pki/servers`` and ``pki/clients``, relative to the working directory as ``bridge run`` takes
them. Each change is an entry of the audit ledger (by ``cli:<os user>``) when there is one: the
store of ``--store``, or of the mapping's ``gateway.store`` if that store exists (a gateway that
never ran has no ledger yet, and the change is made without an entry, silently). A store that is
named but cannot be opened refuses the change before anything is moved.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bridge.cli.actor import cli_actor
from bridge.cli.report import (
    EXIT_FAILED,
    EXIT_MAPPING,
    EXIT_STORE,
    EXIT_USAGE,
    fail_with,
    print_issues,
)
from bridge.errors import ConfigError, StoreError
from bridge.pki.trustlists import (
    Change,
    Listed,
    PkiError,
    TrustDir,
    default_dirs,
    list_certificates,
    normalize_thumbprint,
    reject,
    remove,
    revocation_lists,
    side_of_path,
    trust,
    trust_file,
)

if TYPE_CHECKING:
    from bridge.config import Mapping
    from bridge.store.audit import AuditRepository

__all__ = ["TRUST_LIST_COMMANDS", "certs_list", "certs_reject", "certs_remove", "certs_trust"]

F = TypeVar("F", bound=Callable[..., Any])


def _pki_dirs(fn: F) -> F:
    return click.option(
        "--pki-dir",
        "pki_dirs",
        multiple=True,
        type=click.Path(path_type=Path, file_okay=False),
        help="A trust list folder (pki/clients: HMIs connecting to the opcua-server; "
        "pki/servers: servers a source connects to); repeat for several. Default: the "
        "mapping's (--mapping), else both of these.",
    )(fn)


def _mapping(fn: F) -> F:
    return click.option(
        "--mapping",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Take the trust lists from this mapping (its opcua sources' security.pki_dir, its "
        "opcua-server outputs' pki_dir) and record changes in its gateway.store's audit ledger.",
    )(fn)


def _change_options(fn: F) -> F:
    fn = click.option(
        "--reason", default="", help="Why; recorded with the change in the audit ledger."
    )(fn)
    fn = click.option(
        "--store",
        "store_url",
        help="Record the change in the audit ledger of this store (database URL) instead of "
        "the mapping's.",
    )(fn)
    return _mapping(_pki_dirs(fn))


@click.command("list")
@_pki_dirs
@_mapping
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def certs_list(pki_dirs: tuple[Path, ...], mapping: Path | None, as_json: bool) -> None:
    """List the certificates of the trust lists: trusted, issuers (CAs that only complete a
    chain) and rejected, with subject, thumbprint, validity and where each was last seen."""
    dirs = _trust_dirs(pki_dirs, _load(mapping))
    entries = list_certificates(dirs)
    if as_json:
        for e in entries:
            # "folder": the name this listing gave the state before it had sides.
            row = {**e.to_json(), "folder": e.state}
            click.echo(json.dumps(row, separators=(",", ":")))
        return
    if not dirs:
        click.echo(f"{mapping}: no opcua source or opcua-server output, so no trust list")
        return
    for trust_dir in dirs:
        mine = [e for e in entries if e.trust_dir == trust_dir]
        users = f": {', '.join(trust_dir.used_by)}" if trust_dir.used_by else ""
        side = f" ({trust_dir.side}{users})" if trust_dir.side else ""
        if not mine:
            refused = "every certificate-based peer is refused"
            click.echo(f"{trust_dir.path}{side}: no certificates ({refused})")
            continue
        click.echo(f"{trust_dir.path}{side}")
        for e in mine:
            click.echo(_line(e))
        click.echo(f"revocation lists: {revocation_lists(trust_dir)}")


@click.command("trust")
@click.argument("certificate")
@click.option(
    "--issuer",
    is_flag=True,
    help="A CA certificate file that only completes chains: goes to issuers/, not trusted/.",
)
@_change_options
def certs_trust(
    certificate: str,
    issuer: bool,
    pki_dirs: tuple[Path, ...],
    mapping: Path | None,
    store_url: str | None,
    reason: str,
) -> None:
    """Trust CERTIFICATE: a thumbprint (8 or more hex digits are enough) of a certificate in
    rejected/ (moved to trusted/), or a certificate file (DER or PEM, copied to trusted/).

    A running gateway uses the change at once, without a restart.
    """
    loaded = _load(mapping)
    dirs = _trust_dirs(pki_dirs, loaded)
    source = Path(certificate)
    if source.is_file():
        if len(dirs) != 1:
            fail_with(
                f"{certificate} is a file: name the trust list it goes to with --pki-dir "
                f"(one of: {', '.join(str(d.path) for d in dirs) or 'none'})",
                EXIT_USAGE,
            )
        target = dirs[0]
        _change(loaded, store_url, reason, lambda: trust_file(target, source, issuer=issuer))
        return
    try:
        normalize_thumbprint(certificate)
    except PkiError:
        fail_with(
            f"{certificate!r} is neither a file nor a thumbprint (at least 8 hex digits)",
            EXIT_FAILED,
        )
    _change(loaded, store_url, reason, lambda: trust(dirs, certificate))


@click.command("reject")
@click.argument("thumbprint")
@_change_options
def certs_reject(
    thumbprint: str,
    pki_dirs: tuple[Path, ...],
    mapping: Path | None,
    store_url: str | None,
    reason: str,
) -> None:
    """Reject the trusted certificate THUMBPRINT (8 or more hex digits): moved from trusted/
    (or issuers/) to rejected/, refused from the next connection on (a CA: with everything it
    issued). Sessions already open stay open until they end."""
    loaded = _load(mapping)
    dirs = _trust_dirs(pki_dirs, loaded)
    _change(loaded, store_url, reason, lambda: reject(dirs, thumbprint))


@click.command("remove")
@click.argument("thumbprint")
@_change_options
def certs_remove(
    thumbprint: str,
    pki_dirs: tuple[Path, ...],
    mapping: Path | None,
    store_url: str | None,
    reason: str,
) -> None:
    """Delete the certificate THUMBPRINT (8 or more hex digits) from every folder of the trust
    list, with where it was seen. A peer that shows it again is refused and filed anew."""
    loaded = _load(mapping)
    dirs = _trust_dirs(pki_dirs, loaded)
    _change(loaded, store_url, reason, lambda: remove(dirs, thumbprint))


TRUST_LIST_COMMANDS: tuple[click.Command, ...] = (
    certs_list,
    certs_trust,
    certs_reject,
    certs_remove,
)


def _load(mapping: Path | None) -> Mapping | None:
    if mapping is None:
        return None
    from bridge.config.loader import load_mapping

    try:
        # Secrets (${VAR} without a default) need not be set: only folders and the store count.
        return load_mapping(mapping, placeholders=True)
    except ConfigError as err:
        print_issues(err)
        sys.exit(EXIT_MAPPING)


def _trust_dirs(pki_dirs: Sequence[Path], loaded: Mapping | None) -> list[TrustDir]:
    from bridge.pki.mapping import trust_dirs_of

    of_mapping = trust_dirs_of(loaded) if loaded is not None else None
    if not pki_dirs:
        return of_mapping if of_mapping is not None else default_dirs()
    known = {d.path: d for d in of_mapping or ()}
    return [known.get(p) or TrustDir(p, side_of_path(p)) for p in pki_dirs]


def _change(
    loaded: Mapping | None,
    store_url: str | None,
    reason: str,
    operation: Callable[[], list[Change]],
) -> None:
    with _ledger(loaded, store_url) as ledger:
        try:
            changes = operation()
        except PkiError as exc:
            fail_with(str(exc), EXIT_FAILED)
        for change in changes:
            for path in change.files:
                click.echo(f"{change.after or 'removed'}: {path}")
        if ledger is not None:
            _record(ledger, changes, reason)


def _record(ledger: AuditRepository, changes: Sequence[Change], reason: str) -> None:
    from bridge.store.auditchain import NewAuditEntry

    actor = cli_actor()
    try:
        for change in changes:
            action, subject, before, after = change.audit()
            entry = ledger.append(
                NewAuditEntry(actor, "cli", action, subject, before, after, reason)
            )
            click.echo(f"audit ledger entry {entry.seq}: {action} {subject}", err=True)
    except StoreError as err:
        fail_with(f"the change is made, but its audit ledger entry is not: {err}", EXIT_STORE)


@contextmanager
def _ledger(loaded: Mapping | None, store_url: str | None) -> Iterator[AuditRepository | None]:
    """The audit ledger of ``--store``, or of the mapping's store if it exists; else None.
    Opened before the change, so a store that is named but broken stops it."""
    if store_url is None and loaded is None:
        yield None
        return
    from bridge.store.audit import AuditRepository, default_writer
    from bridge.store.db import open_store

    try:
        if store_url is not None:
            store = open_store(store_url, must_exist=True)
        else:
            assert loaded is not None
            durability = loaded.gateway.durability
            store = open_store(
                loaded.gateway.store,
                synchronous=durability.synchronous,
                profile=durability.profile,
                must_exist=True,
            )
    except StoreError as err:
        # A mapping whose gateway never ran has no store, so no ledger to write to: that is
        # not a reason to refuse the change (open_store words a missing store "no store at").
        if store_url is None and str(err).startswith("no store at"):
            yield None
            return
        fail_with(str(err), EXIT_STORE)
    try:
        yield AuditRepository(store, default_writer())
    finally:
        store.dispose()


def _line(e: Listed) -> str:
    marks = ("CA " if e.is_ca else "") + ("EXPIRED " if e.expired() else "")
    text = f"{e.state:<9} {e.thumbprint}  until {e.not_after:%Y-%m-%d}  {marks}{e.subject}"
    if e.application_uri:
        text += f"  {e.application_uri}"
    seen = e.seen
    if seen is not None:
        peer = f" from {seen.peers[-1]}" if seen.peers else ""
        text += (
            f"  [seen {_when(seen.last_seen)}{peer}: refused {seen.refused}, "
            f"accepted {seen.accepted}]"
        )
    return text


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%SZ")
