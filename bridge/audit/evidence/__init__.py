"""The facts of a compliance report: what a gateway's mapping and store hold as evidence, per
control family, and which ISO/IEC 27001:2022 Annex A controls and NIST AI RMF 1.0 subcategories
each family gives evidence for (``CONTROL_MAP`` in ``controls``, the one place that table lives).

Evidence only: the report states what is configured and what the store recorded, it does not
grade anything. The few *findings* at its top are facts an auditor must not miss (the audit
chain does not verify, a required mapping signature does not verify, interfaces without
encryption, an unsigned tail); a ``fail`` finding makes ``bridge compliance report`` exit 1.

Read-only, and never a secret: nothing is written to the store or beside the mapping (the
gateway's checkpoint key is looked at, never made), URLs are shown through
``bridge.redact.redact_url``, passwords and header values are never read out (only whether
there is one), and API keys are listed by id (the store holds only their hashes, which are
not read either).

The modules: ``gather`` reads the mapping and the store once and hands what it read to one
module per section (``inventory``, ``access``, ``cryptography``, ``monitoring``, ``changes``,
``airisk``); ``interfaces`` lists the links and their protection, ``controls`` holds the control
map, ``model`` the report's structure and ``formatting`` how values are written.

Rendering (Markdown, HTML) is ``bridge.audit.report_render``'s; everything here is plain text.
"""

from __future__ import annotations

from .controls import CONTROL_MAP, Control, Family, family
from .gather import gather
from .model import MAX_ROWS, Block, Facts, Finding, Header, Note, Period, Report, Section, Table

__all__ = [
    "CONTROL_MAP",
    "MAX_ROWS",
    "Block",
    "Control",
    "Facts",
    "Family",
    "Finding",
    "Header",
    "Note",
    "Period",
    "Report",
    "Section",
    "Table",
    "family",
    "gather",
]
