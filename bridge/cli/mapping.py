"""`bridge mapping sign`: approve a mapping file with an Ed25519 signature beside it
(``MAPPING.sig``); gateways started with ``BRIDGE_MAPPING_PUBLIC_KEY`` run only signed mappings
(bridge.config.signing)."""

from __future__ import annotations

from pathlib import Path

import click

from bridge.cli.report import EXIT_FAILED, fail_with

__all__ = ["mapping"]


@click.group()
def mapping() -> None:
    """Approve mapping files: sign them for gateways that require signed mappings."""


@mapping.command()
@click.argument("mapping_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ed25519 private key (PEM, from `bridge models keygen`) of the person approving it.",
)
def sign(mapping_file: Path, key_file: Path) -> None:
    """Sign MAPPING_FILE as it is now: writes MAPPING_FILE.sig. Any later edit needs a new
    signature before a gateway that requires signatures loads it."""
    from bridge.config.signing import sign_mapping
    from bridge.ed25519 import SignatureError, load_private_key

    try:
        written = sign_mapping(load_private_key(key_file), mapping_file)
    except (SignatureError, OSError) as exc:
        fail_with(str(exc), EXIT_FAILED)
    click.echo(f"signed {mapping_file} -> {written}")
