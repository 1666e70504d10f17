"""``bridge outbox list|replay|purge``: look at pending events and dead letters, act on them.

Added to the ``bridge`` command through the ``bridge.commands`` entry point. Works on the
store of a mapping (``--mapping``) or on a database URL (``--store``), while the gateway runs
or not: a replayed event goes back to the end of its asset's queue and the relay sends it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from bridge.errors import BridgeError, ConfigError
from bridge.store.db import Store, open_store
from bridge.store.outbox import OutboxRepository

__all__ = ["outbox"]


def _open(mapping: Path | None, store: str | None) -> Store:
    if (mapping is None) == (store is None):
        raise click.UsageError("give exactly one of --mapping FILE or --store URL")
    if store is not None:
        return open_store(store)
    from bridge.config.loader import load_mapping

    assert mapping is not None
    gateway = load_mapping(mapping).gateway
    return open_store(
        gateway.store,
        synchronous=gateway.durability.synchronous,
        profile=gateway.durability.profile,
    )


def _fail(err: BridgeError) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(2 if not isinstance(err, ConfigError) else 1)


_mapping_opt = click.option(
    "--mapping", type=click.Path(path_type=Path), help="Use the store of this mapping."
)
_store_opt = click.option("--store", "store_url", help="Database URL of the store.")
_dest_opt = click.option("--destination", help="Only this destination (an output name).")


@click.group()
def outbox() -> None:
    """Pending events and dead letters of durable destinations (mes-rest)."""


@outbox.command("list")
@_mapping_opt
@_store_opt
@_dest_opt
@click.option("--dead", is_flag=True, help="List dead letters instead of pending events.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
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
        store = _open(mapping, store_url)
        try:
            repo = OutboxRepository(store)
            rows = (
                repo.dead_letters(destination, limit) if dead else repo.pending(destination, limit)
            )
        finally:
            store.dispose()
    except BridgeError as err:
        _fail(err)
        return
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
@_mapping_opt
@_store_opt
@_dest_opt
@click.option("--event", "events", multiple=True, help="Only this event id (repeatable).")
def replay(
    mapping: Path | None, store_url: str | None, destination: str | None, events: tuple[str, ...]
) -> None:
    """Move dead letters back to the outbox: the relay sends them again, same Idempotency-Key."""
    try:
        store = _open(mapping, store_url)
        try:
            n = OutboxRepository(store).replay(destination, events)
        finally:
            store.dispose()
    except BridgeError as err:
        _fail(err)
        return
    click.echo(f"{n} dead letter(s) replayed")


@outbox.command()
@_mapping_opt
@_store_opt
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
        store = _open(mapping, store_url)
        try:
            n = OutboxRepository(store).purge(destination, events)
        finally:
            store.dispose()
    except BridgeError as err:
        _fail(err)
        return
    click.echo(f"{n} dead letter(s) purged")
