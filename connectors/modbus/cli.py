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

    The blocks the gateway will poll are read as it reads them (coalesced with the source's
    max_gap): a tag whose value (after scale and offset) is off is reported with the word
    order, type or scale that would match, and a block the device refuses with the max_gap or
    split that fixes it. Exit 1 if any tag is off or unreadable, or any block is refused.
    """
    from bridge.config import load_mapping
    from bridge.connectors.modbus.config import ModbusSourceSettings
    from bridge.connectors.modbus.plan import plan_reads
    from bridge.connectors.modbus.verify import VerifyTag, describe, read_and_verify

    try:
        m = load_mapping(mapping)
    except ConfigError as err:
        for issue in err.issues:
            click.echo(str(issue), err=True)
        sys.exit(3)  # the README's exit codes: 3 is an invalid mapping
    # Every Modbus tag of a source shapes its blocks; the ones with `expect:` are judged.
    plan: dict[str, list[VerifyTag]] = {}
    for tag in m.tags.values():
        if m.sources[tag.source].kind == "modbus":
            item = VerifyTag(tag.id, tag.address, tag.scale, tag.offset)
            plan.setdefault(tag.source, []).append(item)
    plan = {
        name: items
        for name, items in plan.items()
        if any(i.address.expect is not None for i in items)
    }
    if not plan:
        click.echo(f"{mapping}: no Modbus tag carries `expect:`; nothing to verify")
        return
    if not live:
        for name, items in plan.items():
            settings = m.sources[name].settings
            assert isinstance(settings, ModbusSourceSettings)
            judged = [i.tag for i in items if i.address.expect is not None]
            blocks = plan_reads(
                [(i.tag, i.address) for i in items],
                settings.max_gap,
                settings.max_registers_per_read,
                settings.unit,
            )
            click.echo(f"{name}: {', '.join(judged)}")
            click.echo(f"{name} blocks: {'; '.join(describe(b) for b in blocks)}")
        click.echo("add --live to read them")
        return
    failed = refused = total = 0
    for name, items in plan.items():
        settings = m.sources[name].settings
        assert isinstance(settings, ModbusSourceSettings)
        expected = sum(1 for i in items if i.address.expect is not None)
        total += expected
        try:
            report = asyncio.run(read_and_verify(name, settings, items))
        except (OSError, TimeoutError) as exc:
            click.echo(f"FAIL source {name}: {exc}")
            failed += expected
            continue
        for problem in report.blocks:
            click.echo(problem.line())
        refused += len(report.blocks)
        for v in report.verdicts:
            click.echo(v.line())
            failed += not v.ok
    click.echo(f"{total - failed}/{total} tags match their expected values")
    if refused:
        click.echo(f"{refused} block(s) refused by the device: the gateway would read them as Bad")
    if failed or refused:
        sys.exit(1)
