"""Generated images of simple shapes: a real, learnable collection made on the fly."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def paint_shape(draw: ImageDraw.ImageDraw, kind: str, cx: int, cy: int, r: int, colour) -> None:
    """A filled circle, square or triangle of radius r centred on (cx, cy)."""
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)


def draw_shape(kind: str, rng: random.Random, size: int = 160, background=(255, 255, 255)) -> Image.Image:
    """One shape of random size, place and colour on a plain background."""
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    colour = tuple(rng.randint(0, 200) for _ in range(3))
    paint_shape(d, kind, cx, cy, r, colour)
    return img


def make_shape_collection(root: Path, per_class: int = 12, seed: int = 0, kinds=SHAPES) -> Path:
    """root/<shape>/<shape>_<n>.png, deterministic for a seed."""
    rng = random.Random(seed)
    for kind in kinds:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            draw_shape(kind, rng).save(root / kind / f"{kind}_{n:03d}.png")
    return root
