#!/usr/bin/env python3
"""Build a real many-class collection for the benches from Debian's openclipart-png package.

    apt-get download openclipart-png && dpkg-deb -x openclipart-png_*.deb oc
    python bench/clipart_collection.py oc /tmp/clipart21 [--per-class 40]

21 second-level folders of the package become 21 classes (the folder's last name); up to --per-class
images each, picked evenly over the folder's sorted files, resized to at most 256 px a side and written as
RGB PNGs (alpha composited on white). Deterministic: the same package gives the same collection.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from PIL import Image

FOLDERS = (
    "computer/icons", "signs_and_symbols/map_symbols", "transportation/aiga-symbols", "shapes/arrows",
    "food/fruit", "recreation/music", "animals/mammals", "transportation/roadsigns", "signs_and_symbols/flags",
    "recreation/sports", "food/desserts", "computer/buttons", "recreation/party", "computer/hardware",
    "transportation/vehicles", "people/stickmen", "animals/bugs", "shapes/jigsaw", "animals/birds",
    "people/smilies", "food/beverages",
)
PNG_DIR = Path("usr/share/openclipart/png")


def build(root: Path, out: Path, per_class: int = 40, max_side: int = 256) -> int:
    """Write out/<class>/<n>.png; returns how many images were written."""
    base = root / PNG_DIR if (root / PNG_DIR).is_dir() else root
    written = 0
    for folder in FOLDERS:
        files = sorted(p for p in (base / folder).iterdir() if p.suffix == ".png" and p.is_file())
        step = max(1, len(files) / per_class)
        picks = [files[int(k * step)] for k in range(min(per_class, len(files)))]
        seen: set[str] = set()
        label = folder.split("/")[-1]
        (out / label).mkdir(parents=True, exist_ok=True)
        for p in picks:
            try:
                with Image.open(p) as im:
                    im.draft("RGB", (max_side, max_side))
                    im = im.convert("RGBA")
                    im.thumbnail((max_side, max_side))
                    flat = Image.new("RGB", im.size, (255, 255, 255))
                    flat.paste(im, mask=im.getchannel("A"))
            except (OSError, Image.DecompressionBombError):  # a few scans are 600 Mpx: skipped
                continue
            digest = hashlib.sha256(flat.tobytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            flat.save(out / label / f"{label}_{len(seen):03d}.png")
            written += 1
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="the extracted openclipart-png package")
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=40)
    args = ap.parse_args()
    print(f"{build(args.root, args.out, args.per_class)} images in {len(FOLDERS)} classes under {args.out}")


if __name__ == "__main__":
    main()
