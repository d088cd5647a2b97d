#!/usr/bin/env python3
"""Build the bundled box demo artannot/resources/demo_boxes/ from Debian's openclipart-png package.

Musical instruments (public-domain clip art) are pasted by their alpha onto clip-art scenes and tiled
patterns; each pasted instrument's tight box, from its alpha after scaling, flipping, rotating and the
instruments pasted over it, clipped to the image, goes into a COCO file. Train and test scenes use
different source drawings of each instrument, so the test boxes measure more than memorised pixels.
Deterministic: a fixed seed, sorted inputs, one random generator per scene.

Run: python packaging/build_box_demo.py /tmp/oc [--out artannot/resources/demo_boxes]
(the source is the openclipart-png .deb or the root it was extracted to).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from build_demo import DOC_DIR, PACKAGE, PNG_DIR, from_package, prepare_out
from PIL import Image, ImageFilter, ImageOps

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "artannot" / "resources" / "demo_boxes"
SEED = 20240611
MUSIC = "recreation/music"
COCO_NAME = "boxes.coco.json"
IMAGES_DIR = "images"
JPEG_QUALITY = 85
N_TRAIN, N_TEST = 54, 18
NEGATIVE_FRACTION = 0.10  # scenes without any instrument
SIZES = ((400, 300), (384, 288), (360, 270), (320, 240), (400, 280), (300, 300))
OBJECTS_PER_SCENE = ((1, 0.35), (2, 0.45), (3, 0.20))
LONG_SIDE = (0.20, 0.50)  # instrument's long side as a fraction of the scene's long side
MAX_ANGLE = 12.0  # degrees either way; long thin instruments sometimes tilt further
MASK_ALPHA = 128  # a pixel belongs to the instrument's box where its alpha is at least this
MAX_SOURCE_SIDE = 640  # sources are shrunk to this first (speed; pasted sizes are far smaller)


@dataclass(frozen=True)
class Source:
    """One drawing of an instrument: a file under recreation/music/, optionally one part of it."""

    file: str
    part: tuple[float, float, float, float] | None = None  # (left, top, right, bottom) fractions to keep

    @property
    def entry(self) -> Path:
        return PNG_DIR / MUSIC / self.file

    def describe(self) -> str:
        where = self.entry.as_posix()
        return where if self.part is None else f"{where} (left half)" if self.part == LEFT else f"{where} {self.part}"


LEFT = (0.0, 0.0, 0.5, 1.0)

# class -> (train drawings, test drawings). Near-identical files (cello_mo_02 = cello_mo_01) are left out;
# colour and line-art versions of one drawing sit on opposite sides so the test sees a new rendering.
CLASSES: dict[str, tuple[tuple[Source, ...], tuple[Source, ...]]] = {
    "guitar": (
        (Source("guitar_ganson.png"), Source("guitar_jarno_vasamaa1.png"),
         Source("electric_guitar_andrea__01r.png"), Source("bass_guitar_a.j._ashton_.png")),
        (Source("guitar_jarno_vasamaa2.png"), Source("guitar_profile_philippe__01.png")),
    ),
    "violin": (  # violins and cellos
        (Source("violin_colour_ganson.png"), Source("cello_ganson.png"), Source("violin_mo_01.png", LEFT)),
        (Source("violin_ganson.png"), Source("cello_mo_01.png")),
    ),
    "drum": (
        (Source("drums_jarno_vasamaa_.png"), Source("africandrum_benji_park1.png"), Source("djambf_ganson.png"),
         Source("derbouk_jurgen_01.png")),
        (Source("africandrum_benji_park2.png"), Source("africandrum_benji_park_.png")),
    ),
    "brass": (  # trumpets, trombone, horn
        (Source("trumpet_b_flat_colour_ganso.png"), Source("trumpet_pocket__ganson.png"),
         Source("tenor_trombone_ganson.png"), Source("french_horn_ganson.png")),
        (Source("trumpet_b_flat__ganson.png"), Source("trumpet_pocket_colour_ganso.png"),
         Source("trumpet_herald__ganson.png")),
    ),
    "harp": (
        (Source("harp1_ganson.png"), Source("harp3_ganson.png"), Source("harp_mo_01.png")),
        (Source("harp2_ganson.png"),),
    ),
}

# Backgrounds, shared by both splits (they carry no boxes). Scenes cover the frame (zoomed, cropped,
# maybe mirrored); patterns are tiled at a random scale and faded into a colour gradient.
SCENES: tuple[str, ...] = (
    "recreation/park_nicu_buculei_01.png",
    "unsorted/landscape_near_the_river_01.png",
    "geography/ayers_rock_ganson.png",
    "recreation/holiday/sailing_sunset.png",
    "recreation/holiday/fireworks__ganson.png",
    "recreation/holiday/fireworks_ganson1.png",
    "buildings/factory_gabrielle_nowick_.png",
)
PATTERNS: tuple[str, ...] = (
    "unsorted/texturelegno.png",
    "special/patterns/pattern-parquet-2.png",
    "special/patterns/pattern-parquet-3.png",
    "special/patterns/pattern-circles-2.png",
    "special/patterns/pattern-dots-square-grid-05.png",
    "special/patterns/pattern-squares-and-octagons-1.png",
    "special/patterns/pattern-diamond-harlequin-1.png",
    "special/patterns/pattern-herringbone-1.png",
)
DARK_BACKGROUND = 70.0  # a scene of mean luma below this (fireworks at night) only takes bright drawings:
BRIGHT_DRAWING = 140.0  # mean luma of the drawing's solid pixels at least this


@dataclass
class Placed:
    """One pasted instrument: its class, drawing and its mask in scene coordinates."""

    label: str
    source: Source
    mask: np.ndarray  # bool, scene-sized
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, w, h of the visible mask


@dataclass
class Scene:
    """One output image before encoding."""

    name: str
    split: str
    image: Image.Image
    background: list[str] = field(default_factory=list)  # package paths
    objects: list[Placed] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "source", type=Path, help="openclipart-png .deb file, or the root it was extracted to"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})"
    )
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default: {SEED})")
    return parser.parse_args(argv)


def open_rgba(path: Path) -> Image.Image:
    """Decode a package PNG as RGBA (palette and grey images with their transparency)."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGBA")


def luma(im: Image.Image) -> float:
    """Mean luma of the (mostly) opaque pixels."""
    arr = np.asarray(im.convert("RGBA"), dtype=np.float32)
    solid = arr[..., 3] >= MASK_ALPHA
    if not solid.any():
        return 255.0
    rgb = arr[solid][:, :3]
    return float((rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean())


def load_instrument(root: Path, src: Source) -> Image.Image:
    """The drawing cropped to its inked pixels (and to its part), shrunk to MAX_SOURCE_SIDE."""
    path = root / src.entry
    if not path.is_file():
        raise SystemExit(f"{src.entry} is missing from the package")
    im = open_rgba(path)
    if src.part is not None:
        left, top, right, bottom = src.part
        im = im.crop((round(left * im.width), round(top * im.height),
                      round(right * im.width), round(bottom * im.height)))
    box = im.getchannel("A").point(lambda a: 255 if a > 0 else 0).getbbox()
    if box is None:
        raise SystemExit(f"{src.describe()} has no visible pixels")
    im = im.crop(box)
    if max(im.size) > MAX_SOURCE_SIDE:
        scale = MAX_SOURCE_SIDE / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.LANCZOS)
    return im


def gradient(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A soft two-colour linear gradient at a random angle, with a little low-frequency mottling."""
    w, h = size
    c0 = np.array([rng.randint(40, 255) for _ in range(3)], dtype=np.float32)
    c1 = np.array([rng.randint(40, 255) for _ in range(3)], dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx - w / 2) * math.cos(angle) + (yy - h / 2) * math.sin(angle)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    arr = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def mottle(im: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    """Add smooth colour noise: a coarse random field, upscaled bicubically."""
    w, h = im.size
    coarse = np.array([[[rng.gauss(0, strength) for _ in range(3)] for _ in range(8)] for _ in range(6)],
                      dtype=np.float32)
    field_ = np.stack([np.asarray(Image.fromarray(coarse[..., c], "F").resize((w, h), Image.Resampling.BICUBIC))
                       for c in range(3)], axis=-1)
    arr = np.asarray(im, dtype=np.float32) + field_
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def scene_background(root: Path, size: tuple[int, int], path: str, rng: random.Random) -> Image.Image:
    """A clip-art scene zoomed to cover the frame, cropped at random, maybe mirrored, on a gradient."""
    w, h = size
    art = open_rgba(root / PNG_DIR / path)
    scale = max(w / art.width, h / art.height) * rng.uniform(1.0, 1.35)
    art = art.resize((max(w, math.ceil(art.width * scale)), max(h, math.ceil(art.height * scale))),
                     Image.Resampling.LANCZOS)
    x, y = rng.randint(0, art.width - w), rng.randint(0, art.height - h)
    art = art.crop((x, y, x + w, y + h))
    if rng.random() < 0.5:
        art = ImageOps.mirror(art)
    base = gradient(size, rng).convert("RGBA")
    base.alpha_composite(art)
    tint = gradient(size, rng)
    return Image.blend(base.convert("RGB"), tint, rng.uniform(0.08, 0.22))


def pattern_background(root: Path, size: tuple[int, int], path: str, rng: random.Random) -> Image.Image:
    """A pattern tiled at a random scale, softened and faded into a colour gradient (a wallpaper)."""
    w, h = size
    tile = open_rgba(root / PNG_DIR / path)
    target = rng.uniform(180, 320) if max(tile.size) > 250 else rng.uniform(50, 130)  # tile's long side, px
    scale = target / max(tile.size)
    tile = tile.resize((max(8, round(tile.width * scale)), max(8, round(tile.height * scale))),
                       Image.Resampling.LANCZOS)
    tiled = Image.new("RGBA", size)
    ox, oy = rng.randint(0, tile.width - 1), rng.randint(0, tile.height - 1)
    for y in range(-oy, h, tile.height):
        for x in range(-ox, w, tile.width):
            tiled.alpha_composite(tile, (max(0, x), max(0, y)), (max(0, -x), max(0, -y)))
    tiled = tiled.filter(ImageFilter.GaussianBlur(0.6))
    base = gradient(size, rng).convert("RGBA")
    faded = Image.blend(base, Image.alpha_composite(base, tiled), rng.uniform(0.30, 0.60))
    return faded.convert("RGB")


def transform(im: Image.Image, long_side: float, rng: random.Random) -> Image.Image:
    """Scale the drawing so its long side is long_side px, maybe mirror it, rotate it a little."""
    scale = long_side / max(im.size)
    out = im.resize((max(2, round(im.width * scale)), max(2, round(im.height * scale))), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    thin = max(out.size) >= 2.5 * min(out.size)
    angle = rng.uniform(20, 40) * rng.choice((-1, 1)) if thin and rng.random() < 0.3 else rng.uniform(-MAX_ANGLE, MAX_ANGLE)
    return out.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)


def overlap_ok(mask: np.ndarray, placed: list[Placed]) -> bool:
    """A new mask may cover at most 12 % of an earlier instrument and overlap itself at most 12 %."""
    area = int(mask.sum())
    for p in placed:
        inter = int((mask & p.mask).sum())
        if inter > 0.12 * min(area, int(p.mask.sum())):
            return False
    return True


def place(scene: Image.Image, art: Image.Image, placed: list[Placed], rng: random.Random,
          at_border: bool) -> tuple[tuple[int, int], np.ndarray] | None:
    """A position for art (top-left, may be off-frame at a border) and its scene mask, or None if crowded."""
    w, h = scene.size
    alpha = np.asarray(art.getchannel("A")) >= MASK_ALPHA
    total = int(alpha.sum())
    if total == 0:
        return None
    aw, ah = art.size
    for _ in range(60):
        if at_border:
            x = rng.randint(-aw * 2 // 5, w - aw * 3 // 5)
            y = rng.randint(-ah * 2 // 5, h - ah * 3 // 5)
        else:
            if aw > w or ah > h:
                return None
            x, y = rng.randint(0, w - aw), rng.randint(0, h - ah)
        mask = np.zeros((h, w), dtype=bool)
        x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + aw), min(h, y + ah)
        if x1 <= x0 or y1 <= y0:
            continue
        mask[y0:y1, x0:x1] = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
        seen = int(mask.sum())
        if seen < 0.6 * total:  # at a border, most of the instrument still shows
            continue
        if overlap_ok(mask, placed):
            return (x, y), mask
    return None


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """x, y, w, h (pixels, inclusive of the edge pixels) of a boolean mask, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def balanced(labels: list[str], n: int, rng: random.Random) -> list[str]:
    """n class names, each as often as the others (give or take one), in random order."""
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


def make_scenes(root: Path, seed: int) -> list[Scene]:
    """Every scene: split, background, instruments and their boxes."""
    labels = list(CLASSES)
    plan_rng = random.Random(seed)
    art = {src: load_instrument(root, src) for train, test in CLASSES.values() for src in (*train, *test)}
    dark_art = {src for src, im in art.items() if luma(im) < BRIGHT_DRAWING}
    backgrounds = [("scene", p) for p in SCENES] + [("pattern", p) for p in PATTERNS]
    dark_bg: set[str] = set()
    for kind, p in backgrounds:
        if not (root / PNG_DIR / p).is_file():
            raise SystemExit(f"background {p} is missing from the package")
        probe = open_rgba(root / PNG_DIR / p)
        if kind == "scene" and luma(probe) < DARK_BACKGROUND:
            dark_bg.add(p)

    splits = ["train"] * N_TRAIN + ["test"] * N_TEST
    plan_rng.shuffle(splits)
    # Per split: which scenes stay empty, how many instruments each of the others gets, which class each is.
    plan: dict[int, list[str]] = {}
    for split in ("train", "test"):
        idx = [i for i, s in enumerate(splits) if s == split]
        negatives = set(plan_rng.sample(idx, max(1, round(NEGATIVE_FRACTION * len(idx)))))
        counts = {i: 0 if i in negatives else plan_rng.choices([k for k, _ in OBJECTS_PER_SCENE],
                                                                 [p for _, p in OBJECTS_PER_SCENE])[0]
                  for i in idx}
        seq = balanced(labels, sum(counts.values()), plan_rng)
        for i in idx:
            plan[i], seq = seq[:counts[i]], seq[counts[i]:]
    # Each class's drawings of a split are used in turn, from a shuffled start.
    turns = {}
    for label, (train, test) in CLASSES.items():
        for split, srcs in (("train", train), ("test", test)):
            order = list(srcs)
            plan_rng.shuffle(order)
            turns[label, split] = [order, 0]
    bg_order = backgrounds * (len(splits) // len(backgrounds) + 1)
    plan_rng.shuffle(bg_order)

    scenes: list[Scene] = []
    for i, split in enumerate(splits):
        rng = random.Random(seed * 1000 + i)
        size = rng.choice(SIZES)
        chosen: list[tuple[str, Source]] = []
        for label in plan[i]:
            order, k = turns[label, split]
            chosen.append((label, order[k % len(order)]))
            turns[label, split][1] = k + 1
        kind, bg_path = bg_order[i]
        if bg_path in dark_bg and any(src in dark_art for _, src in chosen):
            kind, bg_path = next(b for b in bg_order[i + 1:] + bg_order if b[1] not in dark_bg)
        maker = scene_background if kind == "scene" else pattern_background
        image = mottle(maker(root, size, bg_path, rng), rng, rng.uniform(4, 10))
        scene = Scene(f"scene_{i + 1:03d}.jpg", split, image, [(PNG_DIR / bg_path).as_posix()])
        canvas = image.convert("RGBA")
        n = len(chosen)
        hi = LONG_SIDE[1] if n == 1 else 0.42 if n == 2 else 0.36
        for label, src in chosen:
            at_border = rng.random() < 0.25
            spot = None
            long_side = rng.uniform(LONG_SIDE[0], hi) * max(size)
            for _ in range(4):  # crowded: try smaller, but never under the minimum size
                drawn = transform(art[src], long_side, rng)
                spot = place(canvas, drawn, scene.objects, rng, at_border)
                if spot is not None:
                    break
                long_side = max(LONG_SIDE[0] * max(size), long_side * 0.85)
            if spot is None:
                print(f"  {scene.name}: no room for a {label}; left out", file=sys.stderr)
                continue
            (x, y), mask = spot
            layer = Image.new("RGBA", canvas.size)
            layer.paste(drawn, (x, y))
            canvas.alpha_composite(layer)
            for p in scene.objects:  # what the new instrument hides is no longer part of the old ones
                p.mask &= ~mask
            scene.objects.append(Placed(label, src, mask))
        scene.objects = [p for p in scene.objects if p.mask.any()]
        for p in scene.objects:
            box = tight_box(p.mask)
            assert box is not None
            p.bbox = box
        scene.image = canvas.convert("RGB")
        scenes.append(scene)
    return scenes


def encode_jpeg(im: Image.Image) -> bytes:
    """Baseline JPEG, quality JPEG_QUALITY, no metadata."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def write_license(out: Path, root: Path, version: str, scenes: list[Scene], seed: int) -> None:
    """LICENSE.md: source, public-domain note, what was made, the classes, rebuild steps, the copyright file."""
    copyright_file = root / DOC_DIR / "copyright"
    copyright_text = (
        "\n".join(line.rstrip() for line in
                  copyright_file.read_text(encoding="utf-8", errors="replace").splitlines())
        if copyright_file.is_file() else "(copyright file not found in the package)"
    )
    lines = []
    for label, (train, test) in CLASSES.items():
        counts = {s: sum(p.label == label for sc in scenes if sc.split == s for p in sc.objects)
                  for s in ("train", "test")}
        lines.append(f"- `{label}`: {counts['train']} train boxes from "
                     + ", ".join(f"`{s.file}`" for s in train)
                     + f"; {counts['test']} test boxes from " + ", ".join(f"`{s.file}`" for s in test))
    n_train = sum(s.split == "train" for s in scenes)
    n_empty = sum(not s.objects for s in scenes)
    backgrounds = "\n".join(f"- `{PNG_DIR / p}`" for p in (*SCENES, *PATTERNS))
    text = f"""# Box demo collection: licence and provenance

Every picture in this folder is made from images of the Debian package **{PACKAGE}**, version
**{version}** (Open Clip Art Library 0.18, <http://www.openclipart.org>). Open Clip Art Library images
are released into the **public domain** by their authors (Creative Commons Public Domain Dedication,
quoted below), so they, and these pictures made from them, may be copied, modified and redistributed
for any purpose.

`{IMAGES_DIR}/` holds {len(scenes)} JPEG scenes ({n_train} train, {len(scenes) - n_train} test, {n_empty} of
them without any instrument): a clip-art scene or tiled pattern as background, faded into a colour
gradient with smooth colour noise, and one to three musical instruments from `{PNG_DIR / MUSIC}/` pasted
by their alpha, scaled (long side {LONG_SIDE[0]:.0%} to {LONG_SIDE[1]:.0%} of the scene's), maybe
mirrored, rotated a little, some cut off at the border. `{COCO_NAME}` gives each instrument's tight box
(the pixels of alpha at least {MASK_ALPHA} after all transforms and after the instruments pasted over it,
clipped to the image) and each image's split (`"split"`). Train and test scenes use different drawings:

{chr(10).join(lines)}

Backgrounds (both splits):

{backgrounds}

`MANIFEST.csv` lists every picture with its split, the package files it was made from (background
first) and its sha256.

## Rebuilding

```sh
apt-get download openclipart-png && python packaging/build_box_demo.py openclipart-png_*.deb
```

The script deletes and recreates `artannot/resources/demo_boxes/` and is deterministic (seed {seed}) for a
given package version and Pillow version.

## The package's copyright file (`/{DOC_DIR}/copyright`)

```text
{copyright_text}
```
"""
    (out / "LICENSE.md").write_text(text, encoding="utf-8")


def build(root: Path, version: str, out: Path, seed: int) -> list[Scene]:
    """Write the images, the COCO file, MANIFEST.csv and LICENSE.md; return the scenes."""
    if not (root / PNG_DIR).is_dir():
        raise SystemExit(f"{root / PNG_DIR} not found: is {root} an extracted {PACKAGE} package?")
    scenes = make_scenes(root, seed)
    prepare_out(out)
    (out / IMAGES_DIR).mkdir()
    categories = [{"id": k + 1, "name": label, "supercategory": "instrument"} for k, label in enumerate(CLASSES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations, rows = [], [], []
    for k, scene in enumerate(scenes, start=1):
        rel = f"{IMAGES_DIR}/{scene.name}"
        data = encode_jpeg(scene.image)
        (out / rel).write_bytes(data)
        images.append({"id": k, "file_name": rel, "width": scene.image.width, "height": scene.image.height,
                       "split": scene.split})
        for p in scene.objects:
            x, y, w, h = p.bbox
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": cat_id[p.label],
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        sources = [*scene.background, *(p.source.describe() for p in scene.objects)]
        rows.append((rel, scene.split, ";".join(sources), hashlib.sha256(data).hexdigest()))
    coco = {
        "info": {"description": f"ArtAnnot box demo: musical instruments pasted on clip-art scenes"
                                f" ({PACKAGE} {version}, public domain)", "version": "1"},
        "licenses": [{"id": 1, "name": "Public Domain (Open Clip Art Library)", "url": "http://www.openclipart.org"}],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    (out / COCO_NAME).write_text(json.dumps(coco, indent=1) + "\n", encoding="utf-8")
    with (out / "MANIFEST.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("path", "split", "sources", "sha256"))
        writer.writerows(rows)
    write_license(out, root, version, scenes, seed)
    return scenes


def report(scenes: list[Scene]) -> None:
    """Print image and box counts per split and class."""
    for split in ("train", "test"):
        mine = [s for s in scenes if s.split == split]
        per = {label: sum(p.label == label for s in mine for p in s.objects) for label in CLASSES}
        print(f"{split:5s} {len(mine):3d} images ({sum(not s.objects for s in mine)} empty), boxes: "
              + ", ".join(f"{k} {v}" for k, v in per.items()))


def main(argv: list[str] | None = None) -> int:
    """Entry point: extract the .deb if given one, then build the box demo folder."""
    args = parse_args(argv)
    version, scenes = from_package(args.source, lambda root, v: (v, build(root, v, args.out, args.seed)))
    report(scenes)
    print(f"wrote {len(scenes)} images and {sum(len(s.objects) for s in scenes)} boxes"
          f" ({PACKAGE} {version}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
