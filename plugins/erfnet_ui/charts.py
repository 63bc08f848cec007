"""Line charts as inline SVG, drawn on the server: the Airflow host has no internet for a charting
library, and a static picture is all the history view needs."""

from __future__ import annotations

from markupsafe import Markup, escape

# Colour-blind-safe palette (Okabe-Ito); targets keep their colour across charts by sorted order.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 60, 170, 30, 110


def _nice_range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) * 0.05 or 1.0
        return (max(low - pad, 0.0) if low >= 0 else low - pad), high + pad
    pad = (high - low) * 0.08
    # a throughput or mIoU axis never needs to dip below zero
    return (max(low - pad, 0.0) if low >= 0 else low - pad), high + pad


def line_chart(
    title: str,
    x_labels: list[str],
    series: dict[str, list[float | None]],
    *,
    y_label: str = "",
    value_format: str = "{:.2f}",
) -> Markup:
    """One line per series over the ordinal x axis; None leaves a gap (a failed or missing cell)."""
    points = [v for values in series.values() for v in values if v is not None]
    svg_open = (
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    )
    if not points or not x_labels:
        return Markup(
            svg_open + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">{escape(title)}: no data</text></svg>'
        )
    y_min, y_max = _nice_range(points)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / len(x_labels))

    def y_of(v: float) -> float:
        return TOP + plot_h * (1 - (v - y_min) / (y_max - y_min))

    parts = [svg_open, f'<text class="chart-title" x="{LEFT}" y="18">{escape(title)}</text>']
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>')
    for k in range(5):
        v = y_min + (y_max - y_min) * k / 4
        y = y_of(v)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{escape(value_format.format(v))}</text>')
    for i, label in enumerate(x_labels):
        x = x_of(i)
        parts.append(
            f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" font-size="11" text-anchor="end" '
            f'transform="rotate(-30 {x:.1f} {TOP + plot_h + 14})">{escape(label)}</text>'
        )
    if y_label:
        parts.append(
            f'<text x="14" y="{TOP + plot_h / 2}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(y_label)}</text>'
        )
    for n, (name, values) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        segment: list[str] = []
        segments: list[list[str]] = []
        for i, v in enumerate(values):
            if v is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{x_of(i):.1f},{y_of(v):.1f}")
            parts.append(
                f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)} @ {escape(x_labels[i])}: {escape(value_format.format(v))}</title></circle>"
            )
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(seg)}"/>')
        ly = TOP + 14 * n + 6
        parts.append(f'<rect x="{WIDTH - RIGHT + 12}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 28}" y="{ly + 1}" font-size="12">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
