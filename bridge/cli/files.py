"""How commands write the files they make (exports, reports) and read the times they are given.

A file is written beside its destination and moved into place once complete (fsynced, then the
folder too), so a reader never sees half of it and a failed run leaves what was there before.
mkstemp makes it readable by its owner only: these files say who changed what, or describe the
plant's defences.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import click

__all__ = ["atomic_output", "parse_when", "when_option"]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_AGE_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MAX_EPOCH_S = 1e11


def parse_when(text: str, now: float | None = None) -> float:
    """ISO 8601 (``2024-05-01T12:00:00Z``; no zone: UTC), epoch seconds, or an age before
    now (``30m``, ``12h``, ``7d``) -> epoch seconds. ValueError with a message for the user.

    The API's own parser (bridge.api.timeparse) takes the same two absolute forms; it is not
    imported because importing bridge.api loads the whole web stack (~1 s per command)."""
    raw = text.strip()
    age = _AGE.match(raw)
    if age is not None:
        return (time.time() if now is None else now) - float(age[1]) * _AGE_S[age[2]]
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        if not 0 <= number <= _MAX_EPOCH_S:
            raise ValueError(f"{text!r} is not a number of seconds from 0 to {_MAX_EPOCH_S:.0e}")
        return number
    try:
        moment = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither ISO 8601 (2024-05-01T12:00:00Z), epoch seconds nor an age "
            "(30m, 12h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def when_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A click callback: the option's time as epoch seconds (see ``parse_when``)."""
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@contextlib.contextmanager
def atomic_output(output: Path, *, replace: bool = True) -> Iterator[TextIO]:
    """``output`` written whole or not at all; ``-``: standard output, as it comes. An
    exception in the block leaves nothing. ``replace`` False: FileExistsError instead of
    replacing a file that is there, even one created while this one was being written."""
    if str(output) == "-":
        yield sys.stdout
        return
    folder = output.parent if str(output.parent) else Path(".")
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{output.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _place(tmp, output, replace)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(folder)


def _place(tmp: Path, output: Path, replace: bool) -> None:
    if replace:
        os.replace(tmp, output)
        return
    # A hard link refuses a file created meanwhile; a file system without hard links (FAT, a
    # share) gets a rename after a last look.
    try:
        os.link(tmp, output)
    except FileExistsError:
        raise
    except OSError:
        if output.exists() or output.is_symlink():
            raise FileExistsError(str(output)) from None
        os.replace(tmp, output)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform opens a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
