"""The audit file: JSON lines, one entry or checkpoint per line, what ``bridge audit export``
writes and the gateway's optional mirror appends to. An auditor verifies it on another machine
with ``bridge audit verify FILE`` (bridge installed, no store, no network).

Lines::

    {"format": "bridge-audit-v1", "exported_at": "...", "gateway": "...", ...}   (export only)
    {"entry": {"seq": 1, "at": "...", ..., "prev_hash": "...", "hash": "..."}}
    {"checkpoint": {"seq": 1, "hash": "...", "at": "...", "gateway": "...", ...}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bridge.errors import BridgeError
from bridge.store.auditchain import AuditCheckpoint, AuditEntry, canonical

__all__ = [
    "FORMAT",
    "AuditFile",
    "AuditFileError",
    "checkpoint_line",
    "entry_line",
    "read_audit_file",
    "write_audit_file",
]

FORMAT = "bridge-audit-v1"


class AuditFileError(BridgeError):
    """An audit file that cannot be read as one."""


@dataclass(slots=True)
class AuditFile:
    header: dict[str, Any]
    entries: list[AuditEntry] = field(default_factory=list)
    checkpoints: list[AuditCheckpoint] = field(default_factory=list)


def entry_line(entry: AuditEntry) -> str:
    return canonical({"entry": entry.to_json()}).decode("utf-8") + "\n"


def checkpoint_line(checkpoint: AuditCheckpoint) -> str:
    return canonical({"checkpoint": checkpoint.to_json()}).decode("utf-8") + "\n"


def write_audit_file(
    out: IO[str],
    header: dict[str, Any],
    entries: Iterable[AuditEntry],
    checkpoints: Iterable[AuditCheckpoint],
) -> int:
    """Write the header, every entry, then every checkpoint; returns the number of entries."""
    out.write(canonical({"format": FORMAT, **header}).decode("utf-8") + "\n")
    count = 0
    for entry in entries:
        out.write(entry_line(entry))
        count += 1
    for checkpoint in checkpoints:
        out.write(checkpoint_line(checkpoint))
    return count


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    if not line.endswith("\n"):
                        # The last line of a mirror the gateway is appending to right now:
                        # not written yet, not part of the file.
                        return
                    raise AuditFileError(f"{path}:{number}: not JSON ({exc.msg})") from exc
                if not isinstance(data, dict):
                    raise AuditFileError(f"{path}:{number}: not a JSON object")
                yield number, data
    except OSError as exc:
        raise AuditFileError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise AuditFileError(f"{path}: not UTF-8 text") from exc


def read_audit_file(path: Path) -> AuditFile:
    result = AuditFile(header={})
    for number, data in _lines(path):
        try:
            if "entry" in data:
                result.entries.append(AuditEntry.from_json(data["entry"]))
            elif "checkpoint" in data:
                result.checkpoints.append(AuditCheckpoint.from_json(data["checkpoint"]))
            elif data.get("format") == FORMAT:
                result.header = data
            else:
                raise AuditFileError(
                    f"{path}:{number}: neither an entry, a checkpoint nor a {FORMAT} header"
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditFileError(f"{path}:{number}: incomplete line ({exc})") from exc
    return result
