"""Files only their owner may read (API keys), mode 0600 from the call that creates them.

Writing a file and then ``chmod``-ing it leaves a moment where others can read it (and a file
that already existed keeps its old mode); opening with ``O_CREAT | O_EXCL`` and the mode does
not, and refuses a symbolic link planted where the file goes.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["create_private", "replace_private"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def create_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file at ``path``, mode 0600; ``FileExistsError`` if anything
    (a file, a symbolic link) is already there."""
    fd = os.open(path, _FLAGS, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a umask such as 0o277 would leave the owner unable to write
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            fd = -1  # closed by the file object from here on
            out.write(text)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        path.unlink(missing_ok=True)
        raise


def replace_private(path: Path, text: str) -> None:
    """Write ``text`` to a new 0600 file next to ``path`` and move it over ``path``: whatever
    was there (an old file with a wider mode, a symbolic link) is replaced, not written into."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)  # left by a crashed run of a process with the same id
    create_private(temp, text)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
