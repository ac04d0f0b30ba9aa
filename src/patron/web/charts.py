"""Charts drawn on the server as inline SVG: readable without JavaScript, printable, scalable."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

from patron.web.format import points


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is at least ``value`` (and >= 1)."""
    if value <= 0:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return int(step * power)
    return 10 * power


def bar_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[int]]],
    *,
    title: str,
    description: str,
    chart_id: str = "chart",
    width: int = 720,
    height: int = 280,
) -> Markup:
    """Grouped vertical bars: one group per label, one bar per series ``(name, css_class, values)``.

    The SVG scales to its container (``viewBox``); it carries a title and description for screen
    readers, and each bar a ``<title>`` with its exact value (a tooltip on hover).
    """
    left, right, top, bottom = 56, 8, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = nice_ceiling(max((max(v, default=0) for _, _, v in series), default=0))
    groups = max(len(labels), 1)
    group_w = plot_w / groups
    bar_w = group_w * 0.8 / max(len(series), 1)
    out: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
    ]
    for i in range(5):
        value = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        tick = points(round(value))
        out.append(f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    for g, label in enumerate(labels):
        x0 = left + g * group_w + group_w * 0.1
        for s, (name, css, values) in enumerate(series):
            value = values[g] if g < len(values) else 0
            h = plot_h * max(value, 0) / top_value
            x = x0 + s * bar_w
            y = top + plot_h - h
            tip = f"{escape(label)}: {points(value)} {escape(name.lower())}"
            out.append(
                f'<rect class="bar {escape(css)}" x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.92:.1f}" '
                f'height="{h:.1f}"><title>{tip}</title></rect>'
            )
        out.append(
            f'<text class="label" x="{left + g * group_w + group_w / 2:.1f}" y="{height - bottom + 18}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    out.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>'
    )
    x = left
    for name, css, _ in series:  # legend, top left
        out.append(f'<rect class="swatch {escape(css)}" x="{x}" y="6" width="12" height="12"/>')
        out.append(f'<text class="legend" x="{x + 16}" y="16">{escape(name)}</text>')
        x += 16 + 9 * len(name) + 18
    out.append("</svg>")
    return Markup("".join(out))


def months_chart(months: list[dict[str, Any]], tz_note: str) -> Markup:
    """Points issued and redeemed per month (the dashboard's chart)."""
    labels = [
        m["start"].strftime("%b") + (m["start"].strftime(" %y") if m["start"].month == 1 else "")
        for m in months
    ]
    first, last = months[0]["start"], months[-1]["start"]
    return bar_chart(
        labels,
        [
            ("Issued", "issued", [m["issued"] for m in months]),
            ("Redeemed", "redeemed", [m["redeemed"] for m in months]),
        ],
        title="Points issued and redeemed per month",
        description=(
            f"Bars for each month from {first:%B %Y} to {last:%B %Y} ({tz_note}); "
            "the table below the chart gives the exact figures."
        ),
        chart_id="months",
    )
