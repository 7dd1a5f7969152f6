"""Line charts as inline SVG, generated in Python: the report must open offline, with no JS library.

One chart has a frame, "nice" ticks (1, 2, 2.5, 5 x 10^k) with labels and grid lines, one polyline
per series (optionally with point markers carrying hover titles), dashed vertical event markers and
a legend. Long series are thinned by keeping each bucket's min and max, so spikes survive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 70, 18, 30, 44
MAX_POINTS = 1500
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#17becf")
MARKER_COLOR = "#e6550d"


@dataclass
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    color: str = COLORS[0]
    markers: bool = False  # a circle (with a hover title) at every point


@dataclass
class Event:
    """A vertical dashed line at `x`, e.g. a backtrack."""

    x: float
    label: str
    kind: str = "event"


def short_number(value: float) -> str:
    """Compact tick labels: 12k, 1.5M, 0.0003, 2.5e-05."""
    magnitude = abs(value)
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold:
            return f"{value / threshold:.4g}{suffix}"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """Round tick values covering [low, high]: the first <= low, the last >= high."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        # A flat series: open a window around it so the line sits mid-chart.
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(1, target)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = magnitude * 10
    for multiple in (1, 2, 2.5, 5, 10):
        if (high - low) / (multiple * magnitude) <= target:
            step = multiple * magnitude
            break
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(first + len(ticks) * step)
    # Round away float noise such as 0.30000000000000004 so labels stay short.
    return [round(tick, 12) for tick in ticks]


def thin(
    points: Sequence[tuple[float, float]], limit: int = MAX_POINTS
) -> list[tuple[float, float]]:
    """At most about `limit` points: each bucket keeps its lowest and highest, in order."""
    if len(points) <= limit:
        return list(points)
    buckets = max(1, limit // 2)
    size = len(points) / buckets
    kept: list[tuple[float, float]] = []
    for index in range(buckets):
        bucket = points[int(index * size) : int((index + 1) * size)]
        if not bucket:
            continue
        low = min(bucket, key=lambda point: point[1])
        high = max(bucket, key=lambda point: point[1])
        kept.extend(sorted({low, high}, key=lambda point: point[0]))
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


def line_chart(
    plot_id: str,
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    events: Sequence[Event] = (),
    y_format: Callable[[float], str] = short_number,
    y_min: float | None = None,
) -> str:
    """An <svg data-plot="plot_id"> line chart; `y_min` pins the bottom (e.g. 0 for rates)."""
    drawn = [Series(s.label, thin(s.points), s.color, s.markers) for s in series if s.points]
    xs = [x for s in drawn for x, _ in s.points] + [event.x for event in events]
    ys = [y for s in drawn for _, y in s.points]
    x_ticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0), target=8)
    y_low = min(ys, default=0.0)
    if y_min is not None:
        y_low = min(y_low, y_min)
    y_ticks = nice_ticks(y_low, max(ys, default=1.0), target=5)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1.0) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y0) / ((y1 - y0) or 1.0) * plot_h

    parts = [
        f'<svg id="plot-{escape(plot_id)}" '
        f'data-plot="{escape(plot_id)}" class="plot" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="18" class="plot-title">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for tick in y_ticks:
        y = py(tick)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{escape(y_format(tick))}</text>"
        )
    for tick in x_ticks:
        x = px(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" class="grid"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" class="tick" text-anchor="middle">'
            f"{escape(short_number(tick))}</text>"
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" class="axis-label" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2:.1f}" class="axis-label" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{escape(y_label)}</text>'
    )
    for event in events:
        x = px(event.x)
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" class="event" '
            f'data-event="{escape(event.kind)}" stroke="{MARKER_COLOR}">'
            f"<title>{escape(event.label)}</title></line>"
        )
    if not drawn:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" class="empty" '
            'text-anchor="middle">not recorded</text>'
        )
    for item in drawn:
        coordinates = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in item.points)
        parts.append(
            f'<polyline data-series="{escape(item.label)}" points="{coordinates}" '
            f'fill="none" stroke="{item.color}" stroke-width="1.5" stroke-linejoin="round"/>'
        )
        if item.markers or len(item.points) == 1:
            for x, y in item.points:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{item.color}">'
                    f"<title>{escape(item.label)} at step {short_number(x)}: "
                    f"{escape(y_format(y))}</title></circle>"
                )
    legend = [(s.label, s.color) for s in drawn]
    if events:
        legend.append((events[0].kind, MARKER_COLOR))
    x = LEFT + plot_w
    for label, color in reversed(legend):
        width = 30 + 7.2 * len(label)  # 11px text: about 7px a character, caps wider
        x -= width
        parts.append(f'<rect x="{x:.1f}" y="9" width="12" height="4" fill="{color}"/>')
        parts.append(f'<text x="{x + 16:.1f}" y="15" class="legend">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """A one-line text chart for the Markdown report (each character the mean of its bucket)."""
    if not values:
        return ""
    if len(values) > width:
        size = len(values) / width
        values = [
            sum(bucket) / len(bucket)
            for index in range(width)
            if (bucket := values[int(index * size) : int((index + 1) * size)])
        ]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(
        SPARK_BLOCKS[min(len(SPARK_BLOCKS) - 1, int((v - low) / span * len(SPARK_BLOCKS)))]
        for v in values
    )
