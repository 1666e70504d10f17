"""Server-side SVG charts for the web console.

The console is served with a Content-Security-Policy that forbids inline scripts and inline
styles, so no JavaScript charting library can draw these, and the SVG itself may carry neither a
``style="..."`` attribute nor a ``<style>`` or ``<script>`` element. Each function returns
finished markup that uses only SVG presentation attributes (``fill``, ``stroke``, ``font-size``)
as neutral defaults plus CSS classes the console's stylesheet colours (a CSS rule beats a
presentation attribute): ``spark``, ``spark-line``; ``chart``, ``grid``, ``axis``, ``tick``,
``axis-title``, ``legend``, ``series-0`` … ``series-5``, ``empty``; ``bar-row``, ``bar-pos``,
``bar-neg``, ``zero-line``, ``bar-label``, ``bar-value``.

Every piece of text is escaped, and coordinates are rounded to 0.1 px to keep pages small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

from markupsafe import Markup, escape

__all__ = ["Series", "bar_chart", "line_chart", "sparkline", "sparkline_points"]

_SVG_NS = "http://www.w3.org/2000/svg"
# Multiples of these land on round clock times: the epoch is midnight UTC.
_TIME_STEPS = tuple(60 * m for m in (1, 2, 5, 10, 15, 20, 30)) + tuple(
    3600 * h for h in (1, 2, 3, 4, 6, 8, 12, 24, 48, 96, 168, 336, 672)
)
_DAY_S = 86400.0
_BAR_ROW_PX = 28.0


@dataclass(frozen=True)
class Series:
    """One line of a chart: (unix time in s, value) pairs; a None value is a gap in the line."""

    name: str
    points: Sequence[tuple[float, float | None]]


def _n(x: float) -> str:
    s = f"{x:.1f}"
    s = s[:-2] if s.endswith(".0") else s
    return "0" if s == "-0" else s


def _t(text: str) -> str:
    # str(): adding a plain str to a Markup would escape the str, i.e. our own tags.
    return str(escape(text))


def _finite(v: float | None) -> TypeGuard[float]:
    return v is not None and math.isfinite(v)


def _sig3(v: float, signed: bool = False) -> str:
    s = f"{v:+.3g}" if signed and v != 0 else f"{v:.3g}"
    # Plant values (1234.5 kPa) read better whole than as 1.23e+03.
    if "e+" in s:
        s = f"{v:+.0f}" if signed else f"{v:.0f}"
    return s


def _open(cls: str, width: float, height: float, label: str) -> str:
    w, h = _n(width), _n(height)
    return (
        f'<svg xmlns="{_SVG_NS}" class="{cls}" viewBox="0 0 {w} {h}" width="{w}" height="{h}"'
        f' role="img" aria-label="{_t(label)}" font-size="11" fill="currentColor">'
    )


def _message(cls: str, width: float, height: float, title: str, message: str) -> Markup:
    return Markup(
        f"{_open(cls, width, height, title)}<title>{_t(title)}</title>"
        f'<text class="empty" x="{_n(width / 2)}" y="{_n(height / 2)}" text-anchor="middle"'
        f' dy="0.35em">{_t(message)}</text></svg>'
    )


def sparkline_points(values: Sequence[float | None], width: float = 120, height: float = 24) -> str:
    """The ``points`` of a polyline over ``values``; gaps keep their place on the x axis."""
    known = [(i, v) for i, v in enumerate(values) if _finite(v)]
    if not known:
        return ""
    lo, hi = min(v for _, v in known), max(v for _, v in known)
    # Keeps the stroke of the extreme values inside the box instead of half clipped.
    pad = 1.0 if height > 4 else 0.0
    dx = width / (len(values) - 1) if len(values) > 1 else 0.0

    def y(v: float) -> float:
        return height / 2 if hi == lo else pad + (height - 2 * pad) * (hi - v) / (hi - lo)

    return " ".join(f"{_n(i * dx)},{_n(y(v))}" for i, v in known)


def sparkline(
    values: Sequence[float | None], width: float = 120, height: float = 24, label: str = ""
) -> Markup:
    """A small trend line; the polyline is there even without data, for the live page to fill."""
    known = [v for v in values if _finite(v)]
    prefix = f"{label} trend" if label else "trend"
    aria = f"{prefix}, last {_sig3(known[-1])}" if known else "no data"
    points = sparkline_points(values, width, height)
    # The values ride along: the live page appends each new score and redraws the line itself
    # (bridge/console/static/console.js), so the gateway never re-encodes the whole trend.
    kept = " ".join(f"{v:.4g}" for v in known)
    return Markup(
        f'{_open("spark", width, height, aria)}<polyline class="spark-line" fill="none"'
        f' stroke="currentColor" points="{points}" data-values="{kept}"/></svg>'
    )


def _time_ticks(t0: float, t1: float) -> list[float]:
    # Round clock times are worth a tick more or less than the 4 to 6 aimed at.
    for fewest, most in ((4, 6), (3, 7)):
        for step in _TIME_STEPS:
            first = math.ceil(t0 / step) * step
            count = int((t1 - first) // step) + 1 if first <= t1 else 0
            if fewest <= count <= most:
                return [first + k * step for k in range(count)]
    # No round step fits (a couple of minutes): five even ticks.
    return [t0 + (t1 - t0) * k / 4 for k in range(5)]


def _value_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """3 to 5 ticks inside [lo, hi] on a 1, 2 or 5 x 10^n step, with their labels."""
    fallback: list[tuple[float, str]] = []
    e0 = math.floor(math.log10(hi - lo)) - 1
    for e in range(e0, e0 + 3):
        for m in (1, 2, 5):
            step = m * 10.0**e
            k0, k1 = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
            ticks = [(k * step, f"{k * step:.{max(0, -e)}f}") for k in range(k0, k1 + 1)]
            if 3 <= len(ticks) <= 5:
                return ticks
            if 2 <= len(ticks) <= 6 and not fallback:
                fallback = ticks
    return fallback


def _downsample(
    points: Sequence[tuple[float, float | None]], t0: float, t1: float, buckets: int
) -> list[list[tuple[float, float]]]:
    """Runs of the points in [t0, t1], split at gaps, keeping each time bucket's min and max.

    A 100,000-point day thus costs at most two points per bucket yet still shows its spikes. A gap
    inside one bucket is narrower than a pixel, so it does not split the line.
    """
    runs: list[list[tuple[float, float]]] = []
    run: list[tuple[float, float]] = []
    low = high = (0.0, 0.0)
    bucket, gap = -1, False
    scale = buckets / (t1 - t0)
    for t, v in sorted((p for p in points if t0 <= p[0] <= t1), key=lambda p: p[0]):
        if not _finite(v):
            gap = True
            continue
        b = min(int((t - t0) * scale), buckets - 1)
        if b == bucket:
            low, high = min(low, (t, v), key=lambda p: p[1]), max(high, (t, v), key=lambda p: p[1])
        else:
            if bucket >= 0:
                run.extend(sorted({low, high}))
            if gap and run:
                runs.append(run)
                run = []
            low = high = (t, v)
            bucket = b
        gap = False
    if bucket >= 0:
        run.extend(sorted({low, high}))
    if run:
        runs.append(run)
    return runs


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    width: int = 640,
    height: int = 200,
    since: float | None = None,
    until: float | None = None,
) -> Markup:
    """Lines over time on a UTC time axis; None values break a line."""
    times = [t for s in series for t, v in s.points if math.isfinite(t) and _finite(v)]
    if not times:
        return _message("chart", width, height, title, "no data in this range")
    t0 = min(times) if since is None else since
    t1 = max(times) if until is None else until
    if t1 <= t0:
        t0, t1 = t0 - 60, t0 + 60
    legend = len(series) > 1
    left, right, top, bottom = 60.0, 40.0, 28.0 if legend else 12.0, 24.0
    # A floor keeps a tiny chart drawable rather than mirrored by negative sizes.
    pw, ph = max(width - left - right, 20.0), max(height - top - bottom, 20.0)
    # Two pixels per bucket, min and max per bucket: at most one point per pixel.
    all_runs = [_downsample(s.points, t0, t1, max(1, int(pw) // 2)) for s in series]
    values = [v for runs in all_runs for run in runs for _, v in run]
    if not values:
        return _message("chart", width, height, title, "no data in this range")
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad

    def sx(t: float) -> float:
        return left + pw * (t - t0) / (t1 - t0)

    def sy(v: float) -> float:
        return top + ph * (hi - v) / (hi - lo)

    out = [_open("chart", width, height, title), f"<title>{_t(title)}</title>"]
    out.append('<g class="axis axis-y" stroke="currentColor" stroke-opacity="0.15">')
    for v, text in _value_ticks(lo, hi):
        y = _n(sy(v))
        out.append(f'<line class="grid" x1="{_n(left)}" y1="{y}" x2="{_n(left + pw)}" y2="{y}"/>')
        out.append(
            f'<text class="tick tick-y" x="{_n(left - 6)}" y="{y}" dy="0.35em"'
            f' text-anchor="end" stroke="none">{_t(text)}</text>'
        )
    out.append("</g>")
    if unit:
        out.append(
            f'<text class="axis-title" transform="rotate(-90)" x="{_n(-(top + ph / 2))}" y="12"'
            f' text-anchor="middle">{_t(unit)}</text>'
        )
    ticks = _time_ticks(t0, t1)
    fmt = "%H:%M" if all(t % 60 == 0 for t in ticks) else "%H:%M:%S"
    fmt = "%m-%d %H:%M" if t1 - t0 > _DAY_S else fmt
    base = _n(top + ph)
    out.append(
        f'<g class="axis axis-x"><line x1="{_n(left)}" y1="{base}" x2="{_n(left + pw)}"'
        f' y2="{base}" stroke="currentColor" stroke-opacity="0.4"/>'
    )
    for t in ticks:
        label = datetime.fromtimestamp(t, UTC).strftime(fmt)
        out.append(
            f'<text class="tick tick-x" x="{_n(sx(t))}" y="{_n(height - 6)}"'
            f' text-anchor="middle">{_t(label)}</text>'
        )
    out.append("</g>")
    for i, runs in enumerate(all_runs):
        out.append(f'<g class="series series-{i % 6}" fill="none" stroke="currentColor">')
        for run in runs:
            if len(run) == 1:  # a lone reading between gaps: a polyline of one point is invisible
                out.append(
                    f'<circle cx="{_n(sx(run[0][0]))}" cy="{_n(sy(run[0][1]))}" r="1"'
                    ' stroke-width="2"/>'
                )
                continue
            pts = " ".join(f"{_n(sx(t))},{_n(sy(v))}" for t, v in run)
            out.append(f'<polyline stroke-width="1.5" points="{pts}"/>')
        out.append("</g>")
    if legend:
        out.append('<g class="legend">')
        x = left
        for i, s in enumerate(series):
            out.append(
                f'<g class="legend-item series-{i % 6}"><line x1="{_n(x)}" y1="10"'
                f' x2="{_n(x + 14)}" y2="10" stroke="currentColor" stroke-width="2"/>'
                f'<text x="{_n(x + 18)}" y="10"'
                f' dy="0.35em" stroke="none">{_t(s.name)}</text></g>'
            )
            x += 30 + 6.5 * len(s.name)
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))


def bar_chart(
    bars: Sequence[tuple[str, float]], *, title: str, unit: str = "", width: int = 480
) -> Markup:
    """Signed horizontal bars around a zero line, one row per bar in the given order.

    Made for explanations: each bar is one input's effect on the score. A non-finite value gets
    its row and the text "n/a" but no bar.
    """
    if not bars:
        return _message("bar-chart", width, 48, title, "no explanation")
    top = bottom = 8.0
    height = top + _BAR_ROW_PX * len(bars) + bottom
    longest = max(len(name) for name, _ in bars)
    label_w = min(width * 0.4, 12 + 6.5 * longest)
    chars = max(4, int((label_w - 12) / 6.5))
    value_w = 72.0 + 6.5 * len(unit)
    x0, pw = label_w, max(width - label_w - value_w, 10.0)
    finite = [v for _, v in bars if math.isfinite(v)]
    pos = max([0.0, *finite])
    neg = -min([0.0, *finite])
    total = pos + neg or 1.0
    zero = x0 + pw * neg / total
    suffix = f" {unit}" if unit else ""
    out = [_open("bar-chart", width, height, title), f"<title>{_t(title)}</title>"]
    for i, (name, v) in enumerate(bars):
        y = top + _BAR_ROW_PX * i
        mid = _n(y + _BAR_ROW_PX / 2)
        text = f"{_sig3(v, signed=True)}{suffix}" if math.isfinite(v) else "n/a"
        shown = name if len(name) <= chars else name[: chars - 1] + "…"
        out.append(f'<g class="bar-row"><title>{_t(f"{name}: {text}")}</title>')
        out.append(
            f'<text class="bar-label" x="{_n(label_w - 8)}" y="{mid}" dy="0.35em"'
            f' text-anchor="end">{_t(shown)}</text>'
        )
        if math.isfinite(v):
            length = pw * abs(v) / total
            cls = "bar-neg" if v < 0 else "bar-pos"
            x = zero - length if v < 0 else zero
            out.append(
                f'<rect class="{cls}" x="{_n(x)}" y="{_n(y + 5)}" width="{_n(length)}"'
                f' height="{_n(_BAR_ROW_PX - 10)}"/>'
            )
        out.append(
            f'<text class="bar-value" x="{_n(width - 4)}" y="{mid}" dy="0.35em"'
            f' text-anchor="end">{_t(text)}</text></g>'
        )
    out.append(
        f'<line class="zero-line" x1="{_n(zero)}" y1="{_n(top)}" x2="{_n(zero)}"'
        f' y2="{_n(height - bottom)}" stroke="currentColor"/>'
    )
    out.append("</svg>")
    return Markup("".join(out))
