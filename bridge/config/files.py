"""Every file a mapping names, checked before any connection opens: a missing or unreadable
one is an issue at its key (file:line) naming the path, not a FileNotFoundError of a run.

Connectors check their own files in depth (a key belongs to its certificate, ...); this is
the floor under all of them: every key that names a file, in the gateway's settings and in
each source's and output's block, must name a readable regular file. Keys are found by name
(``certificate``, ``private_key``, ``*_file``, ...), so a connector's new file setting is
covered without a change here. Paths are taken as the gateway opens them: ``gateway.models``
ones from the mapping's folder, all others from the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bridge.config.resolved import Mapping
from bridge.errors import ConfigIssue

__all__ = ["FILE_KEYS", "file_problems"]

FILE_KEYS = frozenset(
    {
        "certificate",
        "private_key",
        "client_ca",
        "client_certificate",
        "client_key",
        "server_certificate",
        "user_certificate",
        "user_private_key",
        "public_key",
    }
)

Loc = tuple[str | int, ...]


def file_problems(mapping: Mapping, skip: set[str] | None = None) -> list[ConfigIssue]:
    """Issues for missing or unreadable files; keys (dotted) in ``skip`` are left out (their
    connector reported them already, or their value waits for a variable)."""
    skip = skip or set()
    base = mapping.path.parent
    out: list[ConfigIssue] = []
    blocks: list[tuple[Loc, Any]] = [(("gateway",), mapping.gateway)]
    blocks += [(("sources", n), e.settings) for n, e in mapping.sources.items()]
    blocks += [(("outputs", n), e.settings) for n, e in mapping.outputs.items()]
    for prefix, settings in blocks:
        for loc, value in _file_values(settings, prefix):
            key = ".".join(str(p) for p in loc)
            if any(key == s or key.startswith(s + ".") for s in skip):
                continue
            relative_to_mapping = loc[:2] == ("gateway", "models")
            path = base / value if relative_to_mapping else Path(value)
            problem = _problem(path)
            if problem is None:
                continue
            where = "the mapping file" if relative_to_mapping else "the directory bridge runs in"
            out.append(
                ConfigIssue(
                    str(mapping.path),
                    mapping.index.line_of(loc),
                    key,
                    f"{problem}: {value}",
                    f"put the file there or correct the path (a relative path is relative to "
                    f"{where}); it must be readable by the user bridge runs as",
                )
            )
    return out


def _file_values(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            child = getattr(value, name)
            if isinstance(child, str) and child and (name in FILE_KEYS or name.endswith("_file")):
                yield (*loc, name), child
            else:
                yield from _file_values(child, (*loc, name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _file_values(item, (*loc, i))
    elif isinstance(value, dict):
        for k, item in value.items():
            if isinstance(item, BaseModel | list | tuple | dict):
                yield from _file_values(item, (*loc, str(k)))


def _problem(path: Path) -> str | None:
    try:
        if not path.exists():
            return "file not found"
        if not path.is_file():
            return "not a regular file"
    except OSError as exc:
        return f"cannot look at the file ({exc.strerror})"
    if not os.access(path, os.R_OK):
        return "file not readable (permission denied)"
    return None
