"""The report's structure: notes, facts, tables, sections, findings, header, period."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from bridge.audit.verify import Verification

from .controls import Family
from .formatting import utc

Level = Literal["fail", "warn", "info"]

# Longest table: an asset list of 20,000 or a year of model changes would bury the rest; what is
# left out is counted and the command to list it named.
MAX_ROWS: Final = 500


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    level: Level = "info"


@dataclass(frozen=True, slots=True)
class Facts:
    """Label and value pairs."""

    rows: tuple[tuple[str, str], ...]
    caption: str = ""


@dataclass(frozen=True, slots=True)
class Table:
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str = "None."
    more: int = 0  # rows left out beyond MAX_ROWS
    more_hint: str = ""  # where to see them


Block = Note | Facts | Table


@dataclass(frozen=True, slots=True)
class Section:
    family: Family
    blocks: tuple[Block, ...]
    subsections: tuple[Section, ...] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    level: Literal["fail", "warn"]
    text: str


@dataclass(frozen=True, slots=True)
class Header:
    gateway_id: str
    mapping_file: str
    mapping_revision: str
    since: str
    until: str
    days: float
    generated_at: str
    bridge_version: str
    store: str  # redacted


@dataclass(frozen=True, slots=True)
class Period:
    """Epoch seconds, both inclusive (as the stores' filters)."""

    since: float
    until: float

    def __post_init__(self) -> None:
        if self.since > self.until:
            raise ValueError(
                f"the period starts ({utc(self.since)}) after it ends ({utc(self.until)})"
            )


@dataclass(frozen=True, slots=True)
class Report:
    header: Header
    findings: tuple[Finding, ...]
    sections: tuple[Section, ...]
    chain: Verification

    @property
    def failed(self) -> bool:
        return any(f.level == "fail" for f in self.findings)


def _table(
    caption: str,
    columns: tuple[str, ...],
    rows: Iterable[tuple[str, ...]],
    empty: str = "None.",
    more: int = 0,
    more_hint: str = "",
) -> Table:
    listed = list(rows)
    return Table(
        caption,
        columns,
        tuple(listed[:MAX_ROWS]),
        empty,
        more + max(0, len(listed) - MAX_ROWS),
        more_hint,
    )
