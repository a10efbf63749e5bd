"""Charts drawn on the server as SVG (no JavaScript, no chart library): a column chart over days
and a bar chart over names. Each is an image with a title and a description (``role="img"``,
``aria-labelledby``); the page shows the same figures in a table next to it.

Every text in the SVG is escaped (names come from alerts and people)."""

from __future__ import annotations

from markupsafe import Markup, escape


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step:
            return step
    magnitude = 10 ** (len(str(int(value))) - 1)
    return ((int(value) // magnitude) + 1) * magnitude


def columns(chart_id: str, title: str, points: list[tuple[str, float]], *, unit: str = "") -> Markup:
    """One column per point (e.g. alerts per day), labels under every few columns."""
    width, height, left, bottom, top = 640, 220, 40, 30, 24
    top_value = _nice_max(max((v for _, v in points), default=0))
    inner_w, inner_h = width - left - 10, height - bottom - top
    step = inner_w / max(1, len(points))
    every = max(1, len(points) // 8)
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-d">{escape(title)}: {len(points)} values, the highest '
        f"{escape(_num(max((v for _, v in points), default=0)))}{escape(unit)}. The table below has each value.</desc>",
        f'<text x="{left}" y="16" font-size="12" fill="#616061">{escape(_num(top_value))}{escape(unit)}</text>',
        f'<line x1="{left}" y1="{top + inner_h}" x2="{width - 10}" y2="{top + inner_h}" stroke="#999"/>',
    ]
    for i, (label, value) in enumerate(points):
        h = inner_h * (value / top_value)
        x = left + i * step
        parts.append(
            f'<rect x="{x + step * 0.1:.1f}" y="{top + inner_h - h:.1f}" width="{step * 0.8:.1f}" '
            f'height="{h:.1f}" fill="#007a5a"><title>{escape(label)}: {escape(_num(value))}{escape(unit)}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{height - 10}" font-size="11" text-anchor="middle" '
                f'fill="#616061">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(chart_id: str, title: str, items: list[tuple[str, float]], *, unit: str = "", fmt=None) -> Markup:
    """One horizontal bar per name (e.g. MTTA per team), the value at its end."""
    fmt = fmt or _num
    row, left, width = 26, 170, 640
    height = max(1, len(items)) * row + 10
    top_value = max((v for _, v in items), default=0) or 1
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-t" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-t">{escape(title)} (the table below has each value)</title>',
    ]
    for i, (label, value) in enumerate(items):
        y = 5 + i * row
        w = (width - left - 90) * (value / top_value)
        shown = label if len(label) <= 24 else label[:23] + "…"
        parts.append(
            f'<text x="{left - 8}" y="{y + 16}" font-size="12" text-anchor="end">{escape(shown)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" fill="#3f0e40"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 16}" font-size="12" fill="#616061">'
            f"{escape(fmt(value))}{escape(unit)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def duration(seconds: float | None) -> str:
    """ "45 s", "12 min", "3.5 h", "2.1 d"; "—" when there is nothing to measure."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
