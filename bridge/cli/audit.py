"""``bridge audit verify|export|show``: the audit ledger for operators and auditors.

``verify`` walks the chain (every entry's hash, its link to the one before, no gap) and its
signed checkpoints, in the store or in an audit file (an export or a gateway's mirror) with no
store at all: an auditor verifies an export on a machine of their own. ``export`` writes that
file; ``show`` lists entries, newest first.

The store, SQLAlchemy and the signature code are imported when a command runs, not when the
command group is built (``bridge --help`` should not pay for them).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge.cli.files import atomic_output, when_option
from bridge.cli.report import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail, fail_with
from bridge.cli.store import opened_store, store_options
from bridge.errors import BridgeError
from bridge.redact import redact_url

if TYPE_CHECKING:
    from bridge.audit.verify import Verification
    from bridge.config import Mapping
    from bridge.store.auditchain import AuditCheckpoint, AuditEntry
    from bridge.store.db import Store

__all__ = ["audit"]

_where = store_options("Use the store of this mapping (for verify: and its trusted keys).")

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_AGE_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_EPOCH_S = 1e11  # year 5138: a larger number is a mistake (milliseconds, not seconds)


@click.group()
def audit() -> None:
    """The tamper-evident audit ledger: verify it, export it for an auditor, list entries."""


# -- verify -------------------------------------------------------------------------------------


def _load_mapping(path: Path) -> Mapping:
    from bridge.config.loader import load_mapping

    return load_mapping(path)


def _trusted_keys(public_keys: Sequence[Path], mapping: Mapping | None) -> list[str] | None:
    """The keys whose checkpoints count: the --public-key files, else the mapping's (its own
    signing key and gateway.audit.trusted_keys), else None (any valid signature)."""
    from bridge.ed25519 import load_public_key, public_key_text

    if public_keys:
        return [public_key_text(load_public_key(p)) for p in public_keys]
    if mapping is not None:
        from bridge.audit.ledger import trusted_keys

        return trusted_keys(mapping.gateway.audit, mapping.path.parent)
    return None


def _signers(checkpoints: Iterable[AuditCheckpoint]) -> list[str]:
    from bridge.audit.checkpoints import signature_valid

    return sorted({c.public_key for c in checkpoints if signature_valid(c)})


def _print_verdict(
    result: Verification,
    source: str,
    keys: Sequence[str] | None,
    signers: Sequence[str],
    checkpoints_read: int,
    max_problems: int,
) -> None:
    click.echo(f"audit chain of {source}: {'OK' if result.ok else 'BROKEN'}")
    span = f" (seq 1-{result.last_seq})" if result.entries else ""
    click.echo(f"  entries:          {result.entries}{span}")
    signed = "validly signed" if keys is None else "validly signed by a trusted key"
    click.echo(f"  checkpoints:      {result.checkpoints} of {checkpoints_read} {signed}")
    last = result.last_checkpoint_seq
    click.echo(f"  last checkpoint:  {f'entry {last}' if last else 'none'}")
    click.echo(
        f"  unsigned tail:    {result.unsigned_tail} entr(ies) after the last checkpoint "
        "(entries cut from there on would not show)"
    )
    if keys is None:
        click.echo(
            "  signer key:       NOT pinned: any validly signed checkpoint counts (give "
            "--public-key or --mapping to accept only the gateways' keys)"
        )
        for key in signers:
            click.echo(f"    signed by {key}")
    elif keys:
        click.echo(f"  signer key:       pinned ({len(keys)} trusted key(s))")
    else:
        click.echo(
            "  signer key:       pinned to no key: the mapping's gateway.audit.signing_key (or "
            "its .pub) is not here and it names no trusted_keys; give --public-key"
        )
    first = result.first_problem
    if first is None:
        return
    click.echo(f"first broken entry: {first.seq} ({first.kind}): {first.message}")
    more = result.problems[1:]
    for p in more[:max_problems]:
        click.echo(f"  then entry {p.seq} ({p.kind}): {p.message}")
    if len(more) > max_problems:
        click.echo(f"  ... and {len(more) - max_problems} more (--max-problems)")


@audit.command()
@click.argument(
    "file", required=False, type=click.Path(path_type=Path, exists=True, dir_okay=False)
)
@_where
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Count only checkpoints signed by this Ed25519 public key (PEM file; repeatable). "
    "Default: the keys of the mapping's gateway.audit with --mapping, else any valid "
    "signature (the signer is then not pinned).",
)
@click.option(
    "--max-problems",
    type=click.IntRange(0, 100),
    default=10,
    show_default=True,
    help="After the first broken entry, list at most this many more problems.",
)
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def verify(
    file: Path | None,
    mapping: Path | None,
    store_url: str | None,
    public_keys: tuple[Path, ...],
    max_problems: int,
    as_json: bool,
) -> None:
    """Verify the chain of the store, or of an audit FILE.

    FILE is an export or a gateway's mirror file; it needs no store. Exit 0 when the chain
    is intact, 1 when it is broken (the first broken entry is named)."""
    from bridge.audit.exportfile import read_audit_file
    from bridge.audit.verify import verify_chain
    from bridge.store.audit import AuditRepository, default_writer

    if file is not None and store_url is not None:
        raise click.UsageError(
            "give FILE or --store, not both (with FILE, --mapping only names the trusted keys)"
        )
    try:
        if file is not None:
            keys = _trusted_keys(public_keys, _load_mapping(mapping) if mapping else None)
            audit_file = read_audit_file(file)
            checkpoints = audit_file.checkpoints
            result = verify_chain(audit_file.entries, checkpoints, keys)
            source = str(file)
        else:
            with opened_store(mapping, store_url) as opened:
                keys = _trusted_keys(public_keys, opened.mapping)
                repo = AuditRepository(opened.store, default_writer())
                # The checkpoints first: one signed while the entries are read vouches for an
                # entry past the last one read, which would look like a chain cut short.
                checkpoints = repo.checkpoints()
                result = verify_chain(repo.iter_entries(), checkpoints, keys)
                source = _source(opened.mapping, store_url)
    except BridgeError as err:
        fail(err)
    if as_json:
        answer = {**result.to_json(), "source": source, "signer_pinned": keys is not None}
        click.echo(json.dumps(answer))
    else:
        signers = _signers(checkpoints) if keys is None else []
        _print_verdict(result, source, keys, signers, len(checkpoints), max_problems)
    raise SystemExit(EXIT_OK if result.ok else EXIT_FAILED)


def _source(mapping: Mapping | None, store_url: str | None) -> str:
    """The store's URL without its credentials: it goes into files and onto terminals."""
    return redact_url((mapping.gateway.store if mapping is not None else store_url) or "")


# -- export -------------------------------------------------------------------------------------


def _extent(store: Store) -> tuple[int, int]:
    """The last entry's seq and the number of entries, read by one statement so the two
    agree: the export stops at that seq, whatever is appended while it runs."""
    from sqlalchemy import func, select

    from bridge.store.audit import AuditEntryRow

    stmt = select(func.coalesce(func.max(AuditEntryRow.seq), 0), func.count(AuditEntryRow.seq))
    with store.sessions() as session:
        last, count = session.execute(stmt).one()
    return int(last), int(count)


def _exists(output: Path) -> str:
    return f"{output} exists; give a new file name or --force"


def _write_export(
    output: Path,
    header: dict[str, Any],
    entries: Iterator[AuditEntry],
    checkpoints: list[AuditCheckpoint],
    force: bool,
) -> int:
    """A failed or interrupted export never leaves a half file that looks like a cut chain."""
    from bridge.audit.exportfile import write_audit_file

    with atomic_output(output, replace=force) as f:
        written = write_audit_file(f, header, entries, checkpoints)
        if written != header["entries"]:
            raise _Changed(
                f"the ledger changed during the export ({header['entries']} entries counted, "
                f"{written} read: entries were removed meanwhile); nothing was written: run "
                "`bridge audit verify` and export again"
            )
    return written


class _Changed(Exception):
    """Entries went away while they were exported."""


@audit.command()
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the audit file here (JSON lines: a header, every entry, every checkpoint; "
    "mode 0600, as it says who changed what).",
)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@_where
def export(output: Path, force: bool, mapping: Path | None, store_url: str | None) -> None:
    """Export the ledger to a self-contained audit file.

    `bridge audit verify FILE` checks the file on any machine, with no store."""
    from bridge.store.audit import AuditRepository, default_writer
    from bridge.store.auditchain import format_time

    if not force and (output.exists() or output.is_symlink()):
        fail_with(_exists(output), EXIT_USAGE)  # before the store is even opened
    try:
        with opened_store(mapping, store_url) as opened:
            repo = AuditRepository(opened.store, default_writer())
            # The checkpoints first, as verify reads them: then one that vouches for an entry
            # past the last exported one is not a race but a chain cut short, and shows.
            checkpoints = repo.checkpoints()
            last_seq, count = _extent(opened.store)
            header = {
                "exported_at": format_time(round(time.time() * 1_000_000)),
                "exported_by": default_writer(),
                "source": _source(opened.mapping, store_url),
                "entries": count,
                "last_seq": last_seq,
                "checkpoints": len(checkpoints),
                # For the auditor to compare with the gateways' keys; never trusted from here.
                "public_keys": sorted({c.public_key for c in checkpoints}),
            }
            entries = takewhile(lambda e: e.seq <= last_seq, repo.iter_entries())
            written = _write_export(output, header, entries, checkpoints, force)
    except BridgeError as err:
        fail(err)
    except _Changed as err:
        fail_with(str(err), EXIT_FAILED)
    except FileExistsError:
        fail_with(_exists(output), EXIT_USAGE)
    except OSError as err:
        fail_with(f"cannot write {output}: {err.strerror or err}", EXIT_FAILED)
    click.echo(
        f"exported {written} entries (to seq {last_seq}) and {len(checkpoints)} checkpoint(s) "
        f"to {output}; check it with `bridge audit verify {output}`"
    )


# -- show ---------------------------------------------------------------------------------------

_COLUMNS = ("SEQ", "TIME", "GATEWAY", "ACTOR", "CHANNEL", "ACTION", "SUBJECT", "REASON")


def _row(entry: AuditEntry) -> tuple[str, ...]:
    when = entry.at[:19] + "Z"  # to the second: the exact time is in --json
    reason = " ".join(entry.reason.split())  # one line per entry
    return (
        str(entry.seq),
        when,
        entry.gateway,
        entry.actor,
        entry.channel,
        entry.action,
        entry.subject,
        reason,
    )


def _print_table(entries: Sequence[AuditEntry]) -> None:
    rows = [_COLUMNS, *(_row(e) for e in entries)]
    # Every column as wide as its widest cell; the reason, last, runs on.
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
    for r in rows:
        cells = [r[0].rjust(widths[0])] + [
            c.ljust(w) for c, w in zip(r[1:-1], widths[1:], strict=True)
        ]
        click.echo("  ".join([*cells, r[-1]]).rstrip())


@audit.command()
@_where
@click.option(
    "--since",
    callback=when_option,
    help="Only entries at or after this time: ISO 8601 (no zone: UTC), epoch seconds, or an "
    "age (30m, 12h, 7d).",
)
@click.option(
    "--until",
    callback=when_option,
    help="Only entries at or before this time (same forms as --since).",
)
@click.option(
    "--action",
    help="Only this action (model.activated), or every action under a prefix ending in '.' "
    "(model.).",
)
@click.option("--subject", help="Only entries on this subject, exactly (apikey:ab12cd34ef56).")
@click.option("--actor", help="Only entries by this actor, exactly (key:ab12cd34ef56, system).")
@click.option(
    "--limit",
    type=click.IntRange(1, 100000),
    default=50,
    show_default=True,
    help="At most this many entries (the newest).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line, every field and hash."
)
def show(
    mapping: Path | None,
    store_url: str | None,
    since: float | None,
    until: float | None,
    action: str | None,
    subject: str | None,
    actor: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List ledger entries, newest first."""
    from bridge.store.audit import AuditFilter, AuditRepository, default_writer

    where = AuditFilter(since, until, action, subject, actor)
    try:
        with opened_store(mapping, store_url) as opened:
            entries = AuditRepository(opened.store, default_writer()).page(
                where, limit, newest_first=True
            )
    except BridgeError as err:
        fail(err)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry.to_json(), ensure_ascii=False, separators=(",", ":")))
        return
    if entries:
        _print_table(entries)
    click.echo(f"{len(entries)} entr(ies)", err=True)
