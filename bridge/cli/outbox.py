"""``bridge outbox list|replay|purge``: look at pending events and dead letters, act on them.

Added to the ``bridge`` command through the ``bridge.commands`` entry point. Works on the
store of a mapping (``--mapping``) or on a database URL (``--store``), while the gateway runs
or not: a replayed event goes back to the end of its asset's queue and the relay sends it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from bridge.cli.actor import cli_actor
from bridge.cli.report import fail
from bridge.cli.store import opened_store, store_options
from bridge.errors import BridgeError
from bridge.store.outbox import OutboxRepository

__all__ = ["outbox"]

_where = store_options("Use the store of this mapping.")
_dest_opt = click.option("--destination", help="Only this destination (an output name).")


@click.group()
def outbox() -> None:
    """Pending events and dead letters of durable destinations (mes-rest)."""


@outbox.command("list")
@_where
@_dest_opt
@click.option("--dead", is_flag=True, help="List dead letters instead of pending events.")
@click.option(
    "--limit",
    type=click.IntRange(1, 100000),
    default=100,
    show_default=True,
    help="At most this many rows.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(
    mapping: Path | None,
    store_url: str | None,
    destination: str | None,
    dead: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List pending events (oldest first) or dead letters."""
    try:
        with opened_store(mapping, store_url) as opened:
            repo = OutboxRepository(opened.store)
            rows = (
                repo.dead_letters(destination, limit) if dead else repo.pending(destination, limit)
            )
    except BridgeError as err:
        fail(err)
    for row in rows:
        if as_json:
            click.echo(json.dumps(asdict(row), separators=(",", ":")))
        else:
            error = f"  {row.last_error}" if row.last_error else ""
            click.echo(
                f"{row.destination}  {row.asset}  {row.event_id}  attempts={row.attempts}{error}"
            )
    if not as_json:
        what = "dead letter(s)" if dead else "pending event(s)"
        click.echo(f"{len(rows)} {what}", err=True)


@outbox.command()
@_where
@_dest_opt
@click.option("--event", "events", multiple=True, help="Only this event id (repeatable).")
def replay(
    mapping: Path | None, store_url: str | None, destination: str | None, events: tuple[str, ...]
) -> None:
    """Move dead letters back to the outbox: the relay sends them again, same Idempotency-Key."""
    try:
        with opened_store(mapping, store_url) as opened:
            repo = OutboxRepository(opened.store)
            n = repo.replay(destination, events, actor=cli_actor(), channel="cli")
    except BridgeError as err:
        fail(err)
    click.echo(f"{n} dead letter(s) replayed")


@outbox.command()
@_where
@_dest_opt
@click.option("--event", "events", multiple=True, help="Only this event id (repeatable).")
@click.option("--yes", is_flag=True, help="Do it without asking.")
def purge(
    mapping: Path | None,
    store_url: str | None,
    destination: str | None,
    events: tuple[str, ...],
    yes: bool,
) -> None:
    """Delete dead letters for good."""
    if not yes:
        click.confirm("Delete the selected dead letters for good?", abort=True)
    try:
        with opened_store(mapping, store_url) as opened:
            repo = OutboxRepository(opened.store)
            n = repo.purge(destination, events, actor=cli_actor(), channel="cli")
    except BridgeError as err:
        fail(err)
    click.echo(f"{n} dead letter(s) purged")
