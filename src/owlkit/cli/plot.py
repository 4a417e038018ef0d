"""Loss curves without a plotting library: a Unicode sparkline for the terminal and a small SVG file."""

from __future__ import annotations

from html import escape
from pathlib import Path

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """Values resampled to at most ``width`` bars, scaled between their min and max."""
    if not values:
        return ""
    step = max(1, -(-len(values) // width))  # ceil: buckets of `step` values, averaged
    points = [sum(values[i : i + step]) / len(values[i : i + step]) for i in range(0, len(values), step)]
    lo, hi = min(points), max(points)
    span = (hi - lo) or 1.0
    return "".join(BARS[min(len(BARS) - 1, int((v - lo) / span * len(BARS)))] for v in points)


def loss_svg(series: dict[str, list[tuple[int, float]]], title: str, path: Path) -> Path:
    """Write an SVG line chart of one or more (step, value) series (e.g. loss and eval loss)."""
    w, h, pad = 640, 320, 48
    pts = [p for s in series.values() for p in s]
    if not pts:
        raise ValueError("no points to plot")
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    sx = (w - 2 * pad) / ((x1 - x0) or 1)
    sy = (h - 2 * pad) / ((y1 - y0) or 1)
    colors = ["#1f77b4", "#d62728", "#2ca02c"]
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{pad}" y="20">{escape(title)}</text>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
        f'<text x="{pad}" y="{h - pad + 16}">{x0}</text><text x="{w - pad}" y="{h - pad + 16}" text-anchor="end">{x1}</text>',
        f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">{y0:.3g}</text>'
        f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{y1:.3g}</text>',
    ]
    for i, (label, s) in enumerate(series.items()):
        color = colors[i % len(colors)]
        coords = " ".join(f"{pad + (x - x0) * sx:.1f},{h - pad - (y - y0) * sy:.1f}" for x, y in s)
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>')
        lines.append(
            f'<text x="{w - pad}" y="{pad + 16 * i}" text-anchor="end" fill="{color}">{escape(label)}</text>'
        )
    lines.append("</svg>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
