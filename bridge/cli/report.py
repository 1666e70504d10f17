"""How a ``bridge`` command reports a failure: the same lines and exit codes everywhere.

The exit codes (documented in the README; a script branches on them):

====  ==========================================================================================
0     done
1     bridge refused or could not do it (a model that does not fit, a bad signature, a version
      in the wrong state, the gateway failed while running, `verify` found a mismatch)
2     usage: an unknown option, a missing argument (click's own code, kept for these only)
3     the mapping is invalid (each problem printed as file:line: key: message (fix: ...))
4     the store: none at the given place, it cannot be opened, or the key, model or version
      named is not in it
====  ==========================================================================================
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from bridge.errors import BridgeError, ConfigError, StoreError

__all__ = [
    "EXIT_FAILED",
    "EXIT_MAPPING",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_USAGE",
    "exit_code_of",
    "fail",
    "fail_with",
    "print_issues",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_MAPPING = 3
EXIT_STORE = 4


def print_issues(err: ConfigError) -> None:
    for issue in err.issues:
        click.echo(str(issue), err=True)
    click.echo(f"{len(err.issues)} problem(s) found", err=True)


def exit_code_of(err: BridgeError) -> int:
    if isinstance(err, ConfigError):
        return EXIT_MAPPING
    if isinstance(err, StoreError):
        # A conflict (already exists, wrong state) is a refusal of the request, not a store
        # that is missing or broken; imported here so that the CLI's start does not load the
        # store's modules.
        from bridge.store.alerts import AlreadyAcknowledged
        from bridge.store.registry import RegistryError, RegistryNotFound

        if isinstance(err, RegistryNotFound):
            return EXIT_STORE
        if isinstance(err, RegistryError | AlreadyAcknowledged):
            return EXIT_FAILED
        return EXIT_STORE
    return EXIT_FAILED


def fail(err: BridgeError) -> NoReturn:
    if isinstance(err, ConfigError):
        print_issues(err)
    else:
        click.echo(f"error: {err}", err=True)
    sys.exit(exit_code_of(err))


def fail_with(message: str, code: int) -> NoReturn:
    """One ``error: ...`` line on stderr and the exit code (one of the EXIT_* above)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
