"""The console's templates (Jinja2, autoescaped) and the filters they format values with."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from bridge.api.sessions import ConsoleSession

__all__ = ["page"]


def _age(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _since(ts: float | None) -> str:
    return "–" if ts is None else _age(time.time() - ts)


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


_env = Environment(
    loader=PackageLoader("bridge.console", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(age=_age, since=_since, when=_when, num=_num, pct=_pct)


def page(
    template: str,
    session: ConsoleSession | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A whole page; the CSRF token goes into a meta tag the page's script reads (it is not a
    secret from the page itself, only from other origins)."""
    html = _env.get_template(template).render(
        csrf=session.csrf if session is not None else "", **context
    )
    return HTMLResponse(html, status_code=status_code)
