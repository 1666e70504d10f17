"""Reading model files named by a path that came from a user (REST API, CLI).

A registration may read only a regular file under the models directory, of at most a set size.
Everything else (a path outside, a symbolic link leaving the directory, a FIFO, a device, a
file that does not exist) gets one and the same refusal, so the API cannot be used to learn
which files exist on the gateway.

No check-then-open race: the path is resolved lexically first (``realpath``, which opens
nothing), then opened component by component from the directory with ``O_NOFOLLOW``, so a
symbolic link swapped in afterwards makes the open fail instead of being followed; the final
open adds ``O_NONBLOCK`` (opening a FIFO must not wait for a writer) and the checks are made
with ``fstat`` on the descriptor that is then read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from bridge.errors import BridgeError

__all__ = ["DEFAULT_MAX_BYTES", "MiB", "ModelFileRefused", "read_confined", "read_model_file"]

MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 256 * MiB
_CHUNK = 4 * MiB


class ModelFileRefused(BridgeError):
    """A model path that registration or loading will not read."""


def _refusal(directory: Path | None) -> ModelFileRefused:
    if directory is None:
        return ModelFileRefused(
            "no models directory is configured, so no model file can be registered by path: "
            "set gateway.models.directory in the mapping (or give the CLI --models-dir)"
        )
    return ModelFileRefused(
        "no such model file under the models directory, or not a regular file there (paths "
        "outside it, symbolic links leaving it, FIFOs and devices are refused): copy the "
        f"model into {directory} (gateway.models.directory) and give its path there"
    )


def _too_large(size: int, max_bytes: int) -> ModelFileRefused:
    return ModelFileRefused(
        f"the model file is larger than gateway.models.max_file_mib ({max_bytes / MiB:g} MiB): "
        f"{size} bytes; raise the setting if the model is really that large"
    )


def read_confined(path: str | Path, directory: Path | None, max_bytes: int) -> tuple[Path, bytes]:
    """The real path and the bytes of ``path`` (relative paths are relative to ``directory``),
    or :class:`ModelFileRefused` with the same text whatever the reason, except for size.
    Without a directory nothing is read."""
    if directory is None:
        raise _refusal(None)
    base = os.path.realpath(directory)
    try:
        real = os.path.realpath(os.path.join(base, os.fspath(path)))
    except ValueError:  # an embedded NUL byte
        raise _refusal(Path(base)) from None
    if not real.startswith(base.rstrip(os.sep) + os.sep):
        raise _refusal(Path(base))
    parts = os.path.relpath(real, base).split(os.sep)
    try:
        fd = _open_beneath(base, parts)
    except OSError:
        raise _refusal(Path(base)) from None
    return Path(real), _read_regular(fd, max_bytes, lambda: _refusal(Path(base)))


def read_model_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a file whose path came from the mapping or the registry (trusted, so the
    error may say what is wrong), read without following a final symbolic link or blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ModelFileRefused(f"model file not found: {path}") from None
    except OSError as exc:
        raise ModelFileRefused(f"cannot open model file {path}: {exc.strerror}") from None

    def not_regular() -> ModelFileRefused:
        return ModelFileRefused(f"model file {path} is not a regular file")

    return _read_regular(fd, max_bytes, not_regular)


def _open_beneath(base: str, parts: list[str]) -> int:
    """Open ``base/parts...`` without following any symbolic link below ``base``."""
    dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
            )
            os.close(dir_fd)
            dir_fd = inner
        return os.open(
            parts[-1],
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            dir_fd=dir_fd,
        )
    finally:
        os.close(dir_fd)


def _read_regular(fd: int, max_bytes: int, refusal: Callable[[], ModelFileRefused]) -> bytes:
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refusal()
        if st.st_size > max_bytes:
            raise _too_large(st.st_size, max_bytes)
        chunks, total = [], 0
        # The file may grow after fstat: never read more than the cap allows.
        while chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(total, max_bytes)
        return b"".join(chunks)
    finally:
        os.close(fd)
