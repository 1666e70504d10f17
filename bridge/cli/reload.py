"""``bridge reload``: ask a running gateway to apply its changed mapping file
(``POST /api/v1/reload``, an API key of scope ``admin``).

Exit codes are the CLI's own (bridge.cli.report): 0 applied (what changed is printed); 3 the
mapping is invalid (each problem printed as ``bridge validate`` prints it; the gateway keeps the
mapping it runs); 1 any other failure (no gateway at the URL, a key refused, the gateway starting
or stopping)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from bridge.cli.report import EXIT_FAILED, EXIT_MAPPING

__all__ = ["reload"]

TIMEOUT_S = 60.0  # a reload loads the mapping's models again: seconds for large ones


@click.command()
@click.option(
    "--url",
    envvar="BRIDGE_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The gateway's REST API (env BRIDGE_URL).",
)
@click.option(
    "--api-key",
    envvar="BRIDGE_API_KEY",
    required=True,
    help="An API key of scope admin (env BRIDGE_API_KEY).",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="CA certificate (PEM) that signed the API's HTTPS certificate.",
)
def reload(url: str, api_key: str, ca_file: Path | None) -> None:
    """Apply the running gateway's changed mapping file without a restart (like SIGHUP)."""
    import httpx

    verify: Any = str(ca_file) if ca_file is not None else True
    try:
        response = httpx.post(
            url.rstrip("/") + "/api/v1/reload",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=TIMEOUT_S,
            verify=verify,
        )
    except httpx.HTTPError as exc:
        click.echo(f"error: cannot reach the gateway at {url}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    body = _json(response)
    if response.status_code == 422 and "errors" in body:
        for line in body["errors"]:
            click.echo(str(line), err=True)
        click.echo(
            f"{len(body['errors'])} problem(s) found; the gateway keeps its mapping", err=True
        )
        sys.exit(EXIT_MAPPING)
    if response.status_code != 200:
        detail = body.get("detail") or response.text
        click.echo(f"error: HTTP {response.status_code}: {detail}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"reloaded: revision {body['previous_revision'][:12]} -> {body['revision'][:12]}")
    changes = body.get("changes") or {}
    for key in sorted(changes):
        click.echo(f"  {key}: {', '.join(changes[key])}")
    if not changes:
        click.echo("  nothing changed")
    for part in body.get("restart_needed") or []:
        click.echo(f"  needs a restart: {part}")
    for destination, rows in sorted((body.get("outbox_kept") or {}).items()):
        click.echo(
            f"  {destination} removed: {rows} undelivered event(s) kept in the outbox "
            "(bridge outbox list)"
        )


def _json(response: Any) -> dict[str, Any]:
    try:
        found = response.json()
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}
