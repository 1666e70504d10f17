"""Who runs a command, as the registry and the audit ledger name them: ``cli:<os user>``."""

from __future__ import annotations

import getpass

__all__ = ["cli_actor"]


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container): still the CLI
        return "cli"
