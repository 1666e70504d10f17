"""Writing an export page by page: one prediction by id, or every prediction of a time range
read ``page_size`` at a time, each page written out before the next is read, so a range of
millions of predictions needs the memory of one page.

``json``: one JSON object: the header (gateway, selection, what the store does not record),
then ``decisions`` (a list of ``bridge.lineage.document.Decision``) and ``count`` last.
``openlineage``: one OpenLineage run event per line (JSON Lines), nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TextIO

from bridge.store.decisions import DecisionRepository, StoredDecision

from .context import LineageContext
from .document import NOT_RECORDED, build_decision

__all__ = ["FORMATS", "ExportFormat", "NotFound", "Selection", "decision_pages", "write_export"]

ExportFormat = Literal["json", "openlineage"]
FORMATS: tuple[ExportFormat, ...] = ("json", "openlineage")


@dataclass(frozen=True, slots=True)
class Selection:
    """One prediction (``prediction_id``) or a time range (``since`` .. ``until``, inclusive,
    epoch seconds; None: open)."""

    prediction_id: str | None = None
    since: float | None = None
    until: float | None = None

    def describe(self) -> dict[str, str | None]:
        if self.prediction_id is not None:
            return {"prediction_id": self.prediction_id}
        return {"since": _iso(self.since), "until": _iso(self.until)}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


class NotFound(LookupError):
    """The selected prediction is not in the store."""


def decision_pages(
    repo: DecisionRepository, selection: Selection, page_size: int
) -> Iterator[list[StoredDecision]]:
    """The selected decisions, a page at a time (raises ``NotFound`` for an unknown id)."""
    if selection.prediction_id is not None:
        found = repo.get(selection.prediction_id)
        if found is None:
            raise NotFound(f"no stored prediction {selection.prediction_id}")
        yield [found]
        return
    for page in repo.pages(selection.since, selection.until, page_size):
        yield page.items


def write_export(
    pages: Iterator[list[StoredDecision]],
    ctx: LineageContext,
    out: TextIO,
    fmt: ExportFormat,
    selection: Selection,
    on_page: Callable[[int], None] | None = None,
) -> int:
    """Write every decision of ``pages`` to ``out``; returns how many. ``on_page`` is told the
    size of each page once it is written (progress, and tests that watch the paging)."""
    if fmt == "openlineage":
        # openlineage-python is loaded only by an export that makes events.
        from .runevents import run_event, to_json_line

        count = 0
        for page in pages:
            for stored in page:
                out.write(to_json_line(run_event(build_decision(stored, ctx))) + "\n")
            count += len(page)
            if on_page is not None:
                on_page(len(page))
        return count
    header = {
        "format": "bridge.decision-lineage/1",
        "gateway": ctx.gateway_id,
        "namespace": ctx.namespace,
        "exported_at": datetime.now(UTC).isoformat(),
        "selection": selection.describe(),
        "mapping_revision_given": ctx.revision,
        "not_recorded": list(NOT_RECORDED),
    }
    # The object is written in pieces: its list of decisions is never whole in memory.
    out.write(json.dumps(header, indent=1)[:-2] + ',\n "decisions": [')
    count = 0
    for page in pages:
        for stored in page:
            out.write("\n  " if count == 0 else ",\n  ")
            out.write(build_decision(stored, ctx).model_dump_json())
            count += 1
        if on_page is not None:
            on_page(len(page))
    out.write(f'\n ],\n "count": {count}\n}}\n')
    return count
