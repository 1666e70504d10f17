"""A compliance report (bridge.audit.evidence) as Markdown or as one self-contained HTML page.

Every value in a report comes from the mapping or the store, so from people: a model, asset or
key name, an operator's reason, a URL. Each one is escaped where it is written, in one function
per format (``_md``, ``_h``), never trusted as markup.

- **HTML**: one file with its style inline, no script, no external resource (an auditor opens
  it offline, a mail gateway passes it); a Content-Security-Policy forbids scripts and remote
  loads anyway, so even a value that escaped escaping could not run or call out.
- **Markdown**: GitHub-style tables. Values are escaped for table cells (``|``, line breaks)
  and for the HTML that Markdown renderers pass through (``<``, ``>``, ``&``); link syntax
  (``[`` ``]``) is escaped so that a name cannot become a link, and ``*`` (redacted URLs
  hold ``***``) so that it cannot turn text into emphasis.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from .evidence import Block, Facts, Family, Note, Report, Section, Table

__all__ = ["FORMATS", "render_html", "render_markdown", "renderer_for"]

_LEVEL_WORD = {"fail": "FAIL", "warn": "Warning", "info": "Note"}


def _sections_numbered(report: Report) -> list[tuple[str, Section]]:
    out: list[tuple[str, Section]] = []
    for i, section in enumerate(report.sections, 1):
        out.append((f"{i}", section))
        for j, sub in enumerate(section.subsections, 1):
            out.append((f"{i}.{j}", sub))
    return out


def _header_rows(report: Report) -> list[tuple[str, str]]:
    h = report.header
    return [
        ("Gateway", h.gateway_id),
        ("Mapping", h.mapping_file),
        ("Mapping revision", h.mapping_revision),
        ("Period", f"{h.since} to {h.until} ({h.days:.1f} days)"),
        ("Generated at (UTC)", h.generated_at),
        ("Bridge version", h.bridge_version),
        ("Store", h.store),
    ]


def _more_text(table: Table) -> str:
    hint = f" (list them with: {table.more_hint})" if table.more_hint else ""
    return f"... and {table.more} more not listed here{hint}."


def _controls_text(family: Family) -> list[str]:
    return [c.label for c in family.controls]


# -- Markdown --------------------------------------------------------------------------------------

_MD_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "|": "\\|",
        "[": "\\[",
        "]": "\\]",
        "`": "\\`",
        "*": "\\*",
        "<": "&lt;",
        ">": "&gt;",
        "&": "&amp;",
    }
)


def _md(text: str) -> str:
    """One value, safe in a table cell or a paragraph: one line, no markup of its own."""
    return " ".join(text.split()).translate(_MD_ESCAPES)


def _md_table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(_md(c) for c in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines


def _md_block(block: Block) -> list[str]:
    if isinstance(block, Note):
        if block.level == "info":
            return [_md(block.text), ""]
        return [f"> **{_LEVEL_WORD[block.level]}:** {_md(block.text)}", ""]
    if isinstance(block, Facts):
        lines = [f"**{_md(block.caption)}**", ""] if block.caption else []
        return [*lines, *_md_table(("Item", "Evidence"), list(block.rows)), ""]
    lines = [f"**{_md(block.caption)}**", ""]
    if not block.rows:
        return [*lines, f"*{_md(block.empty)}*", ""]
    lines += _md_table(block.columns, list(block.rows))
    if block.more:
        lines += ["", f"*{_md(_more_text(block))}*"]
    return [*lines, ""]


def render_markdown(report: Report) -> str:
    h = report.header
    out = [f"# Compliance evidence report: gateway {_md(h.gateway_id)}", ""]
    out += [*_md_table(("Report", ""), _header_rows(report)), ""]
    out += ["## Findings", ""]
    if report.findings:
        out += [f"- **{_LEVEL_WORD[f.level]}:** {_md(f.text)}" for f in report.findings]
    else:
        out.append("None.")
    out += ["", "## Controls covered", ""]
    numbered = _sections_numbered(report)
    out += _md_table(
        ("Section", "Gives evidence for"),
        [
            (f"{n} {s.family.title}", "; ".join(_controls_text(s.family)))
            for n, s in numbered
            if s.family.controls
        ],
    )
    out.append("")
    for number, section in numbered:
        depth = "##" if "." not in number else "###"
        out += [f"{depth} {number}. {_md(section.family.title)}", ""]
        if section.family.controls:
            out += ["Evidence for:", ""]
            out += [f"- {_md(label)}" for label in _controls_text(section.family)]
            out.append("")
        for block in section.blocks:
            out += _md_block(block)
    return "\n".join(out).rstrip("\n") + "\n"


# -- HTML ------------------------------------------------------------------------------------------


def _h(text: str) -> str:
    return html.escape(text, quote=True)


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a;
       margin: 2em auto; max-width: 1200px; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #bbb; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0 1.2em; width: 100%; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
td { overflow-wrap: anywhere; }
th { background: #f0f0f0; }
caption { text-align: left; font-weight: bold; padding: .3em 0; }
table.facts th { width: 25%; }
.controls { color: #333; margin: .3em 0 1em; }
.controls li { margin: 0; }
.note { padding: .5em .8em; margin: .5em 0 1em; border-left: 4px solid #888; background: #f7f7f7; }
.fail { border-color: #b00020; background: #fdecee; }
.warn { border-color: #b26a00; background: #fff4e0; }
.empty, .more { font-style: italic; color: #555; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; } }
"""

# Belt and braces: nothing in the page may run or load, whatever a value holds.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _h_table(
    columns: tuple[str, ...], rows: list[tuple[str, ...]], caption: str = "", cls: str = ""
) -> list[str]:
    attr = f' class="{cls}"' if cls else ""
    lines = [f"<table{attr}>"]
    if caption:
        lines.append(f"<caption>{_h(caption)}</caption>")
    if columns:
        lines.append(
            "<thead><tr>" + "".join(f"<th>{_h(c)}</th>" for c in columns) + "</tr></thead>"
        )
    lines.append("<tbody>")
    lines += ["<tr>" + "".join(f"<td>{_h(cell)}</td>" for cell in row) + "</tr>" for row in rows]
    lines.append("</tbody></table>")
    return lines


def _h_facts(rows: tuple[tuple[str, str], ...], caption: str = "") -> list[str]:
    lines = ['<table class="facts">']
    if caption:
        lines.append(f"<caption>{_h(caption)}</caption>")
    lines += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in rows]
    lines.append("</table>")
    return lines


def _h_block(block: Block) -> list[str]:
    if isinstance(block, Note):
        word = "" if block.level == "info" else f"<strong>{_LEVEL_WORD[block.level]}:</strong> "
        return [f'<p class="note {block.level}">{word}{_h(block.text)}</p>']
    if isinstance(block, Facts):
        return _h_facts(block.rows, block.caption)
    if not block.rows:
        return [
            f"<p><strong>{_h(block.caption)}</strong></p>",
            f'<p class="empty">{_h(block.empty)}</p>',
        ]
    lines = _h_table(block.columns, list(block.rows), block.caption)
    if block.more:
        lines.append(f'<p class="more">{_h(_more_text(block))}</p>')
    return lines


def render_html(report: Report) -> str:
    h = report.header
    title = f"Compliance evidence report: gateway {h.gateway_id}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(title)}</h1>",
        *_h_facts(tuple(_header_rows(report))),
        "<h2>Findings</h2>",
    ]
    if report.findings:
        out += [
            f'<p class="note {f.level}"><strong>{_LEVEL_WORD[f.level]}:</strong> {_h(f.text)}</p>'
            for f in report.findings
        ]
    else:
        out.append('<p class="empty">None.</p>')
    numbered = _sections_numbered(report)
    out.append("<h2>Controls covered</h2>")
    out += _h_table(
        ("Section", "Gives evidence for"),
        [
            (f"{n} {s.family.title}", "; ".join(_controls_text(s.family)))
            for n, s in numbered
            if s.family.controls
        ],
    )
    for number, section in numbered:
        tag = "h2" if "." not in number else "h3"
        out.append(
            f'<{tag} id="{_h(section.family.key)}">{_h(number)}. {_h(section.family.title)}</{tag}>'
        )
        if section.family.controls:
            out.append('<div class="controls">Evidence for:<ul>')
            out += [f"<li>{_h(label)}</li>" for label in _controls_text(section.family)]
            out.append("</ul></div>")
        for block in section.blocks:
            out += _h_block(block)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# -- the format of an output file ------------------------------------------------------------------

FORMATS: Final[dict[str, tuple[str, Callable[[Report], str]]]] = {
    ".md": ("markdown", render_markdown),
    ".markdown": ("markdown", render_markdown),
    ".html": ("html", render_html),
    ".htm": ("html", render_html),
}


def renderer_for(path: Path) -> tuple[str, Callable[[Report], str]]:
    """The format a file name asks for by its suffix; ValueError naming the ones there are."""
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        known = ", ".join(sorted(FORMATS))
        raise ValueError(
            f"{path.name}: the report's format comes from the file's suffix, one of {known} "
            f"(not {path.suffix or 'none'})"
        )
    return found
