"""``bridge compliance report``: the evidence a gateway holds for an audit, per control family
(ISO/IEC 27001:2022 Annex A, NIST AI RMF 1.0), as one Markdown or one self-contained HTML file.

The facts come from the mapping and the store (bridge.audit.evidence); nothing is written but
the report. Exit codes, as every command's (bridge.cli.report):

- 0: the report is written;
- 1: the report is written, but the evidence contradicts itself: the audit chain does not
  verify, or the mapping signature the environment requires does not. The report says so at
  its top (and where the chain breaks); it is written all the same, because that is evidence
  an auditor needs, and the exit code makes a scheduled job notice;
- 2: usage (an output suffix other than .md or .html, a time that does not parse);
- 3: the mapping is invalid; 4: the store is missing or cannot be read.

The store, the mapping loader and the report's modules are imported when the command runs,
not when the command group is built (``bridge --help`` should not pay for them).
"""

from __future__ import annotations

import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from bridge.cli.files import atomic_output, when_option
from bridge.cli.report import EXIT_FAILED, fail, fail_with
from bridge.errors import BridgeError

__all__ = ["compliance"]

DEFAULT_DAYS = 30


def _format(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """Refuse a suffix with no format before anything is opened."""
    from bridge.audit.report_render import renderer_for

    try:
        renderer_for(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _bridge_version() -> str:
    try:
        return version("bridge-gateway")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed)"


@click.group()
def compliance() -> None:
    """Evidence for audits (ISO/IEC 27001, NIST AI RMF) from a gateway's mapping and store."""


@compliance.command()
@click.option(
    "--mapping",
    "mapping_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The gateway's mapping file: its settings are reported, and its gateway.store is "
    "read unless --store names another.",
)
@click.option(
    "--store",
    "store_url",
    help="Database URL of the store to read instead of the mapping's gateway.store (e.g. a "
    "copy or a replica); shown in the report without its password.",
)
@click.option(
    "--since",
    callback=when_option,
    help="Start of the reported period: ISO 8601 (no zone: UTC), epoch seconds, or an age "
    f"(30m, 12h, 7d). Default: {DEFAULT_DAYS} days before --until.",
)
@click.option(
    "--until",
    callback=when_option,
    help="End of the reported period (same forms as --since). Default: now.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    callback=_format,
    help="Write the report here; the suffix chooses the format: .html (one self-contained "
    "page) or .md (Markdown). An existing file is replaced atomically.",
)
def report(
    mapping_path: Path,
    store_url: str | None,
    since: float | None,
    until: float | None,
    output: Path,
) -> None:
    """Write a report of the evidence the gateway holds, per control family: asset inventory,
    access control, cryptography, logging and monitoring, change management and AI risk, each
    with the ISO/IEC 27001:2022 Annex A controls and NIST AI RMF subcategories it supports.

    Exit 0 when written; 1 when written but the audit chain (or a required mapping signature)
    does not verify: the report says where, at its top."""
    from bridge.audit.evidence import Period, gather
    from bridge.audit.report_render import renderer_for
    from bridge.config.loader import load_mapping
    from bridge.store.db import open_store

    now = time.time()
    end = now if until is None else until
    start = end - DEFAULT_DAYS * 86400 if since is None else since
    try:
        period = Period(start, end)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since/--until") from None
    fmt, render = renderer_for(output)
    try:
        # Placeholders: an auditor's machine may lack the gateway's secrets (${PASSWORD});
        # the report shows no secret anyway, and lists the variables it went without.
        mapping = load_mapping(mapping_path, placeholders=True)
        durability = mapping.gateway.durability
        url = store_url or mapping.gateway.store
        if store_url is None:
            store = open_store(
                url,
                synchronous=durability.synchronous,
                profile=durability.profile,
                must_exist=True,
            )
        else:
            store = open_store(url, must_exist=True)
        try:
            made = gather(
                mapping,
                store,
                url,
                period,
                bridge_version=_bridge_version(),
                env=os.environ,
                now=now,
            )
        finally:
            store.dispose()
    except BridgeError as err:
        fail(err)
    try:
        with atomic_output(output) as out:
            out.write(render(made))
    except OSError as err:
        fail_with(f"cannot write {output}: {err.strerror or err}", EXIT_FAILED)
    chain = made.chain
    first = chain.first_problem
    verdict = (
        f"verified ({chain.entries} entries)"
        if first is None
        else f"BROKEN at entry {first.seq} ({first.kind})"
    )
    fails = [f for f in made.findings if f.level == "fail"]
    warnings = len(made.findings) - len(fails)
    click.echo(
        f"wrote {output} ({fmt}): audit chain {verdict}; {len(fails)} failure(s), "
        f"{warnings} warning(s)"
    )
    if fails:
        for finding in fails:
            click.echo(f"error: {finding.text}", err=True)
        click.echo(f"error: the report was written and says so: {output}", err=True)
        raise SystemExit(EXIT_FAILED)
