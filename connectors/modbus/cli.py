"""`bridge verify`: contributed to the `bridge` CLI through the `bridge.commands` entry point,
so the core never imports this connector."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from bridge.errors import ConfigError

__all__ = ["verify"]


@click.command()
@click.argument("mapping", type=click.Path(path_type=Path))
@click.option(
    "--live",
    is_flag=True,
    help="Connect to the devices and read the tags (without it: only list what would be read).",
)
def verify(mapping: Path, live: bool) -> None:
    """Check Modbus tags that carry `expect:` values against the live devices.

    Each such tag is read once; a tag whose value (after scale and offset) is off is reported
    with the word order, type or scale that would match. Exit 1 if any tag is off or
    unreadable.
    """
    from bridge.config import load_mapping
    from connectors.modbus.config import ModbusSourceSettings
    from connectors.modbus.verify import VerifyTag, read_and_verify

    try:
        m = load_mapping(mapping)
    except ConfigError as err:
        for issue in err.issues:
            click.echo(str(issue), err=True)
        sys.exit(1)
    plan: dict[str, list[VerifyTag]] = {}
    for tag in m.tags.values():
        source = m.sources[tag.source]
        if source.kind == "modbus" and getattr(tag.address, "expect", None) is not None:
            item = VerifyTag(tag.id, tag.address, tag.scale, tag.offset)
            plan.setdefault(tag.source, []).append(item)
    if not plan:
        click.echo(f"{mapping}: no Modbus tag carries `expect:`; nothing to verify")
        return
    if not live:
        for name, items in plan.items():
            click.echo(f"{name}: {', '.join(i.tag for i in items)}")
        click.echo("add --live to read them")
        return
    failed = 0
    for name, items in plan.items():
        settings = m.sources[name].settings
        assert isinstance(settings, ModbusSourceSettings)
        try:
            verdicts = asyncio.run(read_and_verify(name, settings, items))
        except (OSError, TimeoutError) as exc:
            click.echo(f"FAIL source {name}: {exc}")
            failed += len(items)
            continue
        for v in verdicts:
            click.echo(v.line())
            failed += not v.ok
    total = sum(len(items) for items in plan.values())
    click.echo(f"{total - failed}/{total} tags match their expected values")
    if failed:
        sys.exit(1)
