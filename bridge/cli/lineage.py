"""``bridge lineage export|facets-schema``: the lineage of decisions, for an auditor or a data
catalogue, and the JSON Schema of the custom OpenLineage facets it writes.

For one prediction (``--prediction ID``) or a time range (``--since T [--until T]``): its
inputs, mapping revision, model, explanation, outputs, what the store knows of each delivery
and the operators' actions, as one JSON document (``--format json``) or as OpenLineage run
events, one per line (``--format openlineage``). The file is written under a temporary name
and renamed once complete: a failed export leaves no partial file behind.

With ``--mapping`` the export also knows the sources' addresses (the input datasets'
namespaces) and, for predictions made under that very mapping revision, which outputs it had.
The store, the lineage package and openlineage-python are imported when the command runs, not
when the command group is built (``bridge --help`` should not pay for them).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bridge.cli.files import atomic_output, when_option
from bridge.cli.report import EXIT_STORE, EXIT_USAGE, fail, fail_with
from bridge.cli.store import OpenedStore, opened_store, store_options
from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.lineage import LineageContext
    from bridge.store.decisions import DecisionRepository

__all__ = ["lineage"]

_where = store_options("Use the store of this mapping; its sources and outputs enrich the export.")
# bridge.store.decisions.MAX_PAGE, not imported here (it loads SQLAlchemy).
_MAX_PAGE = 5000


def _prediction_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a prediction id (a UUID)") from None


@click.group()
def lineage() -> None:
    """Decision lineage: what went into predictions, what made them, where they went."""


def _context(opened: OpenedStore, repo: DecisionRepository, gateway: str | None) -> LineageContext:
    from bridge.lineage import LineageContext

    if opened.mapping is not None:
        return LineageContext.from_mapping(opened.mapping, gateway)
    if gateway is None:
        # The namespace needs the gateway id: the store names the gateways whose predictions
        # it holds (their sequence marks); one of them is the answer, several are a question.
        known = repo.gateways()
        if len(known) != 1:
            which = (
                f"predictions of several gateways ({', '.join(known)})"
                if known
                else "no gateway id (its predictions were stored without one)"
            )
            fail_with(
                f"the store holds {which}: name the gateway of the namespace with --gateway ID",
                EXIT_USAGE,
            )
        gateway = known[0]
    return LineageContext(gateway_id=gateway)


@lineage.command()
@click.option(
    "--prediction",
    "prediction_id",
    callback=_prediction_id,
    help="Export this prediction (its id, a UUID). Instead of --since.",
)
@click.option(
    "--since",
    callback=when_option,
    help="Export the predictions made at or after this time: ISO 8601 (no zone: UTC), epoch "
    "seconds, or an age (30m, 12h, 7d).",
)
@click.option(
    "--until",
    callback=when_option,
    help="With --since: only predictions made at or before this time (same forms); default: "
    "up to now.",
)
@_where
@click.option(
    "--gateway",
    help="The gateway id of the namespace bridge://<id>. Default: the mapping's gateway.id; "
    "with --store, the one gateway whose predictions the store holds.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "openlineage"]),
    default="json",
    show_default=True,
    help="json: one JSON document; openlineage: one OpenLineage run event (JSON) per line.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, _MAX_PAGE),
    default=500,
    show_default=True,
    help="Predictions read from the store at a time: what the export holds in memory.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    required=True,
    help="Write to this file, replaced once the export is complete ('-': standard output).",
)
def export(
    prediction_id: str | None,
    since: float | None,
    until: float | None,
    mapping: Path | None,
    store_url: str | None,
    gateway: str | None,
    fmt: str,
    page_size: int,
    output: Path,
) -> None:
    """Export decisions with their lineage (one prediction, or a time range) as JSON or as
    OpenLineage run events. Nothing is sent anywhere: the events are written to the file."""
    if (prediction_id is None) == (since is None):
        raise click.UsageError("give exactly one of --prediction ID or --since TIME")
    if until is not None and since is None:
        raise click.UsageError("--until goes with --since")
    from bridge.lineage import NotFound, Selection, decision_pages, write_export
    from bridge.store.decisions import DecisionRepository

    selection = Selection(prediction_id, since, until)
    try:
        with opened_store(mapping, store_url) as opened:
            repo = DecisionRepository(opened.store)
            ctx = _context(opened, repo, gateway)
            with atomic_output(output) as out:
                count = write_export(
                    decision_pages(repo, selection, page_size),
                    ctx,
                    out,
                    "openlineage" if fmt == "openlineage" else "json",
                    selection,
                )
    except NotFound as exc:
        fail_with(str(exc), EXIT_STORE)
    except BridgeError as err:
        fail(err)
    if str(output) != "-":
        click.echo(f"{count} decision(s) exported to {output}", err=True)


@lineage.command("facets-schema")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="Write to this file ('-': standard output).",
)
def facets_schema(output: Path) -> None:
    """Print the JSON Schema of the custom OpenLineage facets the export writes (each facet's
    _schemaURL points into it), for a catalogue that checks what it ingests."""
    from bridge.lineage.runevents import FACETS_SCHEMA

    with atomic_output(output) as out:
        out.write(json.dumps(FACETS_SCHEMA, indent=2) + "\n")
