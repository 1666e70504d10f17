"""OPC UA commands for the `bridge` CLI, contributed through the `bridge.commands` entry point:
`bridge certs create|hash-password`, `bridge browse` and `bridge opcua nodeset`.

`bridge certs list|trust|reject|remove` are the core's (`bridge.cli.certs`: the trust lists of
both sides and the audit ledger), added to this group: the entry point names this group.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from bridge.cli.certs import TRUST_LIST_COMMANDS
from bridge.connectors.opcua._connection_options import connection_options
from bridge.errors import BridgeError, ConfigError

__all__ = ["browse", "certs", "opcua"]


@click.group()
def certs() -> None:
    """OPC UA certificates: the gateway's own, and the trust lists of its peers."""


@certs.command("create")
@click.option(
    "--cert",
    "cert_path",
    type=click.Path(path_type=Path),
    default=Path("pki/own/cert.der"),
    show_default=True,
    help="Write the certificate (DER) here.",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path),
    default=Path("pki/own/key.pem"),
    show_default=True,
    help="Write its private key (PEM, mode 0600) here.",
)
@click.option(
    "--application-uri",
    default="urn:bridge:gateway",
    show_default=True,
    help="Must equal application_uri in the mapping (source security / opcua-server).",
)
@click.option("--hostname", "hostnames", multiple=True, help="DNS SAN; repeat. Default: this host.")
@click.option("--days", default=730, show_default=True, help="Validity of the certificate.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def certs_create(
    cert_path: Path,
    key_path: Path,
    application_uri: str,
    hostnames: tuple[str, ...],
    days: int,
    force: bool,
) -> None:
    """Create a self-signed application certificate (DER) and private key (PEM)."""
    from bridge.connectors.opcua.certs import create_application_certificate, thumbprint

    if not force and (cert_path.exists() or key_path.exists()):
        click.echo(f"error: {cert_path} or {key_path} exists (use --force)", err=True)
        sys.exit(1)
    cert = create_application_certificate(
        cert_path,
        key_path,
        application_uri=application_uri,
        hostnames=hostnames,
        days=days,
        overwrite=force,
    )
    der = cert_path.read_bytes()
    click.echo(f"certificate {cert_path} (thumbprint {thumbprint(der)})")
    click.echo(f"private key {key_path}")
    click.echo(f"ApplicationUri {application_uri}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    click.echo("copy the certificate into each server's trusted folder")


for _command in TRUST_LIST_COMMANDS:
    certs.add_command(_command)


@certs.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--n", "cost", default=16384, show_default=True, help="scrypt cost (power of 2).")
def certs_hash_password(from_stdin: bool, cost: int) -> None:
    """Print a password hash for `password_hash:` of an opcua-server user."""
    from bridge.connectors.opcua._passwords import hash_password, parse_password_hash

    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        click.echo("error: empty password", err=True)
        sys.exit(1)
    try:
        encoded = hash_password(password, n=cost)
        parse_password_hash(encoded)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(encoded)


@click.command()
@click.argument("endpoint")
@click.option("--root", default=None, help="Browse path below Objects, e.g. Plant/Pump01.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the scaffold here.")
@click.option("--max-depth", default=6, show_default=True, help="Levels below the start node.")
@click.option("--max-nodes", default=10_000, show_default=True, help="Stop after this many nodes.")
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, help="Per request, s.")
@click.option("--source", default="server", show_default=True, help="Source name to write.")
@connection_options
def browse(
    endpoint: str,
    root: str | None,
    output: Path | None,
    max_depth: int,
    max_nodes: int,
    timeout_s: float,
    source: str,
    **connection: Any,
) -> None:
    """Walk a live server and write a mapping scaffold.

    A variable holding a structure gets a tag per scalar field (address with `field:`), and
    the structures are listed with their fields at the end, as comments.

    Anonymous on a None channel unless --policy (with --certificate/--private-key) and an
    identity (--username with --password-env/--password-file, or --user-certificate) are given.
    """
    from bridge.connectors.opcua._connection_options import BadOptions, connection_settings
    from bridge.connectors.opcua.browse import browse_server, scaffold_yaml

    try:
        settings, block = connection_settings(endpoint, timeout_s, connection)
    except BadOptions as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)

    def progress(nodes: int, variables: int) -> None:
        click.echo(f"\rbrowsed {nodes} nodes, {variables} variables", nl=False, err=True)

    try:
        found = asyncio.run(
            browse_server(
                endpoint,
                root=root,
                max_depth=max_depth,
                max_nodes=max_nodes,
                timeout_s=timeout_s,
                progress=progress,
                settings=settings,
            )
        )
    except Exception as exc:  # reported as one line, not a traceback
        # Our own errors carry the status and the fix as their text; a library's error is
        # shown with its type, which is often all it says (TimeoutError()).
        shown = str(exc) if isinstance(exc, BridgeError) else repr(exc)
        click.echo(f"\nerror: cannot browse {endpoint}: {shown}", err=True)
        sys.exit(1)  # the README's exit codes: 1 failed; 2 is for usage
    click.echo("", err=True)
    text = scaffold_yaml(found, endpoint, source, block)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(found)} tags to {output}", err=True)


@click.group()
def opcua() -> None:
    """The gateway's OPC UA server (opcua-server output): its information model."""


@opcua.command("nodeset")
@click.argument("mapping", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the NodeSet2 XML here (default: standard output).",
)
@click.option(
    "--server",
    "server_name",
    help="Name of the opcua-server output to export; needed when MAPPING has several.",
)
def nodeset(mapping: Path, output: Path | None, server_name: str | None) -> None:
    """Export the information model of MAPPING's OPC UA server as NodeSet2 XML.

    The server is started as `bridge run` would start it (PredictionType, every asset's
    objects, feedback methods, alarms, history flags), on a loopback port the system picks and
    with no login possible, its namespace exported, and stopped; no source is connected and no
    store opened. Secrets the mapping names (${VAR} without a default) need not be set.
    """
    from bridge.connectors.opcua.nodeset import export_nodeset
    from bridge.prepare import prepare, slots_of

    try:
        prepared = prepare(mapping, placeholders=True)
    except ConfigError as err:
        for issue in err.issues:
            click.echo(str(issue), err=True)
        sys.exit(3)  # the README's exit codes: 3 is an invalid mapping
    servers = {n: o for n, o in prepared.mapping.outputs.items() if o.kind == "opcua-server"}
    if server_name is not None and server_name not in servers:
        known = ", ".join(sorted(servers)) or "none"
        click.echo(f"error: no opcua-server output {server_name!r} (there: {known})", err=True)
        sys.exit(2)
    if server_name is None and len(servers) != 1:
        known = ", ".join(sorted(servers))
        why = f"several opcua-server outputs ({known}): choose one with --server"
        click.echo(f"error: {mapping} has {why if servers else 'no opcua-server output'}", err=True)
        sys.exit(2)
    chosen = servers[server_name] if server_name is not None else next(iter(servers.values()))
    slots = slots_of(prepared)
    try:
        xml = asyncio.run(export_nodeset(chosen.settings, slots, prepared.mapping.gateway.id))
    except BridgeError as exc:
        click.echo(f"error: cannot export the OPC UA server's nodes: {exc}", err=True)
        sys.exit(1)
    if output is None:
        click.echo(xml, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(xml, encoding="utf-8")
    click.echo(f"wrote {output} ({len(slots)} objects of PredictionType)", err=True)
