"""More server-drawn SVG charts (see ``charts.py``): lines for scores over time and horizontal bars
for shares (tiers, liability). Every chart has a title and a description for screen readers and a
``<title>`` per mark with its exact value; the page also gives the figures as a table."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from patron.web.charts import nice_ceiling
from patron.web.format import points


def _head(
    chart_id: str, width: int, height: int, title: str, description: str, css: str = "chart"
) -> list[str]:
    return [
        f'<svg class="{css}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
    ]


def line_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    low: float,
    high: float,
    title: str,
    description: str,
    chart_id: str,
    ticks: int = 4,
    width: int = 720,
    height: int = 260,
) -> Markup:
    """Lines over ``labels`` on a fixed scale ``low``..``high``; a ``None`` value breaks the line
    (a period without responses) and a lone point is drawn as a dot."""
    left, right, top, bottom = 48, 12, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(labels), 1)
    step = plot_w / n

    def x(i: int) -> float:
        return left + step * i + step / 2

    def y(v: float) -> float:
        v = min(max(v, low), high)
        return top + plot_h - plot_h * (v - low) / (high - low)

    out = _head(chart_id, width, height, title, description)
    for i in range(ticks + 1):
        value = low + (high - low) * i / ticks
        yy = y(value)
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{value:g}</text>')
    if low < 0 < high:
        out.append(f'<line class="axis" x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    for i, label in enumerate(labels):
        out.append(
            f'<text class="label" x="{x(i):.1f}" y="{height - bottom + 18}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    for name, css, values in series:
        runs: list[list[tuple[int, float]]] = [[]]
        for i, v in enumerate(values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append((i, v))
        for run in runs:
            if len(run) > 1:
                path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in run)
                out.append(f'<polyline class="line {escape(css)}" points="{path}"/>')
            for i, v in run:
                tip = f"{escape(labels[i])}: {escape(name)} {v:g}"
                out.append(
                    f'<circle class="dot {escape(css)}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="4">'
                    f"<title>{tip}</title></circle>"
                )
    lx = left
    for name, css, _ in series:
        out.append(f'<rect class="swatch {escape(css)}" x="{lx}" y="6" width="12" height="12"/>')
        out.append(f'<text class="legend" x="{lx + 16}" y="16">{escape(name)}</text>')
        lx += 16 + 8 * len(name) + 18
    out.append("</svg>")
    return Markup("".join(out))


def hbar_chart(
    items: Sequence[tuple[str, int]],
    *,
    title: str,
    description: str,
    chart_id: str,
    unit: str = "",
    css: str = "issued",
    width: int = 400,
    bar: int = 22,
) -> Markup:
    """One horizontal bar per ``(label, value)``, the value written at the bar's end. Labels sit
    above their bars so that long names never squeeze the plot on a phone."""
    left, right, top = 4, 110, 4
    row = bar + 26
    height = top + row * max(len(items), 1) + 4
    plot_w = width - left - right
    ceiling = nice_ceiling(max((v for _, v in items), default=0))
    out = _head(chart_id, width, height, title, description, "chart compact")
    for i, (label, value) in enumerate(items):
        y0 = top + i * row
        w = plot_w * max(value, 0) / ceiling
        text = f"{points(value)}{(' ' + unit) if unit else ''}"
        out.append(f'<text class="label" x="{left}" y="{y0 + 14}">{escape(label)}</text>')
        out.append(f'<rect class="track" x="{left}" y="{y0 + 20}" width="{plot_w}" height="{bar}" rx="3"/>')
        out.append(
            f'<rect class="bar {escape(css)}" x="{left}" y="{y0 + 20}" width="{w:.1f}" height="{bar}" rx="3">'
            f"<title>{escape(label)}: {escape(text)}</title></rect>"
        )
        out.append(
            f'<text class="value" x="{left + w + 6:.1f}" y="{y0 + 20 + bar / 2 + 5:.1f}">'
            f"{escape(text)}</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))


def split_bar(
    parts: Sequence[tuple[str, str, int]],
    *,
    title: str,
    description: str,
    chart_id: str,
    width: int = 400,
    height: int = 104,
) -> Markup:
    """One bar split into ``(name, css, value)`` parts (e.g. points expected to be redeemed and
    expected to expire), with a legend giving each part's value."""
    left, right = 8, 8
    plot_w = width - left - right
    total = sum(max(v, 0) for _, _, v in parts)
    out = _head(chart_id, width, height, title, description, "chart compact")
    x = float(left)
    for name, css, value in parts:
        w = plot_w * max(value, 0) / total if total else 0
        share = round(100 * value / total) if total else 0
        out.append(
            f'<rect class="bar {escape(css)}" x="{x:.1f}" y="8" width="{w:.1f}" height="32">'
            f"<title>{escape(name)}: {points(value)} ({share}%)</title></rect>"
        )
        x += w
    if not total:
        out.append(f'<rect class="track" x="{left}" y="8" width="{plot_w}" height="32"/>')
    for i, (name, css, value) in enumerate(parts):  # one legend line per part: no overlap when narrow
        label = f"{name}: {points(value)}"
        y = 52 + 22 * i
        out.append(f'<rect class="swatch {escape(css)}" x="{left}" y="{y}" width="12" height="12"/>')
        out.append(f'<text class="legend" x="{left + 18}" y="{y + 11}">{escape(label)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
