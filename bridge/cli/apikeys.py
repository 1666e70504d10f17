"""`bridge apikeys create|list|revoke`: manage the REST API's keys in the gateway's store.

The store is the mapping's ``gateway.store`` (``--mapping``) or a database URL (``--store``).
`create` prints the key once, alone on stdout, so a script can capture it, or writes it to a
new file readable by its owner only (``--output``); nothing can show it again (only its hash
is stored). Creating and revoking are audit ledger entries by ``cli:<os user>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bridge.auth import Scope
from bridge.cli.actor import cli_actor
from bridge.cli.report import EXIT_FAILED, EXIT_STORE, EXIT_USAGE, fail, fail_with
from bridge.cli.store import opened_store, store_options
from bridge.errors import BridgeError
from bridge.private_files import create_private

if TYPE_CHECKING:
    from bridge.store.apikeys import ApiKeyRepository

__all__ = ["apikeys"]

_where = store_options()


@contextmanager
def _repo(
    mapping: Path | None, store_url: str | None, *, create: bool = False
) -> Iterator[ApiKeyRepository]:
    from bridge.store.apikeys import ApiKeyRepository

    try:
        with opened_store(mapping, store_url, create=create) as opened:
            yield ApiKeyRepository(opened.store)
    except BridgeError as err:
        fail(err)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group()
def apikeys() -> None:
    """Create, list and revoke API keys of the REST API."""


@apikeys.command()
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice([s.label for s in Scope]),
    default="read",
    show_default=True,
    help="read < operate (acknowledge alerts) < admin (manage keys); insights: only the "
    "anonymised insights (GET /api/v1/insights), for third parties.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the key to this new file (mode 0600, readable by you only) instead of "
    "printing it; an existing file is never overwritten.",
)
@_where
def create(
    name: str, scope: str, output: Path | None, mapping: Path | None, store_url: str | None
) -> None:
    """Create a key called NAME and print it (once: it is not stored)."""
    if output is not None and (output.exists() or output.is_symlink()):
        # Checked before the key is made, so a refusal leaves no unused key behind.
        fail_with(f"{output} exists; give a new file name", EXIT_USAGE)
    with _repo(mapping, store_url, create=True) as repo:
        try:
            record, key = repo.create(name, Scope.parse(scope), actor=cli_actor(), channel="cli")
        except ValueError as err:
            fail_with(str(err), EXIT_USAGE)
        if output is not None:
            try:
                create_private(output, key + "\n")
            except OSError as err:
                # Nobody has it: it must not stay valid.
                repo.revoke(
                    record.key_id,
                    actor=cli_actor(),
                    channel="cli",
                    reason=f"the key could not be written to {output}",
                )
                fail_with(f"cannot write {output}: {err.strerror}; key revoked", EXIT_FAILED)
    if output is not None:
        click.echo(
            f"created key {record.key_id} '{record.name}' with scope {scope} in {output} "
            "(mode 0600); it cannot be shown again",
            err=True,
        )
        return
    click.echo(
        f"created key {record.key_id} '{record.name}' with scope {scope}; "
        "store it now, it cannot be shown again:",
        err=True,
    )
    click.echo(key)


@apikeys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Also list revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_where
def list_keys(
    include_revoked: bool, as_json: bool, mapping: Path | None, store_url: str | None
) -> None:
    """List keys (id, scope, name, created, revoked); never the keys themselves."""
    with _repo(mapping, store_url) as repo:
        records = repo.list(include_revoked)
    if as_json:
        for r in records:
            row = {
                "key_id": r.key_id,
                "name": r.name,
                "scope": r.scope.label,
                "created_at": _when(r.created_at),
                "revoked_at": None if r.revoked_at is None else _when(r.revoked_at),
            }
            click.echo(json.dumps(row, separators=(",", ":")))
        return
    click.echo(f"{'KEY ID':<12}  {'SCOPE':<8}  {'CREATED':<20}  {'REVOKED':<20}  NAME")
    for r in records:
        click.echo(
            f"{r.key_id:<12}  {r.scope.label:<8}  {_when(r.created_at):<20}  "
            f"{_when(r.revoked_at):<20}  {r.name}"
        )


@apikeys.command()
@click.argument("key_id")
@_where
def revoke(key_id: str, mapping: Path | None, store_url: str | None) -> None:
    """Revoke the key KEY_ID (the id shown by `list`); it stops working at once."""
    with _repo(mapping, store_url) as repo:
        record = repo.revoke(key_id, actor=cli_actor(), channel="cli")
    if record is None:
        fail_with(f"no key {key_id} (`bridge apikeys list` shows the ids)", EXIT_STORE)
    click.echo(f"revoked {record.key_id} '{record.name}'")
