"""Every spool directory a mapping names (``outputs.<name>.spool_dir``), checked before any
connection opens, like the files (``bridge.config.files``): an issue at its key (file:line).

A spool is where a destination keeps what it took from the outbox until it is committed: it
must be a directory the gateway can write (or create), and no two destinations may share one.
A destination spools under ``<spool_dir>/<output name>``, so two outputs may name the same
``spool_dir``, but neither's may lie inside the other's, nor inside (or around) a local
directory an output writes its tables to (``uri``). Paths are relative to the working
directory, as the gateway opens them.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from bridge.config.resolved import Mapping
from bridge.errors import ConfigIssue

__all__ = ["SPOOL_KEY", "spool_problems"]

SPOOL_KEY = "spool_dir"


def _local(uri: str) -> Path | None:
    """The directory of a local ``uri`` (a path, or file://); None for an object store."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(parts.path)
    return Path(uri) if len(parts.scheme) <= 1 else None  # "C:\\lake": a drive, not a scheme


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _writable_problem(path: Path) -> str | None:
    try:
        if path.exists():
            if not path.is_dir():
                return "not a directory"
            if not os.access(path, os.W_OK | os.X_OK):
                return "directory not writable"
            return None
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
    except OSError as exc:
        return f"cannot look at the directory ({exc.strerror})"
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        return f"the directory does not exist and cannot be created ({ancestor} is not writable)"
    return None


def spool_problems(mapping: Mapping, skip: set[str] | None = None) -> list[ConfigIssue]:
    """Issues of the outputs' ``spool_dir``; dotted keys in ``skip`` are left out."""
    skip = skip or set()
    spools: list[tuple[str, Path]] = []  # (output, the output's spool root)
    tables: list[tuple[str, Path]] = []
    out: list[ConfigIssue] = []

    def issue(output: str, setting: str, message: str, fix: str) -> None:
        loc = ("outputs", output, setting)
        out.append(
            ConfigIssue(str(mapping.path), mapping.index.line_of(loc), ".".join(loc), message, fix)
        )

    for name, endpoint in mapping.outputs.items():
        value = getattr(endpoint.settings, SPOOL_KEY, None)
        key = f"outputs.{name}.{SPOOL_KEY}"
        if not isinstance(value, str) or any(key == s or key.startswith(s + ".") for s in skip):
            continue
        uri = getattr(endpoint.settings, "uri", None)
        local = _local(uri) if isinstance(uri, str) and uri else None
        if local is not None:
            tables.append((name, _absolute(local)))
        problem = _writable_problem(Path(value))
        if problem is not None:
            issue(
                name,
                SPOOL_KEY,
                f"{problem}: {value}",
                "create the directory, or name one the user bridge runs as can write (a "
                "relative path is relative to the directory bridge runs in); it must survive "
                "restarts",
            )
        spools.append((name, _absolute(Path(value)) / name))
    for i, (name, root) in enumerate(spools):
        for other, other_root in spools[:i]:
            if _inside(root, other_root) or _inside(other_root, root):
                issue(
                    name,
                    SPOOL_KEY,
                    f"the spool {root} overlaps the spool of outputs.{other} ({other_root})",
                    "give each output a spool_dir of its own, apart from the others",
                )
        for table_output, table in tables:
            if _inside(root, table) or _inside(table, root):
                issue(
                    name,
                    SPOOL_KEY,
                    f"the spool {root} overlaps the tables of outputs.{table_output} (uri {table})",
                    "keep spool_dir outside the lake's directory (and the lake outside it)",
                )
    return out
