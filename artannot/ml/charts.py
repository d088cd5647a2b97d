"""Line charts as PNG pictures drawn with PIL, so the CLI and `training/` plot on a headless server (no Qt,
no matplotlib): one x tick per named point (layers), one or more series, NaN leaves a gap."""

from __future__ import annotations

import math
from collections.abc import Sequence

COLOURS = ("#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _nice_max(v: float) -> float:
    if not math.isfinite(v) or v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for step in (1, 2, 2.5, 5, 10):
        if v <= step * exp:
            return step * exp
    return 10 * exp


def line_chart(x_labels: Sequence[str], series: dict[str, Sequence[float | None]], *, title: str = "",
               y_label: str = "", y_range: tuple[float, float] | None = None, size: tuple[int, int] = (1200, 640)):
    """A PIL RGB picture: each series a line with dots over the named x positions, a legend, a y grid."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font, small = _font(16), _font(13)
    left, right, top, bottom = 80, 30, 60 if title else 30, 170
    values = [float(v) for s in series.values() for v in s if v is not None and math.isfinite(float(v))]
    lo, hi = y_range if y_range is not None else (0.0, _nice_max(max(values, default=1.0)))
    if hi <= lo:
        hi = lo + 1.0
    plot_w, plot_h = w - left - right, h - top - bottom
    n = max(len(x_labels), 1)

    def px(i: int) -> float:
        return left + (i + 0.5) * plot_w / n

    def py(v: float) -> float:
        return top + (hi - min(max(v, lo), hi)) / (hi - lo) * plot_h

    for k in range(6):  # grid and y ticks
        v = lo + (hi - lo) * k / 5
        y = py(v)
        d.line([(left, y), (w - right, y)], fill="#eceff1")
        d.text((left - 8, y), f"{v:.3g}", fill="#37474f", font=small, anchor="rm")
    d.rectangle([left, top, w - right, top + plot_h], outline="#90a4ae")
    for i, name in enumerate(x_labels):  # x ticks, written downwards at an angle
        x = px(i)
        d.line([(x, top + plot_h), (x, top + plot_h + 5)], fill="#90a4ae")
        label = Image.new("RGBA", (140, 20), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((138, 10), str(name)[:22], fill="#37474f", font=small, anchor="rm")
        label = label.rotate(40, expand=True)
        img.paste(label, (int(x - label.width + 6), int(top + plot_h + 6)), label)
    for j, (name, vals) in enumerate(series.items()):
        colour = COLOURS[j % len(COLOURS)]
        run: list[tuple[float, float]] = []
        for i, v in enumerate(vals):
            if v is None or not math.isfinite(float(v)):
                if len(run) > 1:
                    d.line(run, fill=colour, width=3)
                run = []
                continue
            run.append((px(i), py(float(v))))
            d.ellipse([px(i) - 5, py(float(v)) - 5, px(i) + 5, py(float(v)) + 5], fill=colour)
        if len(run) > 1:
            d.line(run, fill=colour, width=3)
        lx, ly = left + 360 * (j % 3), h - 52 + 22 * (j // 3)  # under the axis, clear of the lines
        d.rectangle([lx, ly + 3, lx + 14, ly + 17], fill=colour)
        d.text((lx + 20, ly), name[:46], fill="#263238", font=small)
    if title:
        d.text((left, 18), title, fill="#263238", font=font)
    if y_label:
        label = Image.new("RGBA", (plot_h, 22), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((plot_h // 2, 11), y_label, fill="#37474f", font=small, anchor="mm")
        label = label.rotate(90, expand=True)
        img.paste(label, (4, top), label)
    return img
