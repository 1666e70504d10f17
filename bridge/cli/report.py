"""How a ``bridge`` command reports a failure: the same lines and exit codes everywhere.

Exit 1 is the operator's input (a mapping with problems, each printed with its place and fix);
exit 2 is everything else bridge refused or could not do (a store it cannot open, an unknown
version, ...). Click's own usage errors keep click's exit 2.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from bridge.errors import BridgeError, ConfigError

__all__ = ["fail", "print_issues"]


def print_issues(err: ConfigError) -> None:
    for issue in err.issues:
        click.echo(str(issue), err=True)
    click.echo(f"{len(err.issues)} problem(s) found", err=True)


def fail(err: BridgeError) -> NoReturn:
    if isinstance(err, ConfigError):
        print_issues(err)
        sys.exit(1)
    click.echo(f"error: {err}", err=True)
    sys.exit(2)
