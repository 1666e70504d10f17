"""Decision lineage export: for a prediction or a time range, what went in (inputs with values,
source times and qualities), what made it (mapping revision, model name, version and sha256),
what came out (value, explanation), where it went (what the store knows of each output) and
what operators did with it, as JSON documents (``document``) and as OpenLineage run events
(``runevents``, which loads openlineage-python: imported only where events are made), written
page by page (``export``). Nothing here sends anything: the caller writes a file or an answer.
"""

from __future__ import annotations

from .context import LineageContext, OutputRef, SourceRef
from .document import NOT_RECORDED, Decision, build_decision
from .export import FORMATS, ExportFormat, NotFound, Selection, decision_pages, write_export

__all__ = [
    "FORMATS",
    "NOT_RECORDED",
    "Decision",
    "ExportFormat",
    "LineageContext",
    "NotFound",
    "OutputRef",
    "Selection",
    "SourceRef",
    "build_decision",
    "decision_pages",
    "write_export",
]
