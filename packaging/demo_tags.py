"""Write artannot/resources/demo/tags.csv: multi-label tags for the bundled demo collection.

Two kinds of tag, both reproducible from what is bundled:
- the openclipart category path each picture came from (MANIFEST.csv `source_path`): its top-level group
  (people, animals, recreation, ...) and any sub-folders below the class folder (cards, valentines, ...);
- colour tags computed from the pixels (alpha on white): `monochrome` when under 10 % of the inked pixels
  are saturated, else each hue (red, orange, yellow, green, blue, purple) holding at least 25 % of them.

Colour tags cut across classes, so a tag model has to look at the picture, not the label. They are noisy
on purpose, like tags scraped from a web site: a curator corrects them in the Tags panel.
Run: python packaging/demo_tags.py [--demo artannot/resources/demo]
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from artannot.data.images import load_image

HUES = (("red", 0, 12), ("orange", 12, 28), ("yellow", 28, 50), ("green", 50, 120), ("blue", 120, 190),
        ("purple", 190, 235), ("red", 235, 256))  # PIL hue, 0..255
PREFIX = "usr/share/openclipart/png/"


def colour_tags(path: Path) -> list[str]:
    """monochrome, or the hues that fill at least a quarter of the saturated inked pixels."""
    im = load_image(path)
    im.thumbnail((128, 128))
    hsv = np.asarray(im.convert("HSV"), dtype=np.int32).reshape(-1, 3)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    ink = (v < 240) | (s > 25)
    if ink.mean() < 0.01:
        return []
    vivid = ink & (s > 64) & (v > 50)
    if vivid.sum() < 0.10 * ink.sum():
        return ["monochrome"]
    share: dict[str, float] = {}
    for name, lo, hi in HUES:
        share[name] = share.get(name, 0.0) + float(((h >= lo) & (h < hi) & vivid).sum()) / float(vivid.sum())
    return sorted(name for name, f in share.items() if f >= 0.25)


def category_tags(source_path: str, label: str) -> list[str]:
    """The top-level openclipart group, and the folders below the class folder."""
    parts = source_path.removeprefix(PREFIX).split("/")[:-1]
    tags = [parts[0]] if parts else []
    if label in parts:
        below = parts[parts.index(label) + 1:]
        tags += [f"{p} cards" if k and below[k - 1] == "cards" and p != "cardbacks" else p
                 for k, p in enumerate(below)]
    return tags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path(__file__).resolve().parents[1] / "artannot" / "resources" / "demo")
    args = parser.parse_args(argv)
    rows = []
    with open(args.demo / "MANIFEST.csv", newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            tags = category_tags(rec["source_path"], rec["label"]) + colour_tags(args.demo / rec["path"])
            rows.append([rec["path"], ";".join(dict.fromkeys(tags))])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "tags"])
    writer.writerows(sorted(rows))
    (args.demo / "tags.csv").write_text(buf.getvalue(), encoding="utf-8")
    counts: dict[str, int] = {}
    for _, tags in rows:
        for t in filter(None, tags.split(";")):
            counts[t] = counts.get(t, 0) + 1
    print(f"wrote {len(rows)} rows to {args.demo / 'tags.csv'}; " +
          ", ".join(f"{t} {n}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
